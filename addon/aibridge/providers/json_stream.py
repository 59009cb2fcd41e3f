"""Gemini's streamed answers, read incrementally whatever their framing.

`streamGenerateContent` answers with Server-Sent Events when asked with `alt=sse` (what the
Google SDKs and Gemini CLI ask for), and otherwise with one JSON array whose elements arrive as
they are generated (`[{...}\\n,\\r\\n{...}\\n]`). `GeminiStreamParser` decides from the first
byte that is not white space and then parses one or the other; `JsonArrayParser` yields each
top-level element as an event `(None, element bytes, None)`, as `SSEParser.feed_raw` yields an
SSE event's data, so one accumulator reads both.

The array is split by scanning for the characters that change the nesting (brackets, braces,
quotes, backslashes) with one compiled regex: elements are validated later by the JSON parser
that reads them, so the scanner only has to find where each one ends. An element longer than
`max_element` is dropped (`overflowed`), as the SSE parser drops an over-long line.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aibridge.sse import DEFAULT_MAX_LINE, RawEvent, SSEParser

_STRUCTURE = re.compile(rb'[\[\]{}"\\]')
_SPACE = b" \t\r\n"
# The scanner's places, outside an element: before the array, between elements, after it.
_START, _BETWEEN, _END = "start", "between", "end"


class JsonArrayParser:
    """Feed the bytes of a JSON array, get each complete top-level element back."""

    def __init__(self, max_element: int = DEFAULT_MAX_LINE) -> None:
        self.max_element = max_element
        self.overflowed = False
        self._place = _START  # where the scanner is when not inside an element
        self._depth = 0  # nesting inside the current element (0: not in one)
        self._in_string = False
        self._escaped = False  # the previous byte inside a string was an unescaped backslash
        self._element = bytearray()  # the current element so far
        self._dropping = False  # the current element went over max_element
        self.elements = 0  # complete elements seen

    def feed_raw(self, data: bytes) -> list[RawEvent]:
        events: list[RawEvent] = []
        pos, size = 0, len(data)
        while pos < size:
            if self._depth == 0:
                pos = self._outside(data, pos, events)
                continue
            pos = self._inside(data, pos, events)
        return events

    def flush_raw(self) -> list[RawEvent]:
        """End of the body: an element cut off is not an element."""
        self._element.clear()
        return []

    def error_tail(self, body: dict[str, Any]) -> bytes:
        """Bytes that end the array with `body` as its last element, where it was cut: after a
        complete element, or before the first. Inside an element nothing can make the JSON
        whole again, and nothing is added."""
        data = json.dumps(body, separators=(",", ":")).encode()
        if self._depth or self._place == _END:
            return b""
        if self._place == _START:
            return b"[" + data + b"]\n"
        return b"," + data + b"]\n" if self.elements else data + b"]\n"

    # -- scanning ---------------------------------------------------------------------------

    def _outside(self, data: bytes, pos: int, events: list[RawEvent]) -> int:
        """Between elements: skip white space and the array's own punctuation."""
        byte = data[pos]
        if byte in _SPACE:
            return pos + 1
        if self._place == _START:
            if byte == 0x5B:  # [
                self._place = _BETWEEN
                return pos + 1
            self._place = _BETWEEN  # not an array after all: read elements as they come
        if byte == 0x2C:  # ,
            return pos + 1
        if byte == 0x5D:  # ]
            self._place = _END
            return pos + 1
        if self._place == _END:
            return len(data)  # after the array: nothing more is an element
        # An element starts: an object or array nests; a bare scalar (never sent by Gemini)
        # is taken up to its end within this chunk.
        if byte in (0x7B, 0x5B):  # { [
            self._depth = 1
            self._start_element(data[pos:pos + 1])
            return pos + 1
        end = pos
        while end < len(data) and data[end] not in b",]" and data[end] not in _SPACE:
            end += 1
        events.append((None, data[pos:end], None))
        self.elements += 1
        return end

    def _inside(self, data: bytes, pos: int, events: list[RawEvent]) -> int:
        """Inside an element: find where it ends (or where this chunk does)."""
        start = pos
        if self._escaped:  # a backslash ended the previous chunk: this byte is escaped
            self._escaped = False
            pos += 1
        search = _STRUCTURE.search
        while (match := search(data, pos)) is not None:
            at = match.start()
            char = data[at]
            pos = at + 1
            if self._in_string:
                if char == 0x5C:  # a backslash: the next byte is escaped, whatever it is
                    if pos >= len(data):
                        self._escaped = True
                    pos += 1
                elif char == 0x22:  # "
                    self._in_string = False
            elif char == 0x22:
                self._in_string = True
            elif char in (0x7B, 0x5B):  # { [
                self._depth += 1
            elif char in (0x7D, 0x5D):  # } ]
                self._depth -= 1
                if self._depth == 0:
                    self._append(data[start:pos])
                    self._end_element(events)
                    return pos
        self._append(data[start:])
        return len(data)

    def _start_element(self, first: bytes) -> None:
        self._element.clear()
        self._dropping = False
        self._in_string = self._escaped = False
        self._append(first)

    def _append(self, piece: bytes) -> None:
        if self._dropping:
            return
        if len(self._element) + len(piece) > self.max_element:
            self._dropping = True
            self.overflowed = True
            self._element.clear()
            return
        self._element += piece

    def _end_element(self, events: list[RawEvent]) -> None:
        if not self._dropping:
            events.append((None, bytes(self._element), None))
        self._element.clear()
        self._dropping = False
        self.elements += 1


class GeminiStreamParser:
    """SSE or a JSON array, whichever the stream turns out to be (see the module docstring)."""

    def __init__(self) -> None:
        self._parser: SSEParser | JsonArrayParser | None = None
        self._pending = b""  # white space before the first telling byte

    @property
    def overflowed(self) -> bool:
        return self._parser.overflowed if self._parser is not None else False

    def feed_raw(self, data: bytes) -> list[RawEvent]:
        if self._parser is None:
            data = self._pending + data
            stripped = data.lstrip(_SPACE)
            if not stripped:
                self._pending = data[-64:]  # white space only, so far
                return []
            self._pending = b""
            self._parser = JsonArrayParser() if stripped[:1] in (b"[", b"{") else SSEParser()
        return self._parser.feed_raw(data)

    def flush_raw(self) -> list[RawEvent]:
        return self._parser.flush_raw() if self._parser is not None else []

    def error_tail(self, body: dict[str, Any]) -> bytes | None:
        """The JSON array's own tail; None for SSE (the API's tail applies)."""
        if isinstance(self._parser, JsonArrayParser):
            return self._parser.error_tail(body)
        return None
