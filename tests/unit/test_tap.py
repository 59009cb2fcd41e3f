"""The tap end to end: realistic wire streams, any chunking, any encoding."""

import gzip
import json
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard

from aibridge.providers.catalog import wire_api
from aibridge.streaming.tap import StreamTap
from aibridge.summary import ToolCall


def frame(event: str | None, data: object) -> str:
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


def anthropic_frame(obj: dict) -> str:
    return frame(obj["type"], obj)


def block_delta(index: int, delta: dict) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": delta}


ANTHROPIC_TEXT = ["Let me check the weather in ", "Zürich — ☀️?"]
ANTHROPIC_STREAM = "".join(
    [
        anthropic_frame(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 472,
                        "cache_creation_input_tokens": 1024,
                        "cache_read_input_tokens": 2048,
                        "cache_creation": {
                            "ephemeral_5m_input_tokens": 1024,
                            "ephemeral_1h_input_tokens": 0,
                        },
                        "output_tokens": 2,
                        "service_tier": "standard",
                    },
                },
            }
        ),
        anthropic_frame(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        ),
        frame("ping", '{"type": "ping"}'),
        anthropic_frame(block_delta(0, {"type": "thinking_delta", "thinking": "Weather → tool."})),
        anthropic_frame(block_delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM"})),
        anthropic_frame({"type": "content_block_stop", "index": 0}),
        anthropic_frame(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        *(
            anthropic_frame(block_delta(1, {"type": "text_delta", "text": t}))
            for t in ANTHROPIC_TEXT
        ),
        anthropic_frame({"type": "content_block_stop", "index": 1}),
        anthropic_frame(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "name": "get_weather",
                    "input": {},
                },
            }
        ),
        *(
            anthropic_frame(block_delta(2, {"type": "input_json_delta", "partial_json": p}))
            for p in ["", '{"location": "Zür', 'ich", "unit": "celsius"}']
        ),
        anthropic_frame({"type": "content_block_stop", "index": 2}),
        anthropic_frame(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89},
            }
        ),
        anthropic_frame({"type": "message_stop"}),
    ]
)


def chat_chunk(choices: list, usage: dict | None = None) -> str:
    return frame(
        None,
        {
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion.chunk",
            "created": 1741570283,
            "model": "gpt-4o-2024-08-06",
            "service_tier": "default",
            "system_fingerprint": "fp_eb9dce56a8",
            "choices": choices,
            "usage": usage,
        },
    )


def chat_delta(delta: dict, finish_reason: str | None = None) -> list:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]


def tool_delta(index: int, arguments: str, call_id: str = "", name: str = "") -> dict:
    call: dict = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
    return {"tool_calls": [call]}


CHAT_STREAM = "".join(
    [
        chat_chunk(chat_delta({"role": "assistant", "content": "", "refusal": None})),
        chat_chunk(chat_delta({"content": "I'll "})),
        chat_chunk(chat_delta({"content": "look that up…"})),
        chat_chunk(chat_delta(tool_delta(0, "", "call_abc", "get_weather"))),
        chat_chunk(chat_delta(tool_delta(0, '{"loc'))),
        chat_chunk(chat_delta(tool_delta(0, 'ation": "Paris"}'))),
        chat_chunk(chat_delta(tool_delta(1, "", "call_def", "get_time"))),
        chat_chunk(chat_delta(tool_delta(1, '{"tz": "CET"}'))),
        chat_chunk(chat_delta({}, "tool_calls")),
        chat_chunk(
            [],
            {
                "prompt_tokens": 82,
                "completion_tokens": 41,
                "total_tokens": 123,
                "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 12,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
        ),
        frame(None, "[DONE]"),
    ]
)


def responses_frame(seq: int, obj: dict) -> str:
    return frame(obj["type"], {**obj, "sequence_number": seq})


RESP_ID = "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654"
RESP_BASE = {
    "id": RESP_ID,
    "object": "response",
    "created_at": 1741290958,
    "model": "gpt-4.1-2025-04-14",
    "error": None,
    "incomplete_details": None,
    "parallel_tool_calls": True,
}
RESP_MESSAGE = {
    "id": "msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Checking now.", "annotations": []}],
}
RESP_CALL = {
    "id": "fc_12345xyz",
    "type": "function_call",
    "status": "completed",
    "arguments": '{"location":"Paris, France"}',
    "call_id": "call_12345xyz",
    "name": "get_weather",
}
RESPONSES_EVENTS = [
    {
        "type": "response.created",
        "response": {**RESP_BASE, "status": "in_progress", "output": [], "usage": None},
    },
    {
        "type": "response.in_progress",
        "response": {**RESP_BASE, "status": "in_progress", "output": [], "usage": None},
    },
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**RESP_MESSAGE, "status": "in_progress", "content": []},
    },
    {
        "type": "response.content_part.added",
        "item_id": RESP_MESSAGE["id"],
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    *(
        {
            "type": "response.output_text.delta",
            "item_id": RESP_MESSAGE["id"],
            "output_index": 0,
            "content_index": 0,
            "delta": d,
        }
        for d in ["Checking", " now."]
    ),
    {
        "type": "response.output_text.done",
        "item_id": RESP_MESSAGE["id"],
        "output_index": 0,
        "content_index": 0,
        "text": "Checking now.",
    },
    {"type": "response.output_item.done", "output_index": 0, "item": RESP_MESSAGE},
    {
        "type": "response.output_item.added",
        "output_index": 1,
        "item": {**RESP_CALL, "status": "in_progress", "arguments": ""},
    },
    *(
        {
            "type": "response.function_call_arguments.delta",
            "item_id": RESP_CALL["id"],
            "output_index": 1,
            "delta": d,
        }
        for d in ['{"location":', '"Paris, France"}']
    ),
    {
        "type": "response.function_call_arguments.done",
        "item_id": RESP_CALL["id"],
        "output_index": 1,
        "arguments": RESP_CALL["arguments"],
    },
    {"type": "response.output_item.done", "output_index": 1, "item": RESP_CALL},
    {
        "type": "response.completed",
        "response": {
            **RESP_BASE,
            "status": "completed",
            "output": [RESP_MESSAGE, RESP_CALL],
            "usage": {
                "input_tokens": 300,
                "input_tokens_details": {"cached_tokens": 128},
                "output_tokens": 60,
                "output_tokens_details": {"reasoning_tokens": 20},
                "total_tokens": 360,
            },
        },
    },
]
RESPONSES_STREAM = "".join(responses_frame(i, e) for i, e in enumerate(RESPONSES_EVENTS))

STREAMS = {
    "messages": ANTHROPIC_STREAM.encode(),
    "chat": CHAT_STREAM.encode(),
    "responses": RESPONSES_STREAM.encode(),
}


def check_messages(tap: StreamTap) -> None:
    s = tap.summary
    assert (s.model, s.response_id) == (
        "claude-sonnet-4-5-20250929",
        "msg_01XFDUDYJgAACzvnptvVoYEL",
    )
    assert (s.input_tokens, s.cache_write_tokens, s.cache_read_tokens) == (472, 1024, 2048)
    assert s.output_tokens == 89  # message_start's 2 is not added to the cumulative 89
    assert s.extra_tokens == {"cache_ephemeral_5m_input": 1024}
    assert s.tool_calls == [
        ToolCall(
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "get_weather",
            '{"location": "Zürich", "unit": "celsius"}',
        )
    ]
    assert (s.stop_reason, s.completed, s.error) == ("tool_use", True, None)
    assert s.text_chars == sum(len(t) for t in ANTHROPIC_TEXT)
    assert s.events == 17


def check_chat(tap: StreamTap) -> None:
    s = tap.summary
    assert (s.model, s.response_id) == (
        "gpt-4o-2024-08-06",
        "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    )
    assert (s.input_tokens, s.output_tokens, s.cache_read_tokens, s.cache_write_tokens) == (
        82,
        41,
        64,
        0,
    )
    assert s.extra_tokens == {"completion_reasoning": 12}
    assert s.tool_calls == [
        ToolCall("call_abc", "get_weather", '{"location": "Paris"}'),
        ToolCall("call_def", "get_time", '{"tz": "CET"}'),
    ]
    assert (s.stop_reason, s.completed, s.error) == ("tool_calls", True, None)
    assert s.text_chars == len("I'll look that up…")
    assert s.events == 11


def check_responses(tap: StreamTap) -> None:
    s = tap.summary
    assert (s.model, s.response_id) == ("gpt-4.1-2025-04-14", RESP_ID)
    assert (s.input_tokens, s.output_tokens, s.cache_read_tokens) == (300, 60, 128)
    assert s.extra_tokens == {"output_reasoning": 20}
    assert s.tool_calls == [
        ToolCall("call_12345xyz", "get_weather", '{"location":"Paris, France"}')
    ]
    assert (s.stop_reason, s.completed, s.error) == ("completed", True, None)
    assert s.text_chars == len("Checking now.")
    assert s.events == len(RESPONSES_EVENTS)


CHECKS: dict[str, Callable[[StreamTap], None]] = {
    "messages": check_messages,
    "chat": check_chat,
    "responses": check_responses,
}


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


ENCODERS: dict[str | None, Callable[[bytes], bytes]] = {
    None: lambda b: b,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


def run(tap: StreamTap, body: bytes, size: int, *, end: bool = True) -> None:
    for i in range(0, len(body), size):
        chunk = body[i : i + size]
        assert tap(chunk) is chunk
    if end:
        end_marker = b""
        assert tap(end_marker) is end_marker


@pytest.mark.parametrize("route", sorted(STREAMS))
@pytest.mark.parametrize("size", [1, 7, 1 << 20])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_plain_streams(route: str, size: int, eol: str) -> None:
    body = STREAMS[route].replace(b"\n", eol.encode())
    tap = StreamTap(wire_api(route), None)
    run(tap, body, size)
    CHECKS[route](tap)
    assert (tap.ended, tap.parse_error, tap.bad_events, tap.bytes_seen) == (
        True,
        None,
        0,
        len(body),
    )
    assert tap.first_chunk_at is not None and tap.first_token_at is not None
    assert tap.first_chunk_at <= tap.first_token_at


@pytest.mark.parametrize("route", sorted(STREAMS))
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_compressed_streams(route: str, encoding: str, size: int) -> None:
    body = ENCODERS[encoding](STREAMS[route].replace(b"\n", b"\r\n"))
    tap = StreamTap(wire_api(route), encoding)
    run(tap, body, size)
    CHECKS[route](tap)
    assert tap.parse_error is None
    assert tap.bytes_seen == len(body)


def test_raw_deflate_stream() -> None:
    tap = StreamTap(wire_api("chat"), "deflate")
    run(tap, raw_deflate(STREAMS["chat"]), 5)
    check_chat(tap)


@pytest.mark.parametrize("route", sorted(STREAMS))
def test_truncated_stream_is_not_ended_or_completed(route: str) -> None:
    plain = STREAMS[route]
    gz = zlib.compressobj(wbits=31)  # gzip, flushed mid-stream like a server would
    body = gz.compress(plain[: len(plain) // 2]) + gz.flush(zlib.Z_SYNC_FLUSH)
    tap = StreamTap(wire_api(route), "gzip")
    run(tap, body, 7, end=False)
    assert (tap.ended, tap.summary.completed, tap.parse_error) == (False, False, None)
    assert tap.summary.events > 0


def test_truncated_tool_call_keeps_partial_arguments() -> None:
    body = STREAMS["messages"]
    cut = body.index(b"celsius")
    tap = StreamTap(wire_api("messages"), None)
    run(tap, body[:cut], 64, end=False)
    assert tap.summary.tool_calls[0].arguments == '{"location": "Zür'
    assert tap.summary.output_tokens == 2  # only message_start's count so far


def test_mid_stream_anthropic_error() -> None:
    body = STREAMS["messages"]
    body = body[: body.index(b"event: content_block_start")] + (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\n\n'
    )
    tap = StreamTap(wire_api("messages"), None)
    run(tap, body, 7)
    s = tap.summary
    assert (s.error, s.error_type, s.completed, tap.ended) == (
        "Overloaded",
        "overloaded_error",
        False,
        True,
    )


def test_mid_stream_chat_error_before_done() -> None:
    body = (
        chat_chunk(chat_delta({"content": "Hi"}))
        + frame(
            None,
            {
                "error": {
                    "message": "Internal error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        )
        + frame(None, "[DONE]")
    ).encode()
    tap = StreamTap(wire_api("chat"), None)
    run(tap, body, 3)
    assert (tap.summary.error, tap.summary.text_chars) == ("Internal error", 2)


def test_final_event_without_blank_line_is_read_at_end() -> None:
    body = STREAMS["messages"].rstrip(b"\n")
    tap = StreamTap(wire_api("messages"), None)
    run(tap, body, 7, end=False)
    assert not tap.summary.completed
    tap(b"")
    assert tap.summary.completed


def test_end_marker_handled_once() -> None:
    tap = StreamTap(wire_api("chat"), None)
    run(tap, b"data: [DONE]", 100)
    tap(b"")
    assert (tap.ended, tap.summary.events) == (True, 1)


def test_malformed_event_does_not_stop_parsing() -> None:
    body = b"data: {broken\n\n" + STREAMS["chat"]
    tap = StreamTap(wire_api("chat"), None)
    run(tap, body, 7)
    assert (tap.bad_events, tap.parse_error) == (1, None)
    assert tap.summary.tool_calls[1].name == "get_time"


def test_unknown_encoding_passes_bytes_without_parsing() -> None:
    tap = StreamTap(wire_api("chat"), "compress")
    body = STREAMS["chat"]
    run(tap, body, 100)
    assert tap.parse_error is not None and "compress" in tap.parse_error
    assert (tap.summary.events, tap.bytes_seen, tap.ended) == (0, len(body), True)


def test_corrupt_body_switches_to_pass_through() -> None:
    tap = StreamTap(wire_api("chat"), "gzip")
    chunks = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00", b"\xff" * 32, b"more", b""]
    for chunk in chunks:
        assert tap(chunk) is chunk
    assert tap.parse_error is not None and tap.parse_error.startswith("error")
    assert tap.ended


def test_parser_bug_never_breaks_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    tap = StreamTap(wire_api("messages"), None)
    calls = []

    def boom(events: object) -> None:
        calls.append(events)
        raise KeyError("bug")

    monkeypatch.setattr(tap, "_feed_events", boom)
    run(tap, STREAMS["messages"], 50)
    assert tap.parse_error == "KeyError: 'bug'"
    assert len(calls) == 1  # parsing stopped at the first failure; bytes kept flowing
    assert tap.bytes_seen == len(STREAMS["messages"])


def test_on_first_chunk_called_once_and_may_fail() -> None:
    calls = []

    def callback() -> None:
        calls.append(1)
        raise RuntimeError("observer bug")

    tap = StreamTap(wire_api("chat"), None, on_first_chunk=callback)
    assert tap(b"") == b"" and calls == []  # an empty body has no first chunk
    tap = StreamTap(wire_api("chat"), None, on_first_chunk=callback)
    run(tap, STREAMS["chat"], 7)
    assert calls == [1]
    assert tap.first_chunk_at is not None and tap.parse_error is None
    check_chat(tap)


def test_unknown_route_has_no_wire_api_to_tap() -> None:
    assert wire_api("completions") is None


def test_summary_to_dict_is_json() -> None:
    tap = StreamTap(wire_api("messages"), None)
    run(tap, STREAMS["messages"], 1 << 20)
    d = json.loads(json.dumps(tap.summary.to_dict()))
    assert d["tool_calls"][0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert d["completed"] is True


@pytest.mark.parametrize("route", sorted(STREAMS))
def test_chunks_after_the_first_token_are_read_in_batches_yet_every_read_is_current(
        route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first token the tap puts chunks aside and reads them a few dozen at a time;
    the first token's time is taken when it arrives, and whatever reads the tap (summary,
    output, error tail) sees every chunk passed so far."""
    body = STREAMS[route]
    chunks = [body[i:i + 3] for i in range(0, len(body), 3)]
    half = len(chunks) // 2
    batched = StreamTap(wire_api(route), None, keep_events=True)
    clock = iter(range(10_000))
    monkeypatch.setattr("aibridge.providers.stream.time.monotonic", lambda: next(clock))
    for chunk in chunks[:half]:
        assert batched(chunk) is chunk  # every chunk goes on at once, unchanged
    first_token = batched.first_token_at
    assert first_token is not None and batched._pending  # some chunks wait to be read
    eager = StreamTap(wire_api(route), None, keep_events=True)
    for chunk in chunks[:half]:
        eager._read(chunk)
    assert batched.summary == eager.summary and batched.kept == eager.kept
    assert not batched._pending
    for chunk in chunks[half:]:
        batched(chunk)
    batched(b"")
    CHECKS[route](batched)
    assert batched.first_token_at == first_token


@pytest.mark.parametrize("route", sorted(STREAMS))
def test_chunks_put_aside_stay_under_the_read_threshold(
        route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long stream is read whenever READ_AFTER bytes piled up, so what waits stays bounded,
    and the summary is the same as with everything read at once."""
    monkeypatch.setattr("aibridge.streaming.tap.READ_AFTER", 64)
    body = STREAMS[route]
    chunks = [body[i:i + 5] for i in range(0, len(body), 5)]
    tap = StreamTap(wire_api(route), None, keep_events=True)
    largest = 0
    for chunk in chunks:
        tap(chunk)
        largest = max(largest, sum(map(len, tap._pending)))
    assert 0 < largest < 64 + 5
    tap(b"")
    CHECKS[route](tap)
