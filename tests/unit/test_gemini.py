"""The Gemini provider API: routes, request facts, whole and streamed answers (SSE and the JSON
array, any chunking), prompts, credentials in the header or the URL, Google's error envelope and
RetryInfo, prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy.http import Headers

from aibridge.admission.credential import resolve_credential
from aibridge.config import BridgeConfig
from aibridge.errors.convert import convert_error
from aibridge.errors.envelope import ResponseError
from aibridge.errors.shapes import GOOGLE_ERRORS
from aibridge.keys.retry_delay import cooldown_after_429, retry_info_delay
from aibridge.pricing import PriceBook, Tokens
from aibridge.providers import BRIDGED, PASSTHROUGH, build_registry
from aibridge.providers.base import RequestInfo
from aibridge.providers.gemini import GEMINI, GENERATE_CONTENT, STREAM_GENERATE_CONTENT
from aibridge.providers.json_stream import GeminiStreamParser, JsonArrayParser
from aibridge.sse import SSEEvent
from aibridge.streaming.tap import StreamTap
from aibridge.summary import ToolCall
from aibridge.upstream.rewrite import without_query_param

HOST = "generativelanguage.googleapis.com"
KEY = "AIzaSy-central-gemini-0123456789abcd"


def registry(extra: dict | None = None, environ: dict | None = None):
    config = BridgeConfig.model_validate({"providers": {"gemini": extra or {}}})
    return build_registry(config, Path("/nonexistent"), environ=environ or {})


def gemini():
    provider = registry().for_host(HOST)
    assert provider is not None
    return provider


# -- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "api", "model"), [
    ("/v1beta/models/gemini-2.5-flash:generateContent", GENERATE_CONTENT, "gemini-2.5-flash"),
    ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", STREAM_GENERATE_CONTENT,
     "gemini-2.5-pro"),
    ("/v1/models/gemini-2.0-flash:streamGenerateContent", STREAM_GENERATE_CONTENT,
     "gemini-2.0-flash"),
    ("/v1beta/tunedModels/my-tuned-1:generateContent?key=x", GENERATE_CONTENT, "my-tuned-1"),
    # routed on the path's normal form
    ("/v1beta/models/./gemini-2.5-flash:generateContent", GENERATE_CONTENT, "gemini-2.5-flash"),
])
def test_generate_routes_are_bridged_with_the_model_from_the_path(target, api, model):
    match = gemini().match("POST", target)
    assert match.kind == BRIDGED and match.api is api
    assert match.params["model"] == model
    info = gemini().request_info(match.api, {"contents": []}, match.params)
    assert info == RequestInfo(model, api is STREAM_GENERATE_CONTENT, None)


@pytest.mark.parametrize(("method", "target"), [
    ("POST", "/v1beta/models/gemini-2.5-flash:countTokens"),
    ("GET", "/v1beta/models"),
    ("GET", "/v1beta/models/gemini-2.5-flash"),
    ("POST", "/v1beta/models/text-embedding-004:embedContent"),
    ("GET", "/v1beta/models/gemini-2.5-flash:generateContent"),  # only POST generates
    ("POST", "/v1beta/models/a/b:generateContent"),  # a model id is one segment
    ("POST", "/upload/v1beta/files"),
])
def test_everything_else_passes_through_with_the_key_swap(method, target):
    assert gemini().match(method, target).kind == PASSTHROUGH


def test_the_stream_route_streams_json_and_sse_the_other_only_sse():
    assert STREAM_GENERATE_CONTENT.streams("application/json; charset=UTF-8")
    assert STREAM_GENERATE_CONTENT.streams("text/event-stream")
    assert not GENERATE_CONTENT.streams("application/json")  # read whole, kept in the flow
    assert GENERATE_CONTENT.streams("text/event-stream")


def test_correlating_id_is_that_of_the_last_function_response():
    body = {"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"id": "c0", "name": "w", "args": {}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"id": "c1", "name": "w", "response": {"t": 20}}},
            {"functionResponse": {"id": "c2", "name": "w", "response": {"t": 21}}}]},
    ]}
    assert GENERATE_CONTENT.request_info(body, {"model": "m"}).correlating_tool_call_id == "c2"
    no_id = {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "w"}}]}]}
    assert GENERATE_CONTENT.correlating_tool_call_id(no_id) is None
    assert GENERATE_CONTENT.correlating_tool_call_id({"contents": "odd"}) is None


def test_last_prompt_is_the_last_user_text_not_a_tool_result():
    body = {"contents": [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "answer"}]},
        {"parts": [{"text": "context"}, {"text": "the prompt"}]},  # no role: user
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {}}}]},
    ]}
    assert GENERATE_CONTENT.last_prompt(body) == "the prompt"
    assert GENERATE_CONTENT.last_prompt({"contents": []}) is None
    assert GENERATE_CONTENT.last_prompt([]) is None


# -- answers -----------------------------------------------------------------------------------

USAGE = {"promptTokenCount": 120, "candidatesTokenCount": 30, "cachedContentTokenCount": 100,
         "thoughtsTokenCount": 12, "toolUsePromptTokenCount": 5, "totalTokenCount": 167}


def chunk(parts: list[dict], *, finish: str | None = None, usage: dict | None = None) -> dict:
    candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash-002",
                 "responseId": "resp-1"}
    if usage is not None:
        out["usageMetadata"] = usage
    return out


CHUNKS = [
    chunk([{"text": "thinking about it", "thought": True}],
          usage={"promptTokenCount": 120, "totalTokenCount": 120}),
    chunk([{"text": "Hello "}], usage={"promptTokenCount": 120, "candidatesTokenCount": 2}),
    chunk([{"text": "Zürich ☀️"}]),
    chunk([{"functionCall": {"name": "get_weather", "args": {"city": "Zürich"}},
            "thoughtSignature": "c2ln"}]),
    chunk([{"functionCall": {"id": "call-2", "name": "get_time", "args": {}}}],
          finish="STOP", usage=USAGE),
]


def expect_full(summary) -> None:
    assert summary.model == "gemini-2.5-flash-002"
    assert summary.response_id == "resp-1"
    assert summary.input_tokens == 125  # prompt (cache included) + tool-use prompt
    assert summary.cache_read_tokens == 100
    assert summary.output_tokens == 42  # candidates + thoughts
    assert summary.extra_tokens == {"output_reasoning": 12, "tool_use_prompt": 5}
    assert summary.text_chars == len("Hello Zürich ☀️")  # thoughts are not text
    assert summary.tool_calls == [ToolCall("", "get_weather", '{"city":"Zürich"}'),
                                  ToolCall("call-2", "get_time", "{}")]
    assert summary.stop_reason == "STOP" and summary.completed and summary.error is None


def test_a_whole_answer():
    body = chunk([{"text": "Hello Zürich ☀️"},
                  {"functionCall": {"name": "get_weather", "args": {"city": "Zürich"}}},
                  {"functionCall": {"id": "call-2", "name": "get_time", "args": {}}}],
                 finish="STOP", usage=USAGE)
    expect_full(GENERATE_CONTENT.summarize(json.loads(json.dumps(body))))


def test_tokens_follow_the_project_convention():
    body = chunk([{"text": "x"}], finish="STOP", usage=USAGE)
    summary = GENERATE_CONTENT.summarize(body)
    tokens = Tokens.from_summary(summary, input_includes_cache=GEMINI.input_includes_cache)
    assert (tokens.input, tokens.cache_read, tokens.output, tokens.reasoning) == (25, 100, 42, 12)


def sse(chunks: list[dict]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def json_array(chunks: list[dict]) -> bytes:
    # As Google sends it: pretty elements, ",\r\n" between them.
    return ("[" + "\n,\r\n".join(json.dumps(c, indent=2, ensure_ascii=False)
                                 for c in chunks) + "]").encode()


@pytest.mark.parametrize("framing", [sse, json_array])
@pytest.mark.parametrize("size", [1, 2, 5, 64, 10_000])
def test_streams_in_any_chunking_sum_up_alike(framing, size):
    data = framing(CHUNKS)
    tap = StreamTap(STREAM_GENERATE_CONTENT, None)
    for i in range(0, len(data), size):
        assert tap(data[i:i + size]) == data[i:i + size]  # passed on unchanged
    tap(b"")
    assert tap.parse_error is None and tap.bad_events == 0
    assert tap.summary.events == len(CHUNKS)
    expect_full(tap.summary)
    assert tap.first_token_at is not None


def test_the_plain_feed_path_agrees_with_the_tap():
    accumulator = STREAM_GENERATE_CONTENT.accumulator()
    for c in CHUNKS:
        accumulator.feed(SSEEvent(None, json.dumps(c)))
    expect_full(accumulator.summary)


def test_a_json_array_answer_read_whole_sums_up_alike():
    expect_full(STREAM_GENERATE_CONTENT.summarize(json.loads(json_array(CHUNKS))))


def test_a_blocked_prompt_and_a_mid_stream_error():
    blocked = {"promptFeedback": {"blockReason": "SAFETY"},
               "usageMetadata": {"promptTokenCount": 9}}
    summary = GENERATE_CONTENT.summarize(blocked)
    assert (summary.stop_reason, summary.completed, summary.input_tokens) == ("SAFETY", True, 9)
    tap = StreamTap(STREAM_GENERATE_CONTENT, None)
    tap(sse([CHUNKS[1], {"error": {"code": 503, "message": "The model is overloaded.",
                                   "status": "UNAVAILABLE"}}]))
    tap(b"")
    assert tap.summary.error == "The model is overloaded."
    assert tap.summary.error_type == "UNAVAILABLE" and not tap.summary.completed


def test_assembled_text_keeps_thinking_apart():
    events = [SSEEvent(None, json.dumps(c)) for c in CHUNKS]
    assert GENERATE_CONTENT.assembled_text(events) == {"thinking": "thinking about it",
                                                       "text": "Hello Zürich ☀️"}


def test_recognises_gemini_chunks():
    assert GENERATE_CONTENT.recognises(None, CHUNKS[1], json.dumps(CHUNKS[1])) == 2
    assert GENERATE_CONTENT.recognises(None, {"choices": []}, "{}") == 0


# -- the JSON array parser ---------------------------------------------------------------------


def test_json_array_parser_finds_elements_whatever_their_strings_hold():
    elements = [{"a": 'x"y]}\\', "b": [1, {"c": "}{"}]}, {"d": "\\\\\"["}, {"e": "\u2603"}]
    data = json_array(elements)
    for size in (1, 3, 17):
        parser = JsonArrayParser()
        out = []
        for i in range(0, len(data), size):
            out += parser.feed_raw(data[i:i + size])
        out += parser.flush_raw()
        assert [json.loads(d) for _, d, _ in out] == elements


def test_json_array_parser_drops_an_element_over_its_limit():
    parser = JsonArrayParser(max_element=40)
    out = parser.feed_raw(b'[{"a":"' + b"x" * 100 + b'"},{"b":1}]')
    assert [json.loads(d) for _, d, _ in out] == [{"b": 1}] and parser.overflowed


@pytest.mark.parametrize(("sent", "tail"), [
    (b"", None),  # nothing yet: the framing is unknown, the API's (SSE) tail applies
    (b"[", b'{"error":{"code":502}}]\n'),
    (b'[{"a":1}\n', b',{"error":{"code":502}}]\n'),
    (b'[{"a":', b""),  # cut inside an element: nothing makes it whole again
    (b"data: {}\n\n", None),
])
def test_error_tail_closes_the_array_where_it_was_cut(sent, tail):
    parser = GeminiStreamParser()
    parser.feed_raw(sent)
    assert parser.error_tail({"error": {"code": 502}}) == tail


def test_the_tap_ends_a_cut_stream_in_its_framing():
    body = {"error": {"code": 502, "message": "cut", "status": "UNAVAILABLE"}}
    tap = StreamTap(STREAM_GENERATE_CONTENT, None)
    tap(b'[{"candidates": []}\n')
    assert json.loads(b'[{"candidates": []}\n' + tap.error_tail(body)) == [
        {"candidates": []}, body]
    tap = StreamTap(STREAM_GENERATE_CONTENT, None)
    tap(b'[{"candidates": [')
    assert tap.error_tail(body) is None  # cut inside an element: it ends as it broke
    tap = StreamTap(STREAM_GENERATE_CONTENT, None)
    tap(sse(CHUNKS[:1]))
    assert tap.error_tail(body) == b"data: " + json.dumps(body, separators=(",", ":")).encode() \
        + b"\n\n"


# -- credentials -------------------------------------------------------------------------------


def test_central_keys_go_in_the_header_and_a_client_key_in_the_url_is_read():
    provider = registry({"credentials": "auto"}, {"AIBRIDGE_GEMINI_KEYS": KEY}).for_host(HOST)
    central = resolve_credential(provider, Headers(), None, query="alt=sse")
    assert (central.header, central.value) == ("x-goog-api-key", KEY)
    own = resolve_credential(provider, Headers(), None, query="alt=sse&key=AIza-own-key-987654")
    assert (own.header, own.value, str(own.info.kind)) == (
        "x-goog-api-key", "AIza-own-key-987654", "byok")
    header = resolve_credential(provider, Headers([(b"x-goog-api-key", b"AIza-header-key-12")]),
                                None, query="key=AIza-own-key-987654")
    assert header.value == "AIza-header-key-12"  # the header wins


def test_a_proxy_token_in_the_url_means_the_central_key():
    from aibridge.access.actors import token_digest

    provider = registry({"credentials": "auto"}, {"AIBRIDGE_GEMINI_KEYS": KEY}).for_host(HOST)
    cred = resolve_credential(provider, Headers(), token_digest("alice-token"),
                              query="key=alice-token")
    assert cred.value == KEY


@pytest.mark.parametrize(("target", "expected"), [
    ("/v1beta/models/m:generateContent?key=abc", "/v1beta/models/m:generateContent"),
    ("/x?alt=sse&key=abc&b=%2F+", "/x?alt=sse&b=%2F+"),
    ("/x?k%65y=abc&key=&alt=sse", "/x?alt=sse"),  # an escaped name is the same name
    ("/x?keys=1&mykey=2", "/x?keys=1&mykey=2"),
])
def test_the_key_parameter_is_removed_and_the_rest_kept_as_sent(target, expected):
    assert without_query_param(target, "key") == expected


def test_an_invalid_key_is_a_refused_key_for_the_pool():
    body = json.dumps({"error": {"code": 400, "message": "API key not valid.",
                                 "status": "INVALID_ARGUMENT", "details": [
                                     {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": "API_KEY_INVALID"}]}}).encode()
    assert GEMINI.key_status(400, body) == 401
    assert GEMINI.key_status(400, b'{"error": {"code": 400}}') == 400
    assert GEMINI.key_status(429, body) == 429


# -- errors and retry delays -------------------------------------------------------------------


def test_bridge_errors_use_googles_envelope_with_retry_info():
    error = ResponseError("all keys are rate-limited", "rate_limit_error", "rate_limit_exceeded",
                          status=429, retry_after=2.5)
    body = json.loads(error.to_response(GOOGLE_ERRORS).content)
    assert body == {"error": {
        "code": 429, "message": "all keys are rate-limited", "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
             "domain": "aibridge", "metadata": {"type": "rate_limit_error"}},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]}}
    unauthorized = ResponseError("no key", "authentication_error", None, status=401)
    assert json.loads(unauthorized.to_response(GOOGLE_ERRORS).content)["error"]["status"] == \
        "UNAUTHENTICATED"


def test_googles_errors_pass_and_an_html_page_becomes_the_envelope():
    google = json.dumps({"error": {"code": 429, "message": "quota", "status":
                                   "RESOURCE_EXHAUSTED"}}).encode()
    assert convert_error("gemini", GOOGLE_ERRORS, 429, {}, google) is None
    html = b"<html><title>502 Bad Gateway</title></html>"
    converted = json.loads(convert_error("gemini", GOOGLE_ERRORS, 502,
                                         {"content-type": "text/html"}, html))
    assert converted["error"]["code"] == 502 and converted["error"]["status"] == "UNAVAILABLE"
    assert "502 Bad Gateway" in converted["error"]["message"]


QUOTA = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}


def test_retry_info_sets_the_cooldown():
    body = json.dumps(QUOTA).encode()
    assert retry_info_delay(body) == 37.0
    assert retry_info_delay(b"[" + body + b"]") == 37.0  # as a JSON-array stream answers
    assert cooldown_after_429({}, 1_000.0, body=body) == 37.0
    assert cooldown_after_429({"retry-after": "5"}, 1_000.0, body=body) == 5.0  # a header wins
    assert cooldown_after_429({}, 1_000.0) == 60.0  # no hint at all: the default


@pytest.mark.parametrize("body", [b"", b"not json", b'{"error": {"details": "x"}}',
                                  b'{"error": {"details": [{"@type": "type.googleapis.com/'
                                  b'google.rpc.RetryInfo", "retryDelay": "soon"}]}}'])
def test_retry_info_garbage_is_no_hint(body):
    assert retry_info_delay(body) is None


def test_the_key_pool_rests_a_key_as_long_as_retry_info_says():
    provider = registry({"credentials": "centralized"},
                        {"AIBRIDGE_GEMINI_KEYS": f"{KEY},{KEY}-2"}).for_host(HOST)
    pool = provider.pool
    key = pool.select()
    pool.mark(key, 429, {}, now=1_000.0, body=json.dumps(QUOTA).encode())
    assert pool.select() is not key
    health = pool._health[key.index]
    assert 30 < health.cooling_until - pool._clock() <= 37


# -- prices ------------------------------------------------------------------------------------


def test_gemini_models_are_priced_by_host_and_by_type():
    book = PriceBook({}, [gemini()])
    rates = book.rates("gemini", "gemini", "gemini-2.5-flash")
    assert rates is not None and rates.source.startswith("genai-prices:google/")
    # A Gemini-compatible gateway on its own host still prices Google's models.
    proxy = registry({"hosts": ["gemini.corp.example"]}).for_host("gemini.corp.example")
    assert PriceBook({}, [proxy]).rates("gemini", "gemini", "gemini-2.5-flash") is not None
