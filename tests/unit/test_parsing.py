import json
import time

import pytest

from aibridge.providers.base import RequestInfo
from aibridge.providers.catalog import wire_api
from aibridge.providers.jsonfields import json_loads
from aibridge.providers.stream import StreamAccumulator
from aibridge.sse import RawEvent, SSEEvent
from aibridge.summary import ResponseSummary, ToolCall

# --- request_info ----------------------------------------------------------------------


def tool_result(tool_use_id: object) -> dict:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": "42"}


@pytest.mark.parametrize(
    ("route", "body", "expected"),
    [
        # messages: last message's content scanned backwards for a tool_result
        (
            "messages",
            {
                "model": "claude-sonnet-4-5",
                "stream": True,
                "messages": [
                    {"role": "user", "content": [tool_result("toolu_old")]},
                    {"role": "assistant", "content": "ok"},
                    {
                        "role": "user",
                        "content": [
                            tool_result("toolu_a"),
                            tool_result("toolu_b"),
                            {"type": "text", "text": "and go on"},
                        ],
                    },
                ],
            },
            RequestInfo("claude-sonnet-4-5", True, "toolu_b"),
        ),
        (
            "messages",
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": [tool_result("toolu_a"), tool_result("")]}
                ],
            },
            RequestInfo("m", False, "toolu_a"),
        ),
        (
            "messages",
            {"model": "m", "messages": [{"role": "user", "content": "plain string"}]},
            RequestInfo("m", False, None),
        ),
        (
            "messages",
            {"model": "m", "messages": [{"role": "user", "content": [tool_result(None)]}]},
            RequestInfo("m", False, None),
        ),
        ("messages", {"model": "m", "stream": "true"}, RequestInfo("m", False, None)),
        ("messages", {"model": "m", "stream": 1}, RequestInfo("m", False, None)),
        ("messages", {"model": "", "stream": False}, RequestInfo("unknown", False, None)),
        ("messages", {"model": 5, "messages": []}, RequestInfo("unknown", False, None)),
        ("messages", {"messages": "nope"}, RequestInfo("unknown", False, None)),
        ("messages", [], RequestInfo("unknown", False, None)),
        ("messages", None, RequestInfo("unknown", False, None)),
        # chat: only a trailing role:tool message correlates
        (
            "chat",
            {
                "model": "gpt-4o",
                "stream": True,
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"id": "call_1"}, {"id": "call_2"}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "a"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "b"},
                ],
            },
            RequestInfo("gpt-4o", True, "call_2"),
        ),
        (
            "chat",
            {
                "model": "gpt-4o",
                "messages": [
                    {"role": "tool", "tool_call_id": "call_1", "content": "a"},
                    {"role": "user", "content": "thanks"},
                ],
            },
            RequestInfo("gpt-4o", False, None),
        ),
        ("chat", {"model": "gpt-4o", "stream": "yes"}, RequestInfo("gpt-4o", False, None)),
        ("chat", {"model": "gpt-4o", "stream": 1}, RequestInfo("gpt-4o", False, None)),
        (
            "chat",
            {"model": "x", "messages": [{"role": "tool", "tool_call_id": ""}]},
            RequestInfo("x", False, None),
        ),
        # responses: a trailing function_call_output / custom_tool_call_output
        (
            "responses",
            {
                "model": "gpt-5-codex",
                "stream": True,
                "input": [
                    {"type": "message", "role": "user", "content": "run ls"},
                    {"type": "function_call", "call_id": "call_9", "name": "shell"},
                    {"type": "function_call_output", "call_id": "call_9", "output": "a b"},
                ],
            },
            RequestInfo("gpt-5-codex", True, "call_9"),
        ),
        (
            "responses",
            {"model": "m", "input": [{"type": "custom_tool_call_output", "call_id": "ct_1"}]},
            RequestInfo("m", False, "ct_1"),
        ),
        ("responses", {"model": "m", "input": "just text"}, RequestInfo("m", False, None)),
        (
            "responses",
            {"model": "m", "input": [{"type": "function_call", "call_id": "call_9"}]},
            RequestInfo("m", False, None),
        ),
        ("responses", {"model": "m", "stream": None}, RequestInfo("m", False, None)),
    ],
)
def test_request_info(route: str, body: object, expected: RequestInfo) -> None:
    assert wire_api(route).request_info(body) == expected


def test_unknown_route_has_no_wire_api() -> None:
    assert wire_api("completions") is None
    assert wire_api("bogus") is None


# --- summarize -----------------------------------------------------------------------


def test_messages_json() -> None:
    body = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me look."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Zürich"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 4000,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "output_tokens": 55,
            "server_tool_use": {"web_search_requests": 2},
            "service_tier": "standard",
        },
    }
    s = wire_api("messages").summarize(body)
    assert s == ResponseSummary(
        model="claude-sonnet-4-5-20250929",
        response_id="msg_01",
        input_tokens=12,
        output_tokens=55,
        cache_read_tokens=4000,
        cache_write_tokens=300,
        extra_tokens={
            "web_search_requests": 2,
            "cache_ephemeral_5m_input": 100,
            "cache_ephemeral_1h_input": 200,
        },
        tool_calls=[ToolCall("toolu_1", "get_weather", '{"city":"Zürich"}')],
        stop_reason="tool_use",
        completed=True,
        text_chars=len("Let me look."),
    )
    assert json.loads(json.dumps(s.to_dict()))["tool_calls"][0]["name"] == "get_weather"


def test_chat_json() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call_b",
                            "type": "custom",
                            "custom": {"name": "shell", "input": "ls"},
                        },
                    ],
                    "refusal": None,
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 10,
                "audio_tokens": 3,
                "accepted_prediction_tokens": 4,
                "rejected_prediction_tokens": 5,
            },
        },
    }
    s = wire_api("chat").summarize(body)
    assert (s.model, s.response_id, s.stop_reason, s.completed) == (
        "gpt-4o-2024-08-06",
        "chatcmpl-1",
        "tool_calls",
        True,
    )
    # prompt_tokens is kept as reported (it already includes the cached tokens).
    assert (s.input_tokens, s.output_tokens, s.cache_read_tokens, s.cache_write_tokens) == (
        100,
        40,
        64,
        0,
    )
    assert s.extra_tokens == {
        "completion_reasoning": 10,
        "completion_audio": 3,
        "completion_accepted_prediction": 4,
        "completion_rejected_prediction": 5,
    }
    assert s.tool_calls == [
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "shell", "ls"),
    ]
    assert s.text_chars == 0


def test_responses_json() -> None:
    body = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-4.1-2025-04-14",
        "error": None,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Oslo"}',
                "status": "completed",
            },
            {
                "type": "custom_tool_call",
                "id": "ctc_1",
                "call_id": "call_2",
                "name": "apply_patch",
                "input": "*** Begin Patch",
            },
        ],
        "usage": {
            "input_tokens": 300,
            "input_tokens_details": {"cached_tokens": 128},
            "output_tokens": 60,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 360,
        },
    }
    s = wire_api("responses").summarize(body)
    assert (s.model, s.response_id, s.stop_reason, s.completed, s.error) == (
        "gpt-4.1-2025-04-14",
        "resp_1",
        "completed",
        True,
        None,
    )
    assert (s.input_tokens, s.output_tokens, s.cache_read_tokens) == (300, 60, 128)
    assert s.extra_tokens == {"output_reasoning": 20}
    assert s.tool_calls == [
        ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),
        ToolCall("call_2", "apply_patch", "*** Begin Patch"),
    ]
    assert s.text_chars == 6


@pytest.mark.parametrize(
    ("route", "body", "error", "error_type"),
    [
        (
            "messages",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "Overloaded",
            "overloaded_error",
        ),
        (
            "chat",
            {"error": {"message": "boom", "type": "server_error", "code": None}},
            "boom",
            "server_error",
        ),
        (
            "responses",
            {"id": "resp_1", "status": "failed", "error": {"code": "server_error", "message": "x"}},
            "x",
            "server_error",
        ),
    ],
)
def test_json_error_bodies_are_not_completed(
    route: str, body: dict, error: str, error_type: str
) -> None:
    s = wire_api(route).summarize(body)
    assert (s.error, s.error_type, s.completed) == (error, error_type, False)


@pytest.mark.parametrize("route", ["messages", "chat", "responses"])
@pytest.mark.parametrize("body", [None, [], "x", {}, {"usage": [], "choices": {}, "content": 1}])
def test_json_odd_shapes_do_not_raise(route: str, body: object) -> None:
    s = wire_api(route).summarize(body)
    assert (s.input_tokens, s.tool_calls) == (0, [])


# --- StreamAccumulator ---------------------------------------------------------------


def ev(event: str | None, obj: object) -> SSEEvent:
    return SSEEvent(event, obj if isinstance(obj, str) else json.dumps(obj))


def anthropic(obj: dict) -> SSEEvent:
    return ev(obj["type"], obj)


def observed(acc: StreamAccumulator) -> tuple:
    return (acc.summary.to_dict(), acc.bad_events, acc.first_token_at is None)


def raw(events: list[SSEEvent]) -> list[RawEvent]:
    return [(e.event, e.data.encode("utf-8", "surrogatepass"), e.id) for e in events]


def feed(route: str, events: list[SSEEvent]) -> StreamAccumulator:
    """Feed one by one as SSEEvents, and check `feed_raw` (bytes, shortcuts) agrees."""
    acc = wire_api(route).accumulator()
    for e in events:
        acc.feed(e)
    fast = wire_api(route).accumulator()
    for e in raw(events):
        fast.feed_raw([e])
    assert observed(fast) == observed(acc)
    return acc


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-1",
        "content": [],
        "stop_reason": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 30,
            "output_tokens": 3,
        },
    },
}


def test_anthropic_output_tokens_are_cumulative_not_added() -> None:
    acc = feed(
        "messages",
        [
            anthropic(MESSAGE_START),
            anthropic({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 40}}),
            anthropic(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "max_tokens"},
                    "usage": {"output_tokens": 77},
                }
            ),
            anthropic({"type": "message_stop"}),
        ],
    )
    s = acc.summary
    assert (s.input_tokens, s.cache_write_tokens, s.cache_read_tokens) == (10, 20, 30)
    assert s.output_tokens == 77  # not 3 + 40 + 77, not 3 + 77
    assert (s.stop_reason, s.completed, s.events) == ("max_tokens", True, 4)


def test_anthropic_message_delta_input_fields_override_when_non_zero() -> None:
    delta_usage = {
        "input_tokens": 11,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 31,
        "output_tokens": 5,
        "server_tool_use": {"web_search_requests": 1},
    }
    acc = feed(
        "messages",
        [
            anthropic(MESSAGE_START),
            anthropic({"type": "message_delta", "delta": {}, "usage": delta_usage}),
        ],
    )
    s = acc.summary
    assert (s.input_tokens, s.cache_write_tokens, s.cache_read_tokens, s.output_tokens) == (
        11,
        20,
        31,
        5,
    )
    assert s.extra_tokens == {"web_search_requests": 1}


def test_anthropic_error_event_and_unparseable_error() -> None:
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    acc = feed("messages", [anthropic(MESSAGE_START), anthropic(err)])
    assert (acc.summary.error, acc.summary.error_type, acc.summary.completed) == (
        "Overloaded",
        "overloaded_error",
        False,
    )
    acc = feed("messages", [ev("error", "upstream went away")])
    assert (acc.summary.error, acc.bad_events) == ("upstream went away", 1)


def test_anthropic_tool_without_input_deltas_keeps_empty_object() -> None:
    acc = feed(
        "messages",
        [
            anthropic(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": "t1", "name": "now", "input": {}},
                }
            ),
            anthropic(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": ""},
                }
            ),
            anthropic({"type": "content_block_stop", "index": 0}),
        ],
    )
    assert acc.summary.tool_calls == [ToolCall("t1", "now", "{}")]


def test_partial_tool_arguments_visible_mid_stream() -> None:
    acc = wire_api("messages").accumulator()
    acc.feed(
        anthropic(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "w", "input": {}},
            }
        )
    )
    for piece in ['{"a"', ": 1", "}"]:
        acc.feed(
            anthropic(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
            )
        )
        if piece == ": 1":
            assert acc.summary.tool_calls[0].arguments == '{"a": 1'
    assert acc.summary.tool_calls[0].arguments == '{"a": 1}'


def test_first_token_at_set_by_first_output_event() -> None:
    acc = wire_api("messages").accumulator()
    acc.feed(anthropic(MESSAGE_START))
    acc.feed(anthropic({"type": "ping"}))
    assert acc.first_token_at is None
    before = time.monotonic()
    acc.feed(
        anthropic(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            }
        )
    )
    first = acc.first_token_at
    assert first is not None and first >= before
    acc.feed(
        anthropic(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "!"},
            }
        )
    )
    assert acc.first_token_at == first
    assert acc.summary.text_chars == 3


def chat_chunk(choices: list, usage: dict | None = None) -> SSEEvent:
    return ev(
        None,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": choices,
            "usage": usage,
        },
    )


def test_chat_role_only_chunk_is_not_a_token() -> None:
    acc = feed(
        "chat",
        [chat_chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])],
    )
    assert acc.first_token_at is None
    assert (acc.summary.model, acc.summary.response_id) == ("gpt-4o-mini", "chatcmpl-1")


def test_chat_parallel_choices_keep_tool_calls_apart() -> None:
    def call(choice: int, call_id: str | None, args: str) -> dict:
        tc: dict = {"index": 0, "function": {"arguments": args}}
        if call_id:
            tc |= {"id": call_id, "type": "function"}
            tc["function"]["name"] = "f"
        return {"index": choice, "delta": {"tool_calls": [tc]}}

    acc = feed(
        "chat",
        [
            chat_chunk([call(0, "call_a", ""), call(1, "call_b", "")]),
            chat_chunk([call(0, None, '{"x":'), call(1, None, '{"y":')]),
            chat_chunk([call(1, None, "2}"), call(0, None, "1}")]),
            chat_chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        ],
    )
    assert acc.summary.tool_calls == [
        ToolCall("call_a", "f", '{"x":1}'),
        ToolCall("call_b", "f", '{"y":2}'),
    ]
    assert acc.summary.completed


def test_chat_error_then_done() -> None:
    acc = feed(
        "chat",
        [
            chat_chunk([{"index": 0, "delta": {"content": "Hel"}}]),
            ev(None, {"error": {"message": "upstream overloaded", "type": "server_error"}}),
            ev(None, "[DONE]"),
        ],
    )
    s = acc.summary
    assert (s.error, s.error_type, s.text_chars, s.events) == (
        "upstream overloaded",
        "server_error",
        3,
        3,
    )


def test_chat_done_is_only_special_on_chat() -> None:
    acc = feed("messages", [ev(None, "[DONE]")])
    assert (acc.summary.completed, acc.bad_events) == (False, 1)


def test_responses_failed_and_error_events() -> None:
    acc = feed(
        "responses",
        [
            ev(
                "response.created",
                {
                    "type": "response.created",
                    "response": {
                        "id": "resp_1",
                        "model": "gpt-5",
                        "status": "in_progress",
                        "output": [],
                    },
                },
            ),
            ev(
                "error",
                {"type": "error", "code": "server_error", "message": "The server had an error"},
            ),
            ev(
                "response.failed",
                {
                    "type": "response.failed",
                    "response": {
                        "id": "resp_1",
                        "status": "failed",
                        "error": {"code": "server_error", "message": "again"},
                        "output": [],
                    },
                },
            ),
        ],
    )
    s = acc.summary
    assert (s.error, s.error_type, s.stop_reason, s.completed, s.response_id) == (
        "The server had an error",
        "server_error",
        "failed",
        False,
        "resp_1",
    )


def test_responses_incomplete_is_terminal() -> None:
    resp = {
        "id": "resp_2",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [],
        "usage": {"input_tokens": 5, "output_tokens": 16},
    }
    acc = feed(
        "responses", [ev("response.incomplete", {"type": "response.incomplete", "response": resp})]
    )
    s = acc.summary
    assert (s.completed, s.stop_reason, s.input_tokens, s.output_tokens) == (
        True,
        "incomplete",
        5,
        16,
    )


def test_responses_tool_call_only_in_completed_output() -> None:
    resp = {
        "id": "resp_3",
        "status": "completed",
        "model": "gpt-5",
        "output": [
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        ],
    }
    acc = feed("responses", [ev(None, {"type": "response.completed", "response": resp})])
    assert acc.summary.tool_calls == [ToolCall("call_1", "f", "{}")]


@pytest.mark.parametrize("route", ["messages", "chat", "responses"])
@pytest.mark.parametrize(
    "data",
    ["{not json", "[1, 2]", "null", "42", '"str"', "", "[" * 100_000],
)
def test_malformed_event_counted_not_raised(route: str, data: str) -> None:
    acc = feed(route, [SSEEvent("message_start", data), SSEEvent(None, data)])
    assert (acc.bad_events, acc.summary.events) == (2, 2)


WEIRD_VALUES = [None, [], {}, "s", 7, True, [1], {"a": []}]


@pytest.mark.parametrize("route", ["messages", "chat", "responses"])
@pytest.mark.parametrize("weird", WEIRD_VALUES, ids=repr)
def test_wrongly_typed_fields_never_raise(route: str, weird: object) -> None:
    """Every field of a realistic event replaced by a value of the wrong type."""
    templates = [
        MESSAGE_START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{"},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 1, "cache_creation": {"ephemeral_1h_input_tokens": 1}},
        },
        {"type": "error", "error": {"type": "x", "message": "y"}},
        {
            "id": "c",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "content": "x",
                        "tool_calls": [
                            {"index": 0, "id": "i", "function": {"name": "n", "arguments": "a"}}
                        ],
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1}},
        },
        {"error": {"message": "m"}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "function_call", "call_id": "c", "name": "n", "arguments": ""},
        },
        {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "x"},
        {
            "type": "response.completed",
            "response": {
                "id": "r",
                "usage": {"input_tokens": 1},
                "output": [{"type": "function_call", "call_id": "c"}],
                "error": {"code": "c"},
            },
        },
    ]

    def variants(obj: object):
        yield weird
        if isinstance(obj, dict):
            for key, value in obj.items():
                for v in variants(value):
                    yield {**obj, key: v}
        elif isinstance(obj, list):
            for i, value in enumerate(obj):
                for v in variants(value):
                    yield [*obj[:i], v, *obj[i + 1 :]]

    acc = wire_api(route).accumulator()
    fast = wire_api(route).accumulator()
    for template in templates:
        for variant in variants(template):
            for name in (None, "error"):
                acc.feed(SSEEvent(name, json.dumps(variant)))
                fast.feed_raw([(name, json.dumps(variant).encode(), None)])
    json.dumps(acc.summary.to_dict())
    assert observed(fast) == observed(acc)


# --- feed_raw's shortcut: text-only events that repeat the previous bytes ----------------


def compact(obj: object, *, ascii_only: bool = False) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only).encode()


def check_raw(route: str, frames: list[tuple[str | None, bytes]]) -> StreamAccumulator:
    """feed_raw (one batch) leaves the same state as feed() on the decoded text."""
    ref = wire_api(route).accumulator()
    for name, data in frames:
        ref.feed(SSEEvent(name, data.decode("utf-8", "replace")))
    fast = wire_api(route).accumulator()
    fast.feed_raw([(name, data, None) for name, data in frames])
    assert observed(fast) == observed(ref)
    return fast


def openai_chunk(delta: dict, padding: str | None = "pad", finish: str | None = None) -> dict:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return chunk if padding is None else {**chunk, "obfuscation": padding}


TEXTS = ["Hel", "lo", " wörld", " ☀️", '"quoted"', "back\\slash\\", "tab\t", "a\nb", "\u2028", ""]


@pytest.mark.parametrize("ascii_only", [False, True])
@pytest.mark.parametrize("padding", [None, "x"])
def test_chat_text_shortcut_is_exact(ascii_only: bool, padding: str | None, hits: list) -> None:
    frames = [(None, compact(openai_chunk({"role": "assistant", "content": ""}, padding)))]
    for i, text in enumerate(TEXTS):
        pad = None if padding is None else "aZ9"[: i % 4]  # varying length, even empty
        frames.append((None, compact(openai_chunk({"content": text}, pad), ascii_only=ascii_only)))
    acc = check_raw("chat", frames)
    assert acc.summary.text_chars == sum(len(t) for t in TEXTS)
    assert hits == TEXTS[1:]  # the first text chunk teaches the shape


def test_shortcut_refuses_what_json_would_judge_differently(hits: list) -> None:
    good = compact(openai_chunk({"content": "ok"}))
    start, end = good.split(b'"ok"')
    bodies = [
        b"a\tb",  # raw control character: not JSON
        b"\xff\xfe",  # invalid UTF-8: json reads it as U+FFFD after decoding
        b"\\ud800",  # lone surrogate: jiter refuses, json accepts
        b"\\x41",  # invalid escape
        b'a\\"',  # escaped quote, then the real end
        b'a\\\\"',  # escaped backslash, then a quote that ends the string early
        b'","content":"dup',  # a second key: structure differs
    ]
    frames = [(None, good), (None, good)] + [(None, start + b'"' + b + b'"' + end) for b in bodies]
    check_raw("chat", frames)
    assert hits == ["ok", 'a"']


@pytest.mark.parametrize(
    "last",
    [
        openai_chunk({"content": "x"}, finish="stop"),
        {**openai_chunk({"content": "x"}), "usage": {"prompt_tokens": 5}},
        openai_chunk({"content": "x", "tool_calls": [{"index": 0, "id": "c", "function": {}}]}),
        openai_chunk({"content": "x"}, padding="not alnum!"),
        {"error": {"message": "boom"}, **openai_chunk({"content": "x"})},
    ],
)
def test_other_suffixes_take_the_full_path(last: dict, hits: list) -> None:
    frames = [(None, compact(openai_chunk({"content": t}))) for t in ("a", "b")]
    check_raw("chat", [*frames, (None, compact(last))])
    assert hits == ["b"]


@pytest.mark.parametrize(
    "chunk",
    [
        # "content" twice (logprobs): which one is the text is not evident from bytes
        {**openai_chunk({"content": "x"}), "logprobs": {"content": []}},
        # a backslash outside the text could spell a key with escapes
        {**openai_chunk({"content": "x"}), "id": 'a\\"b'},
        # padding before the text would make every event's prefix differ
        {"obfuscation": "abc", **openai_chunk({"content": "x"}, padding=None)},
        # two choices
        {**openai_chunk({"content": "x"}), "choices": [{"delta": {"content": "x"}}] * 2},
        # the effective delta (the last duplicate key) has no text
        '{"choices":[{"delta":{"content":"x"},"delta":{}}]}',
    ],
)
def test_no_shortcut_from_ambiguous_templates(chunk: dict | str) -> None:
    data = chunk.encode() if isinstance(chunk, str) else compact(chunk)
    acc = check_raw("chat", [(None, data)] * 3)
    assert acc._shortcut is None


def test_chat_tool_argument_shortcut(hits: list) -> None:
    def call(arguments: str, **first: str) -> dict:
        function = {"arguments": arguments} | ({"name": first["name"]} if first else {})
        tool = {"index": 0, "function": function} | ({"id": first["id"]} if first else {})
        return openai_chunk({"tool_calls": [tool]})

    pieces = ['{"q":', ' "a \\"b\\""', ", ", '"n": 1}']
    frames = [(None, compact(call("", id="call_1", name="f")))]
    frames += [(None, compact(call(p))) for p in pieces]
    frames.append((None, compact(openai_chunk({}, finish="tool_calls"))))
    acc = check_raw("chat", frames)
    assert acc.summary.tool_calls == [ToolCall("call_1", "f", "".join(pieces))]
    assert hits == pieces[1:]


def test_messages_shortcuts(hits: list) -> None:
    def delta(index: int, kind: str, key: str, value: str) -> tuple[str, bytes]:
        obj = {"type": "content_block_delta", "index": index, "delta": {"type": kind, key: value}}
        return "content_block_delta", compact(obj)

    tool = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    frames = [
        ("message_start", compact(MESSAGE_START)),
        *(delta(0, "thinking_delta", "thinking", t) for t in ("", "hm", "m")),
        *(delta(1, "text_delta", "text", t) for t in ("a", "", "ü\n", '"')),
        (
            "content_block_start",
            compact({"type": "content_block_start", "index": 2, "content_block": tool}),
        ),
        *(delta(2, "input_json_delta", "partial_json", p) for p in ("", '{"k"', ': "\\""}')),
        ("message_stop", compact({"type": "message_stop"})),
    ]
    acc = check_raw("messages", frames)
    assert acc.summary.text_chars == len('aü\n"')
    assert acc.summary.tool_calls == [ToolCall("t1", "f", '{"k": "\\""}')]
    assert hits == ["hm", "m", "", "ü\n", '"', '{"k"', ': "\\""}']


def test_first_token_from_a_shortcut_event() -> None:
    # The template's text is empty (no token yet); the first non-empty one is a token.
    frames = [(None, compact(openai_chunk({"content": t}))) for t in ("", "", "x")]
    acc = check_raw("chat", frames)
    assert acc.first_token_at is not None and acc.summary.text_chars == 1


def test_shortcut_learning_is_bounded() -> None:
    # Every chunk has another id, so no shape repeats: learning stops after a while.
    frames = [(None, compact({**openai_chunk({"content": "x"}), "id": f"c{i}"})) for i in range(50)]
    acc = check_raw("chat", frames)
    assert acc._builds == 0 and acc.summary.text_chars == 50


def test_feed_raw_batch_with_done_and_bad_events() -> None:
    frames = [
        (None, compact(openai_chunk({"content": "a"}))),
        (None, b"{broken"),
        ("error", b"\xffraw failure"),
        (None, compact(openai_chunk({"content": "b"}))),
        (None, b"[DONE]"),
    ]
    acc = check_raw("chat", frames)
    assert (acc.bad_events, acc.summary.completed, acc.summary.events) == (2, True, 5)
    assert acc.summary.error == "\ufffdraw failure"


@pytest.mark.parametrize("data", [
    b'{"a":1,"a":2}', b'{"a":NaN}', b'{"a":-Infinity}', b'{"a":123456789012345678901234567890}',
    b'{"a":1e400}', b'{"a":"\\ud800"}', b'\xef\xbb\xbf{}', b'{"a":"x\ty"}', b'{"a":01}',
    b'{"\xff":1}', b'{"a":1,}', b"", b" ", b"[1,2]", b'"s"', b'{"a":[' * 300 + b"]" * 300,
    '{"a":"é"}'.encode("utf-16"), b'{"model":"gpt-4o","messages":[{"role":"user"}]}',
    '{"a":"é"}',
])
def test_json_loads_is_json_loads(data):
    try:
        want = json.loads(data)
    except Exception as e:
        with pytest.raises(type(e)):
            json_loads(data)
    else:
        assert repr(json_loads(data)) == repr(want)  # NaN != NaN
