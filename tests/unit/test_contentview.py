"""The SSE contentview: summary + events for the three routes, route detection, garbage."""

from __future__ import annotations

import json
import logging
import random

import pytest
from mitmproxy import contentviews, http
from mitmproxy.test import taddons, tflow

from aibridge.observe import contentview
from aibridge.observe.contentview import SSEContentview, register, render, sniff
from aibridge.providers.catalog import wire_api
from aibridge.sse import SSEParser


def frame(obj: object, event: str | None = None) -> str:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


def typed(*payloads: dict) -> bytes:
    """Anthropic/Responses style: each payload's `type` is also its SSE event name."""
    return "".join(frame(p, p["type"]) for p in payloads).encode()


# A realistic Anthropic Messages stream: thinking, text, then a tool call whose input arrives in
# pieces; cache tokens in message_start, the cumulative output count in message_delta.
MESSAGES = typed(
    {"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {
            "input_tokens": 472, "cache_creation_input_tokens": 2048,
            "cache_read_input_tokens": 1024, "output_tokens": 2}}},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "thinking_delta", "thinking": "The user wants the weather."}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "text_delta", "text": "Let me check"}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "text_delta", "text": " the weather in Paris.\nOne moment."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
        "input": {}}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"Par"}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": "is\", \"unit\": \"celsius\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
)

# OpenAI Chat Completions with stream_options.include_usage: role chunk, text, a tool call in
# pieces, the finish chunk, the usage chunk (empty choices) and [DONE].
_CHUNK = {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk",
          "created": 1741569952, "model": "gpt-4.1-2025-04-14", "service_tier": "default",
          "system_fingerprint": "fp_fake", "usage": None}


def _chat(delta: dict, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return frame({**_CHUNK, "choices": [choice]})


CHAT = "".join([
    _chat({"role": "assistant", "content": "", "refusal": None}),
    _chat({"content": "Hello"}),
    _chat({"content": " from fake"}),
    _chat({"tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    _chat({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
    _chat({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
    _chat({}, "tool_calls"),
    frame({**_CHUNK, "choices": [], "usage": {
        "prompt_tokens": 82, "completion_tokens": 18, "total_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}}),
    frame("[DONE]"),
]).encode()


# OpenAI Responses: reasoning item, message text deltas, a function call, response.completed.
def _responses() -> bytes:
    done = {
        "id": "resp_67ccd3a9da748190baa7f1570fe91ac6", "object": "response",
        "created_at": 1741476777, "status": "completed", "error": None,
        "model": "gpt-5-2025-08-07", "output": [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Hello from fake", "annotations": []}]},
            {"id": "fc_1", "type": "function_call", "status": "completed",
             "call_id": "call_abc123", "name": "get_weather",
             "arguments": "{\"location\":\"Paris\"}"}],
        "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 256},
                  "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 12},
                  "total_tokens": 340}}
    pending = {**done, "status": "in_progress", "output": [], "usage": None}
    at = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    payloads = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
        {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"id": "msg_1", "type": "message", "status": "in_progress",
                  "role": "assistant", "content": []}},
        {"type": "response.content_part.added", **at,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **at, "delta": "Hello", "obfuscation": "x1"},
        {"type": "response.output_text.delta", **at, "delta": " from fake", "obfuscation": "k"},
        {"type": "response.output_text.done", **at, "text": "Hello from fake"},
        {"type": "response.output_item.done", "output_index": 1, "item": done["output"][1]},
        {"type": "response.output_item.added", "output_index": 2, "item": {
            "id": "fc_1", "type": "function_call", "status": "in_progress",
            "call_id": "call_abc123", "name": "get_weather", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1",
         "output_index": 2, "delta": "{\"location\":"},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1",
         "output_index": 2, "delta": "\"Paris\"}"},
        {"type": "response.function_call_arguments.done", "item_id": "fc_1",
         "output_index": 2, "arguments": "{\"location\":\"Paris\"}"},
        {"type": "response.output_item.done", "output_index": 2, "item": done["output"][2]},
        {"type": "response.completed", "response": done},
    ]
    return typed(*[{**p, "sequence_number": i} for i, p in enumerate(payloads)])


RESPONSES = _responses()


def sse_flow(body: bytes, route: str | None = None,
             content_type: str = "text/event-stream; charset=utf-8") -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.response.headers["content-type"] = content_type
    flow.response.content = body
    if route is not None:
        flow.metadata["aibridge"] = {"provider": "x", "kind": "bridged", "route": route}
    return flow


def view(flow: http.HTTPFlow, name: str = "auto") -> contentviews.ContentviewResult:
    register()
    with taddons.context():
        return contentviews.prettify_message(flow.response, flow, name)


def event_lines(text: str) -> list[str]:
    return text.split("\nevents:\n", 1)[1].splitlines()


def test_messages_stream_summary_and_events() -> None:
    result = view(sse_flow(MESSAGES, "messages"))
    assert result.view_name == "SSE"
    assert result.syntax_highlight == "yaml"
    text = result.text
    assert text.startswith("# SSE · 17 events · Anthropic Messages (flow)\n")
    assert "model: claude-sonnet-4-5-20250929\n" in text
    assert "response_id: msg_01XFDUDYJgAACzvnptvVoYEL\n" in text
    assert "stop_reason: tool_use\n" in text
    assert "usage: input 472 · output 89 · cache read 1024 · cache write 2048\n" in text
    assert ("tool_calls:\n  - name: get_weather\n    id: toolu_01T1x1fJ34qAmk2tNTrN7Up6\n"
            '    arguments: {"location": "Paris", "unit": "celsius"}\n') in text
    assert "completed: true\n" in text
    assert "thinking: |-\n  The user wants the weather.\n" in text
    assert "text: |-\n  Let me check the weather in Paris.\n  One moment.\n" in text
    assert "error:" not in text
    lines = event_lines(text)
    assert len(lines) == 17
    # Each line drops what the event name already says, nulls and per-stream repeats.
    assert lines[0].startswith('  message_start: {"message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL"')
    assert lines[0].endswith(" chars)")  # shortened
    assert lines[6] == "  ping: {}"
    assert lines[8] == ('  content_block_delta: {"index":1,"delta":{"type":"text_delta",'
                        '"text":" the weather in Paris.\\nOne moment."}}')
    assert lines[-2] == ('  message_delta: {"delta":{"stop_reason":"tool_use"},'
                         '"usage":{"output_tokens":89}}')
    assert lines[-1] == "  message_stop: {}"


def test_chat_stream_sniffed_without_bridge_metadata() -> None:
    text = view(sse_flow(CHAT)).text
    assert text.startswith("# SSE · 9 events · OpenAI Chat Completions (sniffed)\n")
    assert "model: gpt-4.1-2025-04-14\n" in text
    assert "response_id: chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\n" in text
    assert "stop_reason: tool_calls\n" in text
    assert "usage: input 82 · output 18 · cache read 64 · cache write 0\n" in text
    assert ('  - name: get_weather\n    id: call_DdmO9pD3xa9XTPNJ32zg2hcA\n'
            '    arguments: {"location":"Paris"}\n') in text
    assert 'text: |-\n  Hello from fake\nevents:\n' in text
    lines = event_lines(text)
    assert len(lines) == 9
    assert lines[1] == '  message: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}'
    assert lines[-1] == "  message: [DONE]"


def test_responses_stream_summary() -> None:
    text = view(sse_flow(RESPONSES, "responses")).text
    assert text.startswith("# SSE · 16 events · OpenAI Responses (flow)\n")
    assert "model: gpt-5-2025-08-07\n" in text
    assert "response_id: resp_67ccd3a9da748190baa7f1570fe91ac6\n" in text
    assert "stop_reason: completed\n" in text
    assert ("usage: input 300 · output 40 · cache read 256 · cache write 0"
            " · output reasoning 12\n") in text
    assert ('  - name: get_weather\n    id: call_abc123\n'
            '    arguments: {"location":"Paris"}\n') in text
    assert "text: |-\n  Hello from fake\n" in text
    assert "thinking:" not in text  # no reasoning text in this stream
    lines = event_lines(text)
    assert lines[6] == ('  response.output_text.delta: {"item_id":"msg_1","output_index":1,'
                        '"content_index":0,"delta":"Hello"}')
    assert lines[-1].startswith('  response.completed: {"response":{"id":"resp_67ccd3a9')


def test_responses_text_from_final_output_when_no_deltas() -> None:
    parser = SSEParser()
    events = [e for e in parser.feed(RESPONSES) if e.event != "response.output_text.delta"]
    body = "".join(frame(e.data, e.event) for e in events).encode()
    assert "text: |-\n  Hello from fake\n" in render(body, wire_api("responses"))


@pytest.mark.parametrize(("body", "route"), [(MESSAGES, "messages"), (CHAT, "chat"),
                                             (RESPONSES, "responses")])
def test_sniff_each_route(body: bytes, route: str) -> None:
    assert sniff(SSEParser().feed(body)).name == route
    assert f"{wire_api(route).title} (sniffed)" in render(body)


def test_flow_route_wins_over_sniffing() -> None:
    # Chat chunks viewed as a Responses flow: the bridge's route is what it recorded with.
    assert "OpenAI Responses (flow)" in view(sse_flow(CHAT, "responses")).text


def test_error_event_mid_stream() -> None:
    body = MESSAGES.split(b"event: content_block_start")[0] + typed(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    text = render(body, wire_api("messages"))
    assert "error: overloaded_error: Overloaded\n" in text
    assert "completed: false\n" in text


def test_unknown_stream_shows_events_only() -> None:
    body = b"event: tick\ndata: 1\n\n: keep-alive\n\ndata: line one\ndata: line two\n\n"
    text = render(body)
    assert text == "# SSE · 2 events\nevents:\n  tick: 1\n  message: line one\\nline two\n"


def test_priority_by_content_type() -> None:
    cv = SSEContentview()
    assert cv.name == "SSE"
    assert cv.render_priority(b"", contentviews.Metadata(content_type="text/event-stream")) == 2
    for ctype in ("application/json", None):
        assert cv.render_priority(b"", contentviews.Metadata(content_type=ctype)) == -1
    # JSON bodies keep the JSON view; SSE bodies get this one automatically.
    flow = sse_flow(b'{"a": 1}', "chat", content_type="application/json")
    assert view(flow).view_name == "JSON"
    assert view(sse_flow(CHAT, "chat")).view_name == "SSE"


@pytest.mark.parametrize("body", [
    b"",
    b"\x00\x01\x02\xff\xfe binary",
    b"\xff\xfe\xfd\n\n\n",
    b"plain text, no fields at all\n",
    b"data: {not json\n\ndata: [1, 2]\n\ndata: null\n\n",
    b"event: message_start\ndata: {\"message\": [], \"type\": 7}\n\n",
    b"event: response.completed\ndata: {\"response\": {\"output\": [{\"content\": 5}]}}\n\n",
    b"data: {\"choices\": [null, 1, {\"delta\": [], \"index\": []}]}\n\n",
    b"data: " + b"[" * 100_000 + b"\n\n",
])
@pytest.mark.parametrize("route", [None, "messages", "chat", "responses", "bogus"])
def test_garbage_never_raises(body: bytes, route: str | None) -> None:
    # `render` itself, not `prettify`: that one shows the raw body on any exception, so a
    # renderer that raised would still pass.
    text = render(body, wire_api(route))
    assert isinstance(text, str)
    if not body.strip(b"\n") or b"data" not in body:
        assert text == body.decode("utf-8", "replace")


def test_random_bytes_never_raise() -> None:
    rng = random.Random(1234)
    pieces = [MESSAGES, CHAT, RESPONSES]
    for _ in range(200):
        source = rng.choice(pieces)
        start = rng.randrange(len(source))
        body = bytearray(source[start:start + rng.randrange(1, 3000)])
        for _ in range(rng.randrange(5)):
            if body:
                body[rng.randrange(len(body))] = rng.randrange(256)
        assert isinstance(render(bytes(body)), str)  # `render`: see test_garbage_never_raises


def test_internal_error_shows_raw_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(contentview, "render", boom)
    assert SSEContentview().prettify(CHAT, contentviews.Metadata()) == CHAT.decode()


def test_long_streams_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contentview, "MAX_EVENT_LINES", 3)
    text = render(CHAT)
    assert event_lines(text)[-1] == "  # … 6 more events"
    assert len(event_lines(text)) == 4


def test_register_is_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    register()
    first = contentviews.registry["sse"]
    with caplog.at_level(logging.INFO):
        register()
        register()
    assert contentviews.registry["sse"] is first
    assert isinstance(first, SSEContentview)
    assert "Replacing existing" not in caplog.text
    assert "sse" in contentviews.registry.available_views()
