"""OpenAI Embeddings as a bridged wire format: request facts, usage, the text embedded."""

from __future__ import annotations

from aibridge.providers.catalog import wire_api
from aibridge.providers.openai import OPENAI
from aibridge.providers.openai_embeddings import EMBEDDINGS


def test_bridged_on_post_embeddings_only():
    assert OPENAI.bridged("POST", "/embeddings") == (EMBEDDINGS, {})
    assert OPENAI.bridged("GET", "/embeddings") is None
    assert wire_api("embeddings") is EMBEDDINGS


def test_request_info_never_streams():
    info = EMBEDDINGS.request_info({"model": "text-embedding-3-small", "input": "x",
                                    "stream": True})
    assert (info.model, info.streaming, info.correlating_tool_call_id) == (
        "text-embedding-3-small", False, None)
    assert EMBEDDINGS.request_info({"input": "x"}).model == "unknown"
    assert EMBEDDINGS.request_info([1, 2]).model == "unknown"


def test_summary_counts_prompt_tokens_as_input():
    s = EMBEDDINGS.summarize({"object": "list", "data": [], "model": "text-embedding-3-small",
                              "usage": {"prompt_tokens": 8, "total_tokens": 8}})
    assert (s.model, s.input_tokens, s.output_tokens, s.extra_tokens, s.completed) == (
        "text-embedding-3-small", 8, 0, {}, True)
    odd = EMBEDDINGS.summarize({"usage": {"prompt_tokens": 8, "total_tokens": 11}})
    assert odd.extra_tokens == {"embedding_other": 3}
    assert EMBEDDINGS.summarize({"usage": {"prompt_tokens": "8"}}).input_tokens == 0
    error = EMBEDDINGS.summarize({"error": {"message": "no", "type": "invalid_request_error"}})
    assert error.error == "no" and not error.completed


def test_last_prompt_is_the_text_embedded():
    assert EMBEDDINGS.last_prompt({"input": "hello"}) == "hello"
    assert EMBEDDINGS.last_prompt({"input": ["a", "b", 3]}) == "a\nb"
    assert EMBEDDINGS.last_prompt({"input": [[1, 2, 3]]}) is None
    assert EMBEDDINGS.last_prompt({"input": ""}) is None
    assert EMBEDDINGS.last_prompt(None) is None


def test_no_stream_of_its_own():
    assert EMBEDDINGS.recognises(None, {"object": "chat.completion.chunk"}, "{}") == 0
    assert EMBEDDINGS.assembled_text([]) == {}
    assert EMBEDDINGS.accumulator().summary.input_tokens == 0
