"""The per-flow `flow.response.stream` callable for bridged SSE responses.

mitmproxy forwards whatever the callable returns, so the tap returns every chunk object
unchanged the moment it gets it and reads a decoded copy on the side. Parsing is best
effort: the first exception switches the tap to pure pass-through and is kept in
`parse_error`, so a parser bug or an undecodable body can never break a user's stream.

Until the first token the tap reads each chunk as it passes, so that the first token's time
is when it arrived; after it, chunks wait and are read once `READ_AFTER` bytes piled up (and
whenever anything asks the tap: summary, output, error tail, the end), so a typical answer is
read in one go when it ends. The client's bytes never wait for the reading, except the end of
the body for the last batch. Measured in place (scripts/bench, SSE): reading 32 chunks at a time
cost ≈ 1.6 µs more per event than reading once at the end; between batches mitmproxy's own
per-chunk work runs with the parser's code and data in the caches instead of its own.

With `keep_events` (secret scanning of model output) the accumulator also puts the output text
together as the events pass (`kept`); no event is kept and nothing is parsed twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aibridge.providers.base import WireApi
from aibridge.sse import BodyDecoder
from aibridge.summary import ResponseSummary

log = logging.getLogger(__name__)
# Bytes put aside before they are read: bounds a stream's memory while most answers are
# read once, at the end.
READ_AFTER = 256 << 10


class StreamTap:
    def __init__(
        self,
        api: WireApi,
        content_encoding: str | None,
        *,
        on_first_chunk: Callable[[], None] | None = None,
        keep_events: bool = False,
    ) -> None:
        self._api = api
        self._accumulator = api.accumulator()
        self._parser = api.stream_parser()
        self._on_first_chunk = on_first_chunk
        self.ended = False  # saw mitmproxy's end-of-body call; a broken stream never does
        self.bytes_seen = 0  # raw (possibly compressed) body bytes
        self.first_chunk_at: float | None = None
        self.parse_error: str | None = None
        try:
            self._decoder = BodyDecoder(content_encoding)
        except ValueError as e:
            self.parse_error = str(e)  # pass-through only: the bytes are unreadable to us
            self._decoder = BodyDecoder(None)
        # Bound once: the per-chunk path should allocate nothing beyond decode/parse output.
        # Events stay bytes from parser to accumulator (jiter reads them without decoding).
        self._decode = None if self._decoder.identity else self._decoder.decode
        self._parse = self._parser.feed_raw
        self._feed_events = self._accumulator.feed_raw
        # The output text, for a look at the whole output once it ended (secret scanning of
        # model output); bounded (providers.assembly), and not collected at all unless asked.
        self._keeps = keep_events
        self._pending: list[bytes] = []  # chunks after the first token, not read yet
        self._read_mark = 0  # bytes_seen when the pending chunks were last read
        if keep_events:
            self._accumulator.collect_text()

    @property
    def summary(self) -> ResponseSummary:
        self._catch_up()
        return self._accumulator.summary

    @property
    def kept(self) -> dict[str, str] | None:
        """The output text so far by label ("text", "thinking", "refusal"); None unless the
        tap was asked to keep it."""
        self._catch_up()
        return self._accumulator.assembled() if self._keeps else None

    @property
    def first_token_at(self) -> float | None:
        return self._accumulator.first_token_at

    @property
    def bad_events(self) -> int:
        self._catch_up()
        return self._accumulator.bad_events

    @property
    def overflowed(self) -> bool:
        """An SSE line exceeded the parser's cap and was dropped: the summary may be partial."""
        self._catch_up()
        return self._parser.overflowed

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.bytes_seen += len(chunk)
            if self.first_chunk_at is None:
                self._first_chunk()
            if self.parse_error is None:
                if self._accumulator.first_token_at is None:
                    self._read(chunk)  # at once, until the first token's time is taken
                else:
                    self._pending.append(chunk)
                    if self.bytes_seen - self._read_mark >= READ_AFTER:
                        self._catch_up()
        elif not self.ended:
            self.ended = True
            if self.parse_error is None:
                self._catch_up()
                try:
                    self._finish()
                except Exception as e:
                    self._fail(e)
        return chunk

    def _catch_up(self) -> None:
        """Read the chunks put aside."""
        self._read_mark = self.bytes_seen
        if self._pending:
            pending, self._pending = self._pending, []
            if self.parse_error is None:
                self._read(b"".join(pending))

    def _read(self, data: bytes) -> None:
        try:
            decode = self._decode
            events = self._parse(data if decode is None else decode(data))
            if events:
                self._feed_events(events)
        except Exception as e:
            self._fail(e)

    def error_tail(self, body: dict[str, Any]) -> bytes | None:
        """The terminal event a client reads when this stream breaks mid-way: the parser's own
        when the framing needs its state (a JSON array is closed where it was cut; the parser
        says None when it has no opinion, b"" when nothing can end it well: then None, the
        stream ends as it broke), else the API's."""
        self._catch_up()  # the parser's state is where the stream was cut
        own = getattr(self._parser, "error_tail", None)
        tail = own(body) if own is not None else None
        if tail is None:
            return self._api.stream_error_tail(body)
        return tail or None

    def _first_chunk(self) -> None:
        self.first_chunk_at = time.monotonic()
        if self._on_first_chunk is not None:
            try:
                self._on_first_chunk()
            except Exception:
                log.exception("stream tap: on_first_chunk callback failed")

    def _finish(self) -> None:
        """End of body: drain the decoder, then dispatch an event missing its blank line."""
        events = self._parser.feed_raw(self._decoder.flush())
        events += self._parser.flush_raw()
        self._feed_events(events)

    def _fail(self, error: Exception) -> None:
        self.parse_error = f"{type(error).__name__}: {error}"
        log.debug("stream tap stopped parsing: %s", self.parse_error)
