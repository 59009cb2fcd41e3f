"""The per-flow `flow.response.stream` callable for bridged SSE responses.

mitmproxy forwards whatever the callable returns, so the tap returns every chunk object
unchanged the moment it gets it and reads a decoded copy on the side. Parsing is best
effort: the first exception switches the tap to pure pass-through and is kept in
`parse_error`, so a parser bug or an undecodable body can never break a user's stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aibridge.providers.base import WireApi
from aibridge.sse import BodyDecoder, SSEParser
from aibridge.summary import ResponseSummary

log = logging.getLogger(__name__)


class StreamTap:
    def __init__(
        self,
        api: WireApi,
        content_encoding: str | None,
        *,
        on_first_chunk: Callable[[], None] | None = None,
    ) -> None:
        self._accumulator = api.accumulator()
        self._parser = SSEParser()
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

    @property
    def summary(self) -> ResponseSummary:
        return self._accumulator.summary

    @property
    def first_token_at(self) -> float | None:
        return self._accumulator.first_token_at

    @property
    def bad_events(self) -> int:
        return self._accumulator.bad_events

    @property
    def overflowed(self) -> bool:
        """An SSE line exceeded the parser's cap and was dropped: the summary may be partial."""
        return self._parser.overflowed

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.bytes_seen += len(chunk)
            if self.first_chunk_at is None:
                self._first_chunk()
            if self.parse_error is None:
                try:
                    decode = self._decode
                    events = self._parse(chunk if decode is None else decode(chunk))
                    if events:
                        self._feed_events(events)
                except Exception as e:
                    self._fail(e)
        elif not self.ended:
            self.ended = True
            if self.parse_error is None:
                try:
                    self._finish()
                except Exception as e:
                    self._fail(e)
        return chunk

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
        self._accumulator.feed_raw(events)

    def _fail(self, error: Exception) -> None:
        self.parse_error = f"{type(error).__name__}: {error}"
        log.debug("stream tap stopped parsing: %s", self.parse_error)
