"""Incremental Server-Sent Events parsing and HTTP body decoding for the stream tap.

mitmproxy hands a stream callable the body *after* chunked de-framing but *before*
content-decoding, in arbitrary slices. `BodyDecoder` turns those slices into plain bytes
incrementally and `SSEParser` turns plain bytes into events per the WHATWG EventSource
rules, never holding more than one partial line (capped) between calls. The tap's path
(`SSEParser.feed_raw`) leaves event data as bytes, for the accumulator to read as is.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import brotli
import zstandard

DEFAULT_MAX_LINE = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SSEEvent:
    event: str | None  # None when the frame had no `event:` field (the spec's "message")
    data: str
    id: str | None = None  # the last event ID seen on the stream, as the spec tracks it


# What `SSEParser.feed_raw` returns per event: (event, data as undecoded UTF-8, id), as in
# SSEEvent. A plain tuple because the tap builds one per streamed token.
RawEvent = tuple[str | None, bytes, str | None]

_NAMES: dict[bytes, str | None] = {}  # decoded `event:` values; providers use a dozen or so
_MAX_NAMES = 256


def _name(value: bytes) -> str | None:
    name = _NAMES.get(value, _NAMES)
    if name is _NAMES:
        name = value.decode("utf-8", "replace") or None
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[value] = name
    return name  # type: ignore[return-value]


class SSEParser:
    """Feed bytes, get complete events back.

    Lines are split on bytes (`\\r\\n`, `\\r` or `\\n`), so multibyte UTF-8 characters split
    across chunks are only decoded once the whole line is present. A `\\r` ending one chunk
    and a `\\n` starting the next count as one line break.

    `feed_raw` is the tap's per-chunk path. In chunks without `\\r` (what LLM APIs send) the
    usual `data:` and `event:`+`data:` frames are taken whole; anything else goes line by
    line through the general WHATWG rules, with identical results.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self.overflowed = False  # a line exceeded max_line and was dropped
        self._partial = bytearray()
        self._discarding = False  # inside an over-long line: drop bytes until its end
        self._skip_lf = False  # the previous chunk ended with `\r`
        self._first_line = True
        # Any of the three flags above: the next chunk must take the line-by-line path.
        self._lines_only = True
        self._event: str | None = None
        self._data: list[bytes] = []
        self._last_id: str | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        return [SSEEvent(n, d.decode("utf-8", "replace"), i) for n, d, i in self.feed_raw(data)]

    def flush(self) -> list[SSEEvent]:
        """End of stream: treat a pending partial line and event as terminated."""
        return [SSEEvent(n, d.decode("utf-8", "replace"), i) for n, d, i in self.flush_raw()]

    def feed_raw(self, data: bytes) -> list[RawEvent]:
        """Like `feed`, with each event's data left as bytes (decode with "replace")."""
        # `0x0D in data` is a memchr; `b"\\r" in data` is several times slower.
        if self._lines_only or 0x0D in data:
            events = self._feed_lines(data)
            self._lines_only = self._skip_lf or self._first_line or self._discarding
            return events
        if not (self._partial or self._data) and data.endswith(b"\n\n"):
            # Exactly one frame, as when the upstream flushes every token.
            end = len(data) - 2
            nl = data.find(10)
            if nl == end:
                if data.startswith(b"data: "):
                    event, self._event = self._event, None
                    return [(event, data[6:end], self._last_id)]
            elif (
                data.find(10, nl + 1) == end
                and data.startswith(b"event: ")
                and data.startswith(b"data: ", nl + 1)
            ):
                self._event = None
                return [(_name(data[7:nl]), data[nl + 7 : end], self._last_id)]
        events: list[RawEvent] = []
        if self._partial:
            self._partial += data
            data = bytes(self._partial)
            self._partial.clear()
        # `data` starts at a line start. Frames that are one `data: ` line, or an `event: `
        # line and a `data: ` line, then a blank line, are taken whole; other lines go
        # through `_line`. Only single-byte finds (memchr) scan the bytes.
        find = data.find
        startswith = data.startswith
        size = len(data)
        pos = 0
        while (nl := find(10, pos)) >= 0:
            if not self._data and nl + 1 < size and data[nl + 1] == 10:
                if startswith(b"data: ", pos):
                    events.append((self._event, data[pos + 6 : nl], self._last_id))
                    self._event = None
                    pos = nl + 2
                    continue
            elif (
                not self._data
                and startswith(b"event: ", pos)
                and startswith(b"data: ", nl + 1)
                and (end := find(10, nl + 7)) >= 0
                and end + 1 < size
                and data[end + 1] == 10
            ):
                events.append((_name(data[pos + 7 : nl]), data[nl + 7 : end], self._last_id))
                self._event = None
                pos = end + 2
                continue
            self._line(data[pos:nl], events)
            pos = nl + 1
        if pos < size:
            self._keep(data[pos:] if pos else data)
            self._lines_only = self._discarding
        return events

    def flush_raw(self) -> list[RawEvent]:
        """Like `flush`, with each event's data left as bytes."""
        events: list[RawEvent] = []
        if self._partial and not self._discarding:
            self._line(bytes(self._partial), events)
        self._partial.clear()
        self._discarding = False
        self._skip_lf = False
        self._line(b"", events)
        self._lines_only = self._first_line
        return events

    def _feed_lines(self, data: bytes) -> list[RawEvent]:
        """The general path: any line endings, a pending `\\r`, the BOM, an over-long line."""
        events: list[RawEvent] = []
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if not data:
            return events
        # bytes.splitlines breaks on exactly \r\n, \r and \n (unlike str.splitlines).
        lines = data.splitlines()
        last = data[-1]
        tail = None
        if last == 0x0A or last == 0x0D:
            # A trailing lone \r may be the first half of a \r\n split across chunks.
            self._skip_lf = last == 0x0D
        else:
            tail = lines.pop()
        if lines and (self._partial or self._discarding):
            # The first complete line ends the one carried over from earlier chunks.
            if self._discarding:
                self._discarding = False
                del lines[0]
            else:
                self._partial += lines[0]
                lines[0] = bytes(self._partial)
                self._partial.clear()
        for line in lines:
            self._line(line, events)
        if tail is not None:
            self._keep(tail)
        return events

    def _keep(self, piece: bytes) -> None:
        if self._discarding:
            return
        if len(self._partial) + len(piece) > self.max_line:
            self._partial.clear()
            self._discarding = True
            self.overflowed = True
            return
        self._partial += piece

    def _line(self, line: bytes, events: list[RawEvent]) -> None:
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            if self._data:
                data = self._data
                events.append(
                    (self._event, data[0] if len(data) == 1 else b"\n".join(data), self._last_id)
                )
                self._data = []
            self._event = None
            return
        if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = _name(value)
        elif field == b"id" and b"\x00" not in value:
            self._last_id = value.decode("utf-8", "replace")
        # `retry` and unknown fields are irrelevant to a passive reader.


_Decode = Callable[[bytes], bytes]
_Flush = Callable[[], bytes]


class BodyDecoder:
    """Incremental Content-Encoding decoder; `identity`/empty passes bytes through.

    A comma list (`gzip, br`) was applied left to right, so it is undone right to left.
    Unknown encodings raise ValueError at construction.
    """

    def __init__(self, content_encoding: str | None) -> None:
        names = [n.strip().lower() for n in (content_encoding or "").split(",")]
        # Bound C methods where possible: this runs once per chunk.
        self._stages = [_stage(n) for n in reversed(names) if n and n != "identity"]
        self.identity = not self._stages  # decode() returns its argument: callers may skip it

    def decode(self, chunk: bytes) -> bytes:
        for decode, _ in self._stages:
            chunk = decode(chunk)
        return chunk

    def flush(self) -> bytes:
        """Whatever the decoders still hold at end of body."""
        out = b""
        for decode, flush in self._stages:
            out = decode(out) + flush()
        return out


def _no_flush() -> bytes:
    return b""


def _stage(name: str) -> tuple[_Decode, _Flush]:
    if name in ("gzip", "x-gzip"):
        z = zlib.decompressobj(47)  # 32 + 15: auto-detect gzip or zlib header
        return z.decompress, z.flush
    if name == "deflate":
        d = _Deflate()
        return d.decode, d.flush
    if name == "br":
        return brotli.Decompressor().process, _no_flush
    if name == "zstd":
        # Servers may emit several frames; a plain decompressobj refuses the second one.
        z = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
        return z.decompress, _no_flush
    raise ValueError(f"unsupported content-encoding: {name!r}")


class _Deflate:
    """HTTP `deflate` should be zlib-wrapped, but some servers send raw deflate.

    The input is kept until the zlib header has been accepted (first output), so a
    header error can be replayed through a raw-deflate decoder even with 1-byte chunks.
    """

    def __init__(self) -> None:
        self._z = zlib.decompressobj(47)
        self._prefix: bytearray | None = bytearray()

    def decode(self, chunk: bytes) -> bytes:
        if self._prefix is None:
            return self._z.decompress(chunk)
        self._prefix += chunk
        try:
            out = self._z.decompress(chunk)
        except zlib.error:
            self._z = zlib.decompressobj(-15)
            out = self._z.decompress(bytes(self._prefix))
            self._prefix = None
            return out
        if out:
            self._prefix = None
        return out

    def flush(self) -> bytes:
        return self._z.flush()


def decode_body(content: bytes, content_encoding: str | None) -> bytes:
    """Decode a whole body (non-streaming responses)."""
    decoder = BodyDecoder(content_encoding)
    return decoder.decode(content) + decoder.flush()
