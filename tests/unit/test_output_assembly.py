"""The output text an accumulator puts together while a stream passes (providers.assembly) is
exactly what each API's own `assembled_text` returned when it re-parsed the kept events at the
end of the stream. Those functions are kept below, as they were, as the oracle.

Every API's streams go through the plain path (`feed`, as `WireApi.assembled_text` and the
socket session read them), `feed_raw` (the tap's path, shortcuts learned and taken), the stream
tap itself in chunks, and are cut off mid-way; odd shapes (every field wrongly typed) too.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from aibridge.intercept import Actor, CredentialInfo, CredentialKind
from aibridge.observe.clients import ClientInfo
from aibridge.providers.assembly import MAX_OUTPUT_CHARS, TextAssembly
from aibridge.providers.base import WireApi
from aibridge.providers.catalog import wire_api
from aibridge.providers.jsonfields import _d, _idx, _join, _json_text, _list, _text
from aibridge.sse import RawEvent, SSEEvent
from aibridge.streaming import output
from aibridge.streaming.socket_session import SocketSession
from aibridge.streaming.tap import StreamTap
from tests import fakeprovider as fp
from tests.unit import test_tap_perf as perf

# -- the oracle: each API's assembled_text as it was, re-parsing every event ----------------------

Blocks = dict[tuple[str, int], list[str]]


def old_chat(events: list[SSEEvent]) -> dict[str, str]:
    blocks: Blocks = {}
    for event in events:
        obj = _json_text(event.data)
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list):
            continue
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            index = _idx(choice.get("index"))
            for key, label in (("content", "text"), ("reasoning_content", "thinking"),
                               ("reasoning", "thinking"), ("refusal", "refusal")):
                if isinstance(piece := delta.get(key), str) and piece:
                    blocks.setdefault((label, index), []).append(piece)
    return _join(blocks)


def old_messages(events: list[SSEEvent]) -> dict[str, str]:
    blocks: Blocks = {}
    for event in events:
        obj = _json_text(event.data)
        if (not isinstance(obj, dict)
                or (obj.get("type") or event.event) != "content_block_delta"):
            continue
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            continue
        index = _idx(obj.get("index"))
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(text := delta.get("text"), str):
            blocks.setdefault(("text", index), []).append(text)
        elif kind == "thinking_delta" and isinstance(text := delta.get("thinking"), str):
            blocks.setdefault(("thinking", index), []).append(text)
    return _join(blocks)


_DELTAS = {
    "response.output_text.delta": "text",
    "response.refusal.delta": "refusal",
    "response.reasoning_summary_text.delta": "thinking",
    "response.reasoning_text.delta": "thinking",
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def old_responses(events: list[SSEEvent]) -> dict[str, str]:
    blocks: Blocks = {}
    final: Blocks = {}
    for event in events:
        obj = _json_text(event.data)
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        kind = kind if isinstance(kind, str) and kind else event.event
        if (label := _DELTAS.get(kind or "")) and isinstance(delta := obj.get("delta"), str):
            index = _idx(obj.get("output_index")) * 1000 + _idx(obj.get("content_index"))
            blocks.setdefault((label, index), []).append(delta)
        elif kind in TERMINAL:
            response = obj.get("response")
            output = response.get("output") if isinstance(response, dict) else None
            for i, item in enumerate(output if isinstance(output, list) else []):
                content = item.get("content") if isinstance(item, dict) else None
                for j, part in enumerate(content if isinstance(content, list) else []):
                    if (isinstance(part, dict) and part.get("type") == "output_text"
                            and isinstance(text := part.get("text"), str)):
                        final.setdefault(("text", i * 1000 + j), []).append(text)
    if not any(label == "text" for label, _ in blocks):
        blocks.update(final)
    return _join(blocks)


def old_gemini(events: list[SSEEvent]) -> dict[str, str]:
    blocks: Blocks = {}
    for event in events:
        obj = _json_text(event.data)
        for candidate in _list(obj.get("candidates")) if isinstance(obj, dict) else []:
            candidate = _d(candidate)
            index = candidate.get("index") if type(candidate.get("index")) is int else 0
            for part in _list(_d(candidate.get("content")).get("parts")):
                part = _d(part)
                if isinstance(text := part.get("text"), str) and text:
                    label = "thinking" if part.get("thought") else "text"
                    blocks.setdefault((label, index), []).append(_text(text))
    return _join(blocks)


def old_converse(events: list[SSEEvent]) -> dict[str, str]:
    blocks: Blocks = {}
    for event in events:
        obj = _json_text(event.data)
        if event.event != "contentBlockDelta" or not isinstance(obj, dict):
            continue
        delta, index = _d(obj.get("delta")), _idx(obj.get("contentBlockIndex"))
        if isinstance(text := delta.get("text"), str):
            blocks.setdefault(("text", index), []).append(text)
        elif isinstance(text := _d(delta.get("reasoningContent")).get("text"), str):
            blocks.setdefault(("thinking", index), []).append(text)
    return _join(blocks)


ORACLE: dict[str, Callable[[list[SSEEvent]], dict[str, str]]] = {
    "chat": old_chat,
    "messages": old_messages,
    "responses": old_responses,
    "generate_content": old_gemini,
    "stream_generate_content": old_gemini,
    "invoke": old_messages,  # Bedrock's InvokeModel stream: Anthropic's events
    "converse": old_converse,
    "embeddings": lambda events: {},
}

# -- streams of every API, as their bytes on the wire -----------------------------------------


def sse(obj: object, event: str | None = None) -> bytes:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return ((f"event: {event}\n" if event else "") + f"data: {data}\n\n").encode()


def typed(objs: list[dict]) -> bytes:
    return b"".join(sse(o, o.get("type")) for o in objs)


WORDS = ["Hel", "lo", " wörld", "", " ☀️", '"q"', "a\\b", "x\ny", "\u2028", " AKIA", "IOSF"]


def chat_chunk(choices: list[dict], **extra: object) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o", "choices": choices, **extra}


def delta(delta: dict, index: int = 0, finish: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def chat_reasoning() -> bytes:
    """Reasoning (both spellings), refusal, two choices, text beside reasoning, an empty text."""
    chunks = [chat_chunk([delta({"role": "assistant", "content": "", "refusal": None})])]
    chunks += [chat_chunk([delta({"content": None, "reasoning_content": w})]) for w in WORDS]
    chunks += [chat_chunk([delta({"content": "", "reasoning": w})]) for w in WORDS[:4]]
    chunks += [chat_chunk([delta({"content": w}, 0), delta({"content": w[::-1]}, 1)])
               for w in WORDS]
    chunks += [chat_chunk([delta({"content": w})], obfuscation="pad") for w in WORDS]
    chunks += [chat_chunk([delta({"content": "both", "reasoning_content": "why"})])]
    chunks += [chat_chunk([delta({"content": w})], obfuscation="pad") for w in WORDS]
    chunks += [chat_chunk([delta({"refusal": w})]) for w in ("I can", "not")]
    chunks += [chat_chunk([delta({}, 0, "stop"), delta({}, 1, "stop")])]
    return b"".join(sse(c) for c in chunks) + b"data: [DONE]\n\n"


def chat_error_beside_text() -> bytes:
    return (sse(chat_chunk([delta({"content": "before"})]))
            + sse(chat_chunk([delta({"content": "with an error"})], error={"message": "boom"}))
            + sse({"error": {"message": "late", "type": "server_error"}}))


def chat_tools() -> bytes:
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": ""}}
    chunks = [chat_chunk([delta({"role": "assistant", "content": None, "tool_calls": [call]})])]
    chunks += [chat_chunk([delta({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})])
               for p in ('{"a', '": "', 'AKIAIOSF', '"}')]
    chunks += [chat_chunk([delta({"content": w})]) for w in WORDS]
    return b"".join(sse(c) for c in chunks) + b"data: [DONE]\n\n"


def block_delta(index: int, kind: str, key: str, value: str) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, key: value}}


MESSAGE_START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
    "usage": {"input_tokens": 3, "output_tokens": 1}}}


def messages_thinking() -> list[dict]:
    """Thinking, text in two blocks, a tool call between them, empty pieces."""
    tool = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    return [
        MESSAGE_START,
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": ""}},
        *(block_delta(0, "thinking_delta", "thinking", w) for w in WORDS),
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": "c2ln"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        *(block_delta(1, "text_delta", "text", w) for w in WORDS),
        {"type": "content_block_start", "index": 2, "content_block": tool},
        *(block_delta(2, "input_json_delta", "partial_json", p) for p in ('{"k"', ': "v"}')),
        {"type": "content_block_start", "index": 3, "content_block": {"type": "text", "text": ""}},
        *(block_delta(3, "text_delta", "text", w) for w in reversed(WORDS)),
        {"type": "ping"},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]


def messages_only_empty_text() -> list[dict]:
    return [MESSAGE_START, block_delta(0, "text_delta", "text", ""), {"type": "message_stop"}]


def messages_untyped() -> bytes:
    """Events named only by their SSE name, or only by their type."""
    untyped = {"index": 0, "delta": {"type": "text_delta", "text": "named"}}
    return (sse(untyped, "content_block_delta") + sse(block_delta(0, "text_delta", "text", "x"))
            + sse(untyped) + sse({**untyped, "type": None}, "content_block_delta"))


def responses_rich() -> list[dict]:
    """Reasoning summary, refusal, text in two items and two parts, a function call."""
    def at(kind: str, item: int, part: int, piece: str) -> dict:
        return {"type": kind, "item_id": f"i{item}", "output_index": item, "content_index": part,
                "delta": piece}

    events: list[dict] = [{"type": "response.created", "response": {"id": "r", "model": "m"}}]
    events += [at("response.reasoning_summary_text.delta", 0, 0, w) for w in WORDS]
    events += [at("response.reasoning_text.delta", 0, 1, w) for w in WORDS[:3]]
    events += [at("response.output_text.delta", 1, 0, w) for w in WORDS]
    events += [at("response.output_text.delta", 1, 1, w) for w in WORDS[::-1]]
    events += [at("response.refusal.delta", 2, 0, w) for w in ("no", "pe")]
    events += [{"type": "response.output_item.added", "output_index": 3,
                "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}},
               {"type": "response.function_call_arguments.delta", "output_index": 3,
                "delta": '{"x":1}'}]
    events += [at("response.output_text.delta", 4, 0, w) for w in WORDS]
    final = [{"type": "message", "content": [{"type": "output_text", "text": "FINAL"}]}]
    events += [{"type": "response.completed",
                "response": {"id": "r", "status": "completed", "output": final}}]
    return [{**e, "sequence_number": i} for i, e in enumerate(events)]


def responses_final_only(terminal: str = "response.completed") -> list[dict]:
    """No text deltas: the terminal event's output is what the client got."""
    output = [{"type": "reasoning", "summary": []},
              {"type": "message", "content": [{"type": "output_text", "text": "first"},
                                              {"type": "refusal", "refusal": "x"},
                                              {"type": "output_text", "text": "sec AKIA"}]},
              {"type": "message", "content": [{"type": "output_text", "text": "third"}]},
              "odd", {"content": "odd"}]
    return [{"type": "response.created", "response": {"id": "r"}},
            {"type": "response.reasoning_summary_text.delta", "output_index": 0,
             "content_index": 0, "delta": "thinking only"},
            {"type": terminal, "response": {"id": "r", "output": output}},
            {"type": terminal, "response": {"id": "r", "output": output[2:3]}}]


def responses_empty_delta() -> list[dict]:
    """An empty text delta is a text block: the final output does not stand in for it."""
    final = [{"type": "message", "content": [{"type": "output_text", "text": "FINAL"}]}]
    return [{"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
             "delta": ""},
            {"type": "response.completed", "response": {"output": final}}]


def gemini_chunks() -> list[dict]:
    """Thought parts, two candidates, a function call, an empty text."""
    def chunk(parts: list[dict], index: object = 0, **extra: object) -> dict:
        return {"candidates": [{"content": {"parts": parts, "role": "model"}, "index": index}],
                "modelVersion": "gemini-2.5-flash", "responseId": "g1", **extra}

    chunks = [chunk([{"text": w, "thought": True}]) for w in WORDS]
    chunks += [chunk([{"text": w}, {"text": w.upper(), "thought": True}]) for w in WORDS]
    chunks += [chunk([{"text": w}], index=1) for w in WORDS[:5]]
    chunks += [chunk([{"text": "odd index"}], index="2")]
    chunks += [chunk([{"functionCall": {"name": "f", "args": {"a": 1}}}, {"text": ""}])]
    chunks += [{"candidates": [{"content": {"parts": [{"text": "a"}, {"text": "b"}]},
                                "index": 0}, {"content": {"parts": [{"text": "c"}]}, "index": 1}]}]
    chunks += [chunk([{"text": "beside an error"}], error={"code": 500, "message": "x"})]
    chunks += [chunk([{"text": "end"}], finishReason="STOP",
                     usageMetadata={"promptTokenCount": 3, "candidatesTokenCount": 5})]
    return chunks


def gemini_body(chunks: list[dict], *, as_sse: bool) -> bytes:
    reply = fp.gemini_stream(chunks, sse=as_sse)
    return b"".join(e.encode() if isinstance(e, str) else e for e in reply.events or [])


def invoke_body() -> bytes:
    events = messages_thinking()
    events[-1][fp.METRICS] = {"inputTokenCount": 3, "outputTokenCount": 9}
    other = {"generation": "llama text", "generation_token_count": 2}
    return (b"".join(fp.bedrock_chunk(e) for e in events) + fp.bedrock_chunk(other)
            + fp.eventstream_exception("throttlingException", "slow down"))


def converse_body() -> bytes:
    frames = [fp.eventstream_event("messageStart", {"role": "assistant"})]
    frames += [fp.eventstream_event("contentBlockDelta", {
        "contentBlockIndex": 0, "delta": {"reasoningContent": {"text": w}}}) for w in WORDS]
    frames += [fp.eventstream_event("contentBlockDelta", {
        "contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}})]
    frames += [fp.eventstream_event("contentBlockDelta", {
        "contentBlockIndex": 1, "delta": {"text": w}}) for w in WORDS]
    frames += [fp.eventstream_event("contentBlockStart", {
        "contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
               fp.eventstream_event("contentBlockDelta", {
                   "contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"a":1}'}}}),
               fp.eventstream_event("contentBlockDelta", {
                   "contentBlockIndex": 3, "delta": {"text": "odd", "reasoningContent": {
                       "text": "both"}}}),
               fp.eventstream_event("contentBlockDelta", {
                   "contentBlockIndex": 4, "delta": {"toolUse": {"input": "x"},
                                                     "reasoningContent": {"text": "tool+r"}}}),
               fp.eventstream_event("messageStop", {"stopReason": "end_turn"}),
               fp.eventstream_event("metadata", {"usage": {"inputTokens": 3}})]
    return b"".join(frames)


def fake_reply(reply: fp.Reply) -> bytes:
    return b"".join(e.encode() if isinstance(e, str) else e for e in reply.events or [])


STREAMS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "chat": ("chat", lambda: b"".join(perf.chat_stream(200))),
    "chat-no-padding": ("chat", lambda: b"".join(perf.chat_stream(200, padding=False))),
    "chat-fake": ("chat", lambda: fake_reply(fp._chat(1, {"stream": True}, ""))),
    "chat-reasoning": ("chat", chat_reasoning),
    "chat-error": ("chat", chat_error_beside_text),
    "chat-tools": ("chat", chat_tools),
    "messages": ("messages", lambda: b"".join(perf.messages_stream(200))),
    "messages-fake": ("messages", lambda: fake_reply(fp._messages(1, {"stream": True}, ""))),
    "messages-thinking": ("messages", lambda: typed(messages_thinking())),
    "messages-empty": ("messages", lambda: typed(messages_only_empty_text())),
    "messages-untyped": ("messages", messages_untyped),
    "responses": ("responses", lambda: b"".join(perf.responses_stream(200))),
    "responses-fake": ("responses", lambda: fake_reply(fp._responses(1, {"stream": True}, ""))),
    "responses-rich": ("responses", lambda: typed(responses_rich())),
    "responses-final": ("responses", lambda: typed(responses_final_only())),
    "responses-incomplete": ("responses",
                             lambda: typed(responses_final_only("response.incomplete"))),
    "responses-failed": ("responses", lambda: typed(responses_final_only("response.failed"))),
    "responses-empty-delta": ("responses", lambda: typed(responses_empty_delta())),
    "gemini-sse": ("stream_generate_content",
                   lambda: gemini_body(gemini_chunks(), as_sse=True)),
    "gemini-array": ("stream_generate_content",
                     lambda: gemini_body(gemini_chunks(), as_sse=False)),
    "gemini-alt-sse": ("generate_content", lambda: b"".join(sse(c) for c in gemini_chunks())),
    "invoke": ("invoke", invoke_body),
    "converse": ("converse", converse_body),
    "converse-fake": ("converse", lambda: fake_reply(
        fp.bedrock_reply(1, "amazon.nova-pro-v1:0", "converse-stream", {}))),
    "embeddings": ("embeddings", lambda: b"".join(perf.chat_stream(20))),
}


def parse(api: WireApi, body: bytes, *, flush: bool = True) -> list[RawEvent]:
    parser = api.stream_parser()
    events = parser.feed_raw(body)
    return events + parser.flush_raw() if flush else events


def decoded(events: list[RawEvent]) -> list[SSEEvent]:
    """What the tap used to keep, as the end of the stream decoded it."""
    return [SSEEvent(name, data.decode("utf-8", "replace")) for name, data, _ in events]


def collecting(api: WireApi):
    acc = api.accumulator()
    acc.collect_text()
    return acc


# -- the same text on every path --------------------------------------------------------------


@pytest.mark.parametrize("name", list(STREAMS))
def test_every_path_assembles_what_the_old_re_parse_did(name: str, hits: list) -> None:
    route, build = STREAMS[name]
    api = wire_api(route)
    assert api is not None
    body = build()
    raw = parse(api, body)
    events = decoded(raw)
    assert len(events) > 1
    expected = ORACLE[route](events)
    if route != "embeddings":
        assert expected, "a fixture without output text proves little"

    assert api.assembled_text(events) == expected  # the one definition, for viewers

    batch = collecting(api)
    batch.feed_raw(raw)
    assert batch.assembled() == expected
    one_by_one = collecting(api)
    for event in raw:
        one_by_one.feed_raw([event])
    assert one_by_one.assembled() == expected
    assert not batch.text_truncated

    for size in (1, 7, 4096, len(body)):
        tap = StreamTap(api, None, keep_events=True)
        for i in range(0, len(body), size):
            assert tap(body[i:i + size]) == body[i:i + size]
        tap(b"")
        assert tap.parse_error is None
        assert tap.kept == expected
        texts = output.texts(api, tap, tap.summary, None)
        assert [text for _, text in texts[:len(expected)]] == list(expected.values())


def test_shortcuts_carry_the_text_they_skip(hits: list) -> None:
    """The fixtures above do take shortcuts (text, thinking), so the paths above compare them."""
    for route, body in (("chat", chat_reasoning()), ("messages", typed(messages_thinking())),
                        ("invoke", invoke_body())):
        api = wire_api(route)
        hits.clear()
        acc = collecting(api)
        acc.feed_raw(parse(api, body))
        assert acc.assembled() == ORACLE[route](decoded(parse(api, body)))
        assert len(hits) > 8, route
    # Anthropic's thinking pieces are among them, and land under "thinking".
    hits.clear()
    acc = collecting(wire_api("messages"))
    acc.feed_raw(parse(wire_api("messages"), typed(messages_thinking())))
    assert set(WORDS[2:]) <= set(hits)
    assert acc.assembled()["thinking"] == "".join(WORDS)


def test_chat_text_beside_reasoning_is_not_shortcut(hits: list) -> None:
    # A template with reasoning beside an empty text must not swallow the next reasoning piece.
    chunks = [chat_chunk([delta({"content": "", "reasoning_content": w})]) for w in ("a", "a")]
    api = wire_api("chat")
    raw = parse(api, b"".join(sse(c) for c in chunks))
    acc = collecting(api)
    acc.feed_raw(raw)
    assert acc.assembled() == {"thinking": "aa"} == old_chat(decoded(raw))
    assert hits == []


@pytest.mark.parametrize("name", list(STREAMS))
def test_streams_cut_off_mid_way(name: str) -> None:
    route, build = STREAMS[name]
    api = wire_api(route)
    body = build()
    raw = parse(api, body)
    step = max(1, len(raw) // 40)
    for k in range(0, len(raw) + 1, step):
        acc = collecting(api)
        acc.feed_raw(raw[:k])
        assert acc.assembled() == ORACLE[route](decoded(raw[:k])), k
    # Cut inside the bytes (a broken stream never ends): what arrived whole is assembled.
    for cut in range(0, len(body), max(1, len(body) // 25)):
        tap = StreamTap(api, None, keep_events=True)
        tap(body[:cut])
        assert tap.kept == ORACLE[route](decoded(parse(api, body[:cut], flush=False))), cut


# -- odd shapes ------------------------------------------------------------------------------

WEIRD_VALUES = [None, [], {}, "", "s", 7, True, [1], {"a": []}, {"type": "output_text"}]
TEMPLATES: dict[str, list[tuple[str | None, dict]]] = {
    "chat": [(None, chat_chunk([delta({"content": "x", "reasoning_content": "r",
                                       "reasoning": "q", "refusal": "n"}, 1)]))],
    "messages": [("content_block_delta", block_delta(1, "text_delta", "text", "t")),
                 ("content_block_delta", block_delta(2, "thinking_delta", "thinking", "h"))],
    "responses": [("response.output_text.delta", responses_rich()[20]),
                  ("response.refusal.delta", responses_rich()[-9]),
                  ("response.completed", responses_rich()[-1]),
                  ("response.incomplete", responses_final_only("response.incomplete")[2])],
    "stream_generate_content": [(None, gemini_chunks()[12]), (None, gemini_chunks()[-3])],
    "converse": [("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "t"}}),
                 ("contentBlockDelta", {"contentBlockIndex": 1,
                                        "delta": {"reasoningContent": {"text": "r"}}})],
}


def variants(obj: object, weird: object):
    yield weird
    if isinstance(obj, dict):
        for key, value in obj.items():
            for v in variants(value, weird):
                yield {**obj, key: v}
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            for v in variants(value, weird):
                yield [*obj[:i], v, *obj[i + 1:]]


@pytest.mark.parametrize("route", list(TEMPLATES))
def test_wrongly_typed_fields_assemble_as_before(route: str) -> None:
    api = wire_api(route)
    everything: list[SSEEvent] = []
    for name, template in TEMPLATES[route]:
        for weird in WEIRD_VALUES:
            for variant in variants(template, weird):
                for event_name in (name, None, "error"):
                    event = SSEEvent(event_name, json.dumps(variant))
                    everything.append(event)
                    assert api.assembled_text([event]) == ORACLE[route]([event]), variant
    assert api.assembled_text(everything) == ORACLE[route](everything)
    acc = collecting(api)
    acc.feed_raw([(e.event, e.data.encode(), None) for e in everything])
    assert acc.assembled() == ORACLE[route](everything)


# -- what it costs and holds -------------------------------------------------------------------


def test_off_by_default() -> None:
    for route in ORACLE:
        acc = wire_api(route).accumulator()
        assert acc._assembly is None and acc.assembled() == {} and not acc.text_truncated
    tap = StreamTap(wire_api("messages"), None)
    tap(typed(messages_thinking()))
    assert tap.kept is None and tap._accumulator._assembly is None


def test_the_assembly_is_bounded() -> None:
    assembly = TextAssembly(10)
    assembly.add(("text", 0), "abcd")
    assembly.add(("thinking", 0), "efgh")
    assembly.add(("text", 1), "ijkl")  # crosses the limit: cut
    assembly.add(("text", 2), "mnop")  # past it: dropped, no block opened
    assembly.add(("text", 3), "")
    assert assembly.truncated
    assert assembly.assembled() == {"text": "abcd\nij", "thinking": "efgh"}
    exact = TextAssembly(4)
    exact.add(("text", 0), "abcd")
    assert not exact.truncated and exact.assembled() == {"text": "abcd"}
    exact.add(("text", 0), "e")
    assert exact.truncated and exact.assembled() == {"text": "abcd"}


def test_a_huge_stream_keeps_the_first_characters_only() -> None:
    piece = "ab" * (1 << 19)  # 1 Mi characters per event
    events = [MESSAGE_START, *(block_delta(0, "text_delta", "text", piece) for _ in range(5)),
              {"type": "message_stop"}]
    tap = StreamTap(wire_api("messages"), None, keep_events=True)
    tap(typed(events))
    tap(b"")
    assert tap._accumulator.text_truncated
    assert tap.kept == {"text": (piece * 5)[:MAX_OUTPUT_CHARS]}
    assert tap.summary.text_chars == 5 * len(piece)  # the summary still counts it all


def test_the_socket_session_assembles_responses_frames() -> None:
    api = wire_api("responses")
    answers = [fp.responses_events(1, {}), responses_rich(), responses_final_only()[:3]]
    for keep in (True, False):
        session = SocketSession(api, "openai", "openai", "/v1/responses", Actor("alice", {}),
                                CredentialInfo(CredentialKind.CENTRALIZED, "sk-a...bcde", 30),
                                ClientInfo("codex", None), None, ("127.0.0.1", 1),
                                keep_output=keep)
        for frames in answers:  # one after the other on the same socket
            assert session.client_frame(json.dumps({"type": "response.create", "model": "m"}))
            done = [d for f in frames if (d := session.server_frame(json.dumps(f)))]
            assert len(done) == 1
            if not keep:
                assert done[0].output is None
                continue
            expected = old_responses([SSEEvent(f["type"], json.dumps(f)) for f in frames])
            assert expected and done[0].output == expected
            found = output.stream_texts(done[0].output, done[0].summary)
            assert [text for _, text in found][:len(expected)] == list(expected.values())


def test_invoke_text_comes_out_of_its_base64_chunks() -> None:
    tap = StreamTap(wire_api("invoke"), None, keep_events=True)
    tap(invoke_body())
    tap(b"")
    assert tap.kept == {"text": "".join(WORDS) + "\n" + "".join(reversed(WORDS)),
                        "thinking": "".join(WORDS)}
