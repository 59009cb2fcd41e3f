"""Realistic long streams for the tap's fast paths, and a micro-benchmark.

The tests check that the fast paths (whole-frame SSE parsing, jiter, the repeated-shape
shortcut) give exactly what plain per-event parsing gives; they never time anything.
Timing: `.venv/bin/python -m tests.unit.test_tap_perf` prints µs per event for each route
with one event per chunk and with 16 KiB chunks.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections.abc import Callable

import pytest

from aibridge.providers.catalog import wire_api
from aibridge.sse import SSEParser
from aibridge.streaming.tap import StreamTap

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "—",
    "naïve",
    "café",
    "☀️",
    '"quoted"',
    "a\\b",
    "x\ny",
    "{}",
]


def _sse(obj: dict, event: str | None = None) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return ((f"event: {event}\n" if event else "") + f"data: {data}\n\n").encode()


def chat_stream(n: int = 500, *, padding: bool = True) -> list[bytes]:
    """OpenAI chat: role chunk, text, two tool calls, finish, usage, [DONE]."""
    base = {
        "id": "chatcmpl-CAx1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_x",
        "usage": None,
    }

    def chunk(i: int, delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        extra = {"obfuscation": "aZ09xY"[: i % 7]} if padding else {}
        return _sse({**base, "choices": [choice], **extra})

    def tool(i: int, index: int, arguments: str, first: bool = False) -> bytes:
        call: dict = {"index": index, "function": {"arguments": arguments}}
        if first:
            call |= {"id": f"call_{index}", "type": "function"}
            call["function"]["name"] = f"tool_{index}"
        return chunk(i, {"tool_calls": [call]})

    texts = n - 30
    events = [chunk(0, {"role": "assistant", "content": "", "refusal": None})]
    events += [chunk(i, {"content": " " + WORDS[i % len(WORDS)]}) for i in range(texts)]
    for index in (0, 1):
        events.append(tool(0, index, "", first=True))
        events += [tool(i, index, f'"k{i}": "{WORDS[i % len(WORDS)]}", ') for i in range(12)]
    events.append(chunk(0, {}, "tool_calls"))
    usage = {"prompt_tokens": 14, "completion_tokens": n, "total_tokens": 14 + n}
    events.append(_sse({**base, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def messages_stream(n: int = 500) -> list[bytes]:
    """Anthropic Messages: thinking, text and a tool call, as the API frames them."""

    def sse(obj: dict) -> bytes:
        return _sse(obj, obj["type"])

    def delta(index: int, delta: dict) -> bytes:
        return sse({"type": "content_block_delta", "index": index, "delta": delta})

    message = {
        "id": "msg_01X",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 472, "cache_read_input_tokens": 100, "output_tokens": 2},
    }
    tool = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    thinking, tool_pieces = 20, 20
    texts = n - thinking - tool_pieces - 10
    events = [sse({"type": "message_start", "message": message})]
    events.append(sse({"type": "content_block_start", "index": 0, "content_block": {}}))
    events += [
        delta(0, {"type": "thinking_delta", "thinking": WORDS[i % len(WORDS)]})
        for i in range(thinking)
    ]
    events.append(sse({"type": "content_block_stop", "index": 0}))
    events.append(sse({"type": "ping"}))
    events += [
        delta(1, {"type": "text_delta", "text": " " + WORDS[i % len(WORDS)]}) for i in range(texts)
    ]
    events.append(sse({"type": "content_block_stop", "index": 1}))
    events.append(sse({"type": "content_block_start", "index": 2, "content_block": tool}))
    events += [
        delta(2, {"type": "input_json_delta", "partial_json": f'"k{i}": "{WORDS[i % 9]}", '})
        for i in range(tool_pieces)
    ]
    events.append(sse({"type": "content_block_stop", "index": 2}))
    usage = {"output_tokens": n}
    events.append(
        sse({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": usage})
    )
    events.append(sse({"type": "message_stop"}))
    return events


def responses_stream(n: int = 500) -> list[bytes]:
    """OpenAI Responses: lifecycle events, text deltas and the completed response."""
    seq = iter(range(1 << 30))

    def sse(obj: dict) -> bytes:
        return _sse({"type": obj["type"], "sequence_number": next(seq), **obj}, obj["type"])

    base = {"id": "resp_1", "object": "response", "model": "gpt-4.1", "status": "in_progress"}
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    texts = [" " + WORDS[i % len(WORDS)] for i in range(n - 6)]
    events = [
        sse({"type": "response.created", "response": {**base, "output": []}}),
        sse({"type": "response.output_item.added", "output_index": 0, "item": msg}),
    ]
    events += [
        sse(
            {
                "type": "response.output_text.delta",
                **where,
                "delta": t,
                "logprobs": [],
                "obfuscation": "xyz"[: i % 4],
            }
        )
        for i, t in enumerate(texts)
    ]
    text = "".join(texts)
    events.append(sse({"type": "response.output_text.done", **where, "text": text}))
    done = {**msg, "content": [{"type": "output_text", "text": text, "annotations": []}]}
    events.append(sse({"type": "response.output_item.done", "output_index": 0, "item": done}))
    usage = {"input_tokens": 30, "output_tokens": n, "output_tokens_details": {}}
    completed = {**base, "status": "completed", "output": [done], "usage": usage}
    events.append(sse({"type": "response.completed", "response": completed}))
    events.append(sse({"type": "response.in_progress", "response": base}))  # a straggler
    return events


STREAMS: dict[str, Callable[[], list[bytes]]] = {
    "chat": chat_stream,
    "messages": messages_stream,
    "responses": responses_stream,
}


def chunked(events: list[bytes], mode: str) -> list[bytes]:
    if mode == "1/chunk":
        return events
    body = b"".join(events)
    return [body[i : i + 16384] for i in range(0, len(body), 16384)]


def tap_over(route: str, chunks: list[bytes], encoding: str | None = None) -> StreamTap:
    tap = StreamTap(wire_api(route), encoding)
    for chunk in chunks:
        tap(chunk)
    tap(b"")
    return tap


def reference(route: str, body: bytes) -> tuple:
    """Plain per-event parsing: SSEEvents (str data) fed one by one."""
    parser = SSEParser()
    acc = wire_api(route).accumulator()
    for event in parser.feed(body) + parser.flush():
        acc.feed(event)
    return acc.summary.to_dict(), acc.bad_events, acc.first_token_at is None


@pytest.mark.parametrize("mode", ["1/chunk", "16KiB"])
@pytest.mark.parametrize("route", sorted(STREAMS))
def test_fast_paths_match_plain_parsing(route: str, mode: str) -> None:
    events = STREAMS[route]()
    tap = tap_over(route, chunked(events, mode))
    got = (tap.summary.to_dict(), tap.bad_events, tap.first_token_at is None)
    assert got == reference(route, b"".join(events))
    s = tap.summary
    assert (s.events, s.completed, tap.parse_error, tap.bad_events) == (len(events), True, None, 0)
    assert s.text_chars > 0 and s.model and s.response_id


def test_chat_without_padding_and_gzip() -> None:
    events = chat_stream(padding=False)
    body = b"".join(events)
    gz = gzip.compress(body)
    tap = tap_over("chat", [gz[i : i + 512] for i in range(0, len(gz), 512)], "gzip")
    assert (tap.summary.to_dict(), tap.bad_events, False) == reference("chat", body)
    assert [c.arguments[:8] for c in tap.summary.tool_calls] == ['"k0": "t', '"k0": "t']


# --- micro-benchmark -----------------------------------------------------------------


def bench(route: str, mode: str, reps: int = 50) -> float:
    """Best-of-`reps` µs per event for a tap over the route's stream."""
    events = STREAMS[route]()
    chunks = chunked(events, mode)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        tap_over(route, chunks)
        best = min(best, time.perf_counter() - start)
    return best / len(events) * 1e6


def main() -> int:
    for route in sorted(STREAMS):
        row = "  ".join(f"{mode} {bench(route, mode):5.2f}" for mode in ("1/chunk", "16KiB"))
        print(f"{route:10s} µs/event: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
