"""AWS event-stream framing (`application/vnd.amazon.eventstream`), the binary stream format of
Amazon Bedrock's streaming routes.

Each message is a prelude (total length, headers length, CRC32), typed headers (`:message-type`
`event` or `exception`, `:event-type`, `:exception-type`, `:content-type`), a payload and a CRC32
of everything before it. Decoding is botocore's (`EventStreamBuffer`: incremental, checksums
verified, payloads capped at 24 MiB); the encoder below writes the same frames, for the event
that ends a broken stream and for tests.

`EventStreamParser` has the shape of `sse.SSEParser` as the stream tap uses it (`feed_raw`,
`flush_raw`, `overflowed`), and yields the same `RawEvent` tuples: each wire API turns a message
into the (name, JSON bytes) its accumulator reads, so the accumulators do not care which framing
carried their events.
"""

from __future__ import annotations

import json
import struct
from binascii import crc32
from collections.abc import Callable, Mapping

from botocore.eventstream import EventStreamBuffer

from aibridge.sse import RawEvent

CONTENT_TYPE = "application/vnd.amazon.eventstream"

# A message's headers (names to str, int, bool or bytes values) and payload -> the event an
# accumulator reads, or None for a message that carries nothing for it.
ToEvent = Callable[[Mapping[str, object], bytes], RawEvent | None]


class EventStreamParser:
    """Feed bytes, get the events of the complete messages back (see the module docstring)."""

    overflowed = False  # botocore refuses an over-long message instead (the tap then stops)

    def __init__(self, to_event: ToEvent) -> None:
        self._buffer = EventStreamBuffer()
        self._to_event = to_event

    def feed_raw(self, data: bytes) -> list[RawEvent]:
        self._buffer.add_data(data)
        events: list[RawEvent] = []
        for message in self._buffer:
            event = self._to_event(message.headers, message.payload)
            if event is not None:
                events.append(event)
        return events

    def flush_raw(self) -> list[RawEvent]:
        return []  # a partial message at the end is not a message


def exception_event(headers: Mapping[str, object], payload: bytes) -> RawEvent | None:
    """An `exception` (or `error`) message as the Anthropic-style error event the accumulators
    know: `{"type": "error", "error": {"type": <exception type>, "message": ...}}`."""
    kind = headers.get(":message-type")
    if kind not in ("exception", "error"):
        return None
    name = headers.get(":exception-type") or headers.get(":error-code") or "exception"
    message: object = headers.get(":error-message")
    try:
        doc = json.loads(payload) if payload else {}
    except ValueError:
        doc = {}
    if isinstance(doc, dict):
        message = doc.get("message") or doc.get("Message") or message
    error = {"type": str(name), "message": str(message or name)}
    return "error", json.dumps({"type": "error", "error": error}).encode(), None


# -- writing ---------------------------------------------------------------------------------

_STRING = 7  # header value type: UTF-8 string


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (bytes([len(raw_name)]) + raw_name + bytes([_STRING])
            + struct.pack(">H", len(raw_value)) + raw_value)


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers."""
    head = b"".join(_header(name, value) for name, value in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack(">I", crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", crc32(message))


def event_message(event_type: str, payload: object) -> bytes:
    """An `event` message whose payload is JSON."""
    return encode_message({":event-type": event_type, ":content-type": "application/json",
                           ":message-type": "event"},
                          json.dumps(payload, separators=(",", ":")).encode())


def exception_message(exception_type: str, message: str) -> bytes:
    """An `exception` message, as Bedrock ends a stream that failed after it began."""
    return encode_message({":exception-type": exception_type,
                           ":content-type": "application/json",
                           ":message-type": "exception"},
                          json.dumps({"message": message}).encode())
