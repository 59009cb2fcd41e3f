"""The stream accumulator every provider API's streaming summary is built on.

Tool-call arguments arrive in many small pieces; they are kept in lists and joined only when
`summary` is read, so feeding stays linear in the stream size. A stream that breaks off still
yields the arguments received so far.

`first_token_at` marks the first event carrying model output of any kind (text,
thinking/reasoning, tool-call input), which is what a client waiting on the stream experiences
as time to first token.

`feed` takes SSEEvents and parses every event in full (the plain path). The tap uses
`feed_raw`, which takes the parser's bytes events and has exactly the same effect, only faster:
JSON is read with jiter (json.loads where jiter refuses, so verdicts never differ), and an event
that repeats the bytes of a text-only event seen just before except for its text skips JSON
parsing altogether (`sse_shortcut.Shortcut`, for APIs that implement `_learn`).

`collect_text` makes the accumulator also put the output text together as it streams
(`assembled`: "text", "thinking", "refusal"; see providers.assembly), for secret scanning of
model output and for viewers (`WireApi.assembled_text`). It is off by default: a stream nobody
reads the text of pays one None check per output event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aibridge.providers.assembly import MAX_OUTPUT_CHARS, TextAssembly
from aibridge.providers.jsonfields import _json_str, _json_text, _loads, _set_error
from aibridge.providers.sse_shortcut import SHORTCUT_BUILDS, Shortcut
from aibridge.sse import RawEvent, SSEEvent
from aibridge.summary import ResponseSummary, ToolCall


class StreamAccumulator:
    """Subclasses implement `_handle` for one API's events, and may implement `_learn`."""

    # A data line that ends the stream without being JSON (Chat Completions' `[DONE]`).
    done_marker: bytes | None = None

    def __init__(self) -> None:
        self.bad_events = 0  # events whose data was not a JSON object
        self.first_token_at: float | None = None  # time.monotonic() of the first output
        self._summary = ResponseSummary()
        # Tool calls still receiving argument pieces: stream key -> (call, pieces).
        self._tools: dict[tuple[int, ...], tuple[ToolCall, list[str]]] = {}
        self._dirty = False
        self._shortcut: Shortcut | None = None
        self._builds = SHORTCUT_BUILDS if type(self)._learn is not StreamAccumulator._learn else 0
        self._done_text = self.done_marker.decode() if self.done_marker else None
        # The output text, when asked for (`collect_text`); `_handle` and shortcuts add to it.
        self._assembly: TextAssembly | None = None

    def _handle(self, name: str | None, obj: dict) -> None:
        raise NotImplementedError

    def _learn(self, data: bytes, obj: dict) -> Shortcut | None:
        """A shortcut for events like this one (`data` parsed to `obj`), if it is text-only."""
        return None

    def collect_text(self, limit: int | None = MAX_OUTPUT_CHARS) -> None:
        """Put the output text together from now on, up to `limit` characters (None: no
        limit, for a body already in memory). Call before feeding."""
        self._assembly = TextAssembly(limit)

    def assembled(self) -> dict[str, str]:
        """The output text so far by label ("text", "thinking", "refusal"), each label's
        blocks in index order, one per paragraph; {} unless collecting."""
        return self._assembly.assembled() if self._assembly is not None else {}

    @property
    def text_truncated(self) -> bool:
        """The output text passed the collecting limit: `assembled` lacks the rest."""
        return self._assembly is not None and self._assembly.truncated

    @property
    def summary(self) -> ResponseSummary:
        if self._dirty:
            for call, pieces in self._tools.values():
                if pieces:
                    call.arguments = "".join(pieces)
                    pieces[:] = [call.arguments]
            self._dirty = False
        return self._summary

    def feed(self, event: SSEEvent) -> None:
        s = self._summary
        s.events += 1
        data = event.data
        if data == self._done_text:
            s.completed = True
            return
        obj = _json_str(data)
        if isinstance(obj, dict):
            self._handle(event.event, obj)
        else:
            self._not_an_object(event.event, data)

    def feed_raw(self, events: Sequence[RawEvent]) -> None:
        """Feed events as `SSEParser.feed_raw` returns them; same effect as `feed` on each."""
        s = self._summary
        s.events += len(events)
        handle = self._handle
        done = self.done_marker
        loads = _loads
        shortcut = self._shortcut
        assembly = self._assembly
        for name, data, _ in events:
            if (
                shortcut is not None
                and data.startswith(shortcut.prefix)
                and (piece := shortcut.string(data)) is not None
            ):
                if piece or shortcut.always_output:
                    if self.first_token_at is None:
                        self.first_token_at = time.monotonic()
                    if assembly is not None and (block := shortcut.block) is not None:
                        assembly.add(block, piece)
                if shortcut.counts:
                    s.text_chars += len(piece)
                elif shortcut.args_key is not None:
                    self._append_args(shortcut.args_key, piece)
                continue
            if done is not None and data == done:
                s.completed = True
                continue
            try:
                obj = loads(data)
            except Exception:  # jiter refused it: json decides, as in `feed`
                obj = _json_text(data.decode("utf-8", "replace"))
            if isinstance(obj, dict):
                handle(name, obj)
                if self._builds > 0 and (learned := self._learn(data, obj)) is not None:
                    self._shortcut = shortcut = learned
            else:
                self._not_an_object(name, data.decode("utf-8", "replace"))

    def _not_an_object(self, name: str | None, data: str) -> None:
        self.bad_events += 1
        if name == "error":  # an error we cannot parse is still an error
            _set_error(self._summary, data[:1024] or None, None)

    def _build(self, data: bytes, key: bytes, value: str) -> Shortcut | None:
        self._builds -= 1
        return Shortcut.build(data, key, value)

    def _output(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def _start_tool(self, key: tuple[int, ...], call: ToolCall) -> None:
        self._summary.tool_calls.append(call)
        self._tools[key] = (call, [])

    def _append_args(self, key: tuple[int, ...], piece: str) -> None:
        if piece and (entry := self._tools.get(key)):
            entry[1].append(piece)
            self._dirty = True
