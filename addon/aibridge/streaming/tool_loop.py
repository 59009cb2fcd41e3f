"""The bridge's tool loop: the model calls a bridge (MCP) tool, the bridge runs it, hands the
result back and asks the provider again, until the model answers without calling one.

The first round is the client's own request (with the bridge's tools appended), forwarded by
mitmproxy as usual; later rounds are the bridge's follow-up requests (same upstream, credential
and headers, `upstream/followup.py`). The client never sees a call of a bridge tool:

- non-streaming (`ToolLoop.whole`): the client gets one answer made of every round's (each
  API's `merge`: what the model said in each round, usage summed);
- streaming (`SplicedStream`): the flow's `response.stream` callable holds back the bridge
  tools' events of the first round (the API's `StreamSplicer`); when mitmproxy has forwarded
  the first round, the `response` hook runs `SplicedStream.continue_rounds`, which streams the
  later rounds into the same response body (`ClientSink`), and ends it with the closing
  events of the last round, usage summed. The stream tap reads exactly what the client gets.

A round whose answer also calls one of the client's own tools ends the loop there (those calls
go to the client; the bridge's are dropped), and so does `max_rounds`. A follow-up that fails
ends a whole answer with the provider's error, a stream with the API's error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from aibridge.intercept import Interception
from aibridge.mcp.catalog import Offer, RemoteTool
from aibridge.mcp.manager import CallOutcome
from aibridge.observe.reporting import Reporter
from aibridge.providers.base import WireApi
from aibridge.providers.tooluse import ToolRun, ToolWire
from aibridge.recording.records import ARGUMENTS_LIMIT, McpRound, truncate_utf8
from aibridge.sse import BodyDecoder, RawEvent, SSEParser
from aibridge.streaming.tap import StreamTap
from aibridge.summary import ToolCall

log = logging.getLogger("aibridge")

KEEPALIVE = 10.0  # seconds between SSE comments while a stream waits for tools
_KEEPALIVE_LINE = b": AI Bridge is running a tool\n\n"


class Runner(Protocol):
    async def call(self, tool: RemoteTool, arguments: str) -> CallOutcome: ...


# (round, the model's call, the tool, how it went): the interception's record of one call.
RecordCall = Callable[[int, ToolCall, RemoteTool, CallOutcome], None]


def record_calls(reporter: Reporter, interception: Interception) -> RecordCall:
    """Each call as an `McpRound` of `interception` (a row, and a span under its own)."""
    def record(round_: int, call: ToolCall, tool: RemoteTool, outcome: CallOutcome) -> None:
        reporter.mcp_round(McpRound(
            interception.id, round_, tool.server, tool.tool, call.name, call.id,
            truncate_utf8(call.arguments, ARGUMENTS_LIMIT) or "", outcome.result_bytes,
            outcome.duration, outcome.error, time.time()))
    return record


@dataclass(frozen=True)
class Answer:
    """One follow-up round's whole answer: its status, its JSON object when 2xx, and the
    transport's response (handed back when the loop stops on it)."""

    status: int
    body: dict[str, Any] | None
    response: object


SendWhole = Callable[[bytes], Awaitable[Answer]]


class Streamed(Protocol):
    status_code: int

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...


OpenStream = Callable[[bytes], AbstractAsyncContextManager[Streamed]]


class ClientSink(Protocol):
    """The client side of the flow's response body, after mitmproxy forwarded round one."""

    def write(self, data: bytes) -> bool: ...  # False: the client is gone

    async def drain(self) -> None: ...


class Aliases:
    """Answer ids a spliced stream showed the client, with the provider's id for the whole
    exchange (`StreamSplicer.alias`), for the requests that continue from them. Bounded: the
    oldest go first; per process."""

    def __init__(self, limit: int = 10_000) -> None:
        self._ids: dict[str, str] = {}
        self._limit = limit

    def add(self, shown: str, actual: str) -> None:
        if len(self._ids) >= self._limit:
            del self._ids[next(iter(self._ids))]
        self._ids[shown] = actual

    def get(self, shown: str) -> str | None:
        return self._ids.get(shown)

    def __bool__(self) -> bool:
        return bool(self._ids)


class ToolLoop:
    """One bridged request's loop: its tools, the request as last sent, the rounds so far."""

    def __init__(self, api: WireApi, wire: ToolWire, offer: Offer, body: dict[str, Any],
                 runner: Runner, *, max_rounds: int, record: RecordCall) -> None:
        self.api, self.wire, self.offer = api, wire, offer
        self.body = body  # the request as last sent upstream
        self.runner = runner
        self.max_rounds = max_rounds
        self.record = record
        self.rounds = 0  # follow-up requests sent
        self.dropped = False  # the last answer still called bridge tools
        self.auth_value: str | None = None  # the credential that answered (set on failover)
        self.stream: SplicedStream | None = None  # a streamed answer's splicer
        self.aliases: Aliases | None = None  # answer ids clients saw -> the provider's
        # A tool's result as it may go upstream (secret scanning: admission/secrets.py).
        self.screen: Callable[[ToolCall, str], str] | None = None

    @classmethod
    def offer_tools(cls, api: WireApi | None, body: object, offer: Offer, runner: Runner, *,
                    max_rounds: int, record: RecordCall) -> ToolLoop | None:
        """The loop for a request the bridge offers its tools to (with the tools appended to
        a copy of its body), or None when it is left alone."""
        wire = api.tool_wire() if api is not None else None
        if wire is None or not offer or not isinstance(body, dict):
            return None
        sent = dict(body)  # the wires replace top-level fields, never change nested ones
        if not wire.inject(sent, offer.specs):
            return None
        assert api is not None
        return cls(api, wire, offer, sent, runner, max_rounds=max_rounds, record=record)

    def encoded(self) -> bytes:
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()

    def injected(self, name: str) -> bool:
        return name in self.offer

    def next_calls(self, answer: dict[str, Any]) -> list[ToolCall] | None:
        """The bridge calls to run before asking again; None when the loop ends here."""
        calls = self.wire.calls(answer)
        mine = [c for c in calls if self.injected(c.name)]
        self.dropped = bool(mine)
        if not mine or len(mine) < len(calls) or self.rounds >= self.max_rounds:
            return None
        return mine

    async def run(self, calls: Sequence[ToolCall]) -> list[ToolRun]:
        """Run one round's calls (concurrently), record them, return their results."""
        round_ = self.rounds + 1
        tools = [self.offer.get(c.name) for c in calls]
        outcomes = await asyncio.gather(*(self.runner.call(tool, call.arguments)
                                          for call, tool in zip(calls, tools, strict=True)
                                          if tool is not None))
        runs = []
        for call, tool, outcome in zip(calls, tools, outcomes, strict=True):
            assert tool is not None
            try:
                self.record(round_, call, tool, outcome)
            except Exception:  # a record must never cost the client its answer
                log.exception("aibridge: recording an MCP tool call failed")
            output = outcome.output
            if self.screen is not None and output:
                output = self.screen(call, output)
            runs.append(ToolRun(call, output, outcome.is_error))
        return runs

    def follow_up(self, answer: dict[str, Any], runs: Sequence[ToolRun]) -> bytes:
        self.body = self.wire.follow_up(self.body, answer, runs)
        self.rounds += 1
        return self.encoded()

    async def whole(self, first: dict[str, Any], send: SendWhole) -> dict[str, Any] | Answer:
        """The merged answer for the client, or the failed follow-up's answer."""
        answers = [first]
        while (calls := self.next_calls(answers[-1])) is not None:
            runs = await self.run(calls)
            answer = await send(self.follow_up(answers[-1], runs))
            if answer.body is None:
                return answer
            answers.append(answer.body)
        if len(answers) == 1 and not self.dropped:
            return first  # the model called none of the bridge's tools
        return self.wire.merge(answers, self.injected, dropped_calls=self.dropped)


class SplicedStream:
    """`flow.response.stream` of a bridged stream whose request got the bridge's tools. Returns
    lists of chunks (an empty chunk would end a chunked body early)."""

    def __init__(self, loop: ToolLoop, tap: StreamTap, content_encoding: str | None,
                 broken: Callable[[str], bytes]) -> None:
        self.loop = loop
        self.tap = tap
        self._broken = broken  # the API's error event for a reason
        self._splicer = loop.wire.splicer(loop.injected)
        self._decoder = BodyDecoder(content_encoding)
        self._parser = SSEParser()
        self.pending: list[ToolCall] | None = None  # bridge calls to run after round one
        self._answer: dict[str, Any] = {}
        self.failure: str | None = None  # why the splicing stopped (a bug); the stream ends

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.failure is not None:
            if not chunk:
                self.tap(b"")
            return []
        try:
            if chunk:
                out = self._feed(self._decoder.decode(chunk))
            else:  # mitmproxy forwarded all of round one
                out = self._feed(self._decoder.flush()) + self._events(self._parser.flush_raw())
                out += self._end_round()
        except Exception as e:
            out = self._fail(e)
        if not chunk and self.pending is None:
            return self._emit(out, end=True)
        return self._emit(out)

    def _emit(self, out: bytes, *, end: bool = False) -> list[bytes]:
        if out:
            self.tap(out)
        if end:
            self.tap(b"")
        return [out] if out else []

    def _feed(self, data: bytes) -> bytes:
        return self._events(self._parser.feed_raw(data)) if data else b""

    def _events(self, events: list[RawEvent]) -> bytes:
        event = self._splicer.event
        return b"".join([event(name, data) for name, data, _ in events])

    def _end_round(self) -> bytes:
        self._answer = self._splicer.end_round()
        self.pending = self.loop.next_calls(self._answer)
        if self.pending is not None:
            return b""
        if (alias := self._splicer.alias()) is not None and self.loop.aliases is not None:
            self.loop.aliases.add(*alias)
        return self._splicer.finish(dropped_calls=self.loop.dropped)

    def _fail(self, error: Exception) -> bytes:
        log.exception("aibridge: splicing a stream with MCP tools failed; ending it")
        self.failure = f"{type(error).__name__}: {error}"
        self.pending = None
        return self._broken("AI Bridge could not continue the stream")

    async def continue_rounds(self, open_stream: OpenStream, sink: ClientSink) -> bool:
        """Run the pending calls and stream the next rounds to the client, then end the stream
        (the tap too). False when the client went away first."""
        try:
            return await self._rounds(open_stream, sink)
        except Exception as e:
            if self.failure is None:
                log.warning(f"aibridge: a follow-up round of a stream failed: "
                            f"{type(e).__name__}: {e}")
                self._send(sink, self._broken(f"follow-up request failed: {type(e).__name__}"))
            return True
        finally:
            self.tap(b"")

    async def _rounds(self, open_stream: OpenStream, sink: ClientSink) -> bool:
        while self.pending is not None:
            runs = await self._run_keeping_alive(self.pending, sink)
            if runs is None:
                return False
            self.pending = None
            async with open_stream(self.loop.follow_up(self._answer, runs)) as response:
                if not 200 <= response.status_code < 300:
                    await response.aread()
                    self._send(sink, self._broken(
                        f"follow-up request answered {response.status_code}"))
                    return True
                self._parser = SSEParser()
                async for chunk in response.aiter_bytes():
                    if not self._send(sink, self._feed(chunk)):
                        return False
                    await sink.drain()
            if not self._send(sink, self._events(self._parser.flush_raw()) + self._end_round()):
                return False
            await sink.drain()
        return True

    async def _run_keeping_alive(self, calls: list[ToolCall],
                                 sink: ClientSink) -> list[ToolRun] | None:
        """The calls' results; an SSE comment now and then meanwhile, so that clients and
        intermediaries that time out idle streams do not. None: the client went away."""
        task = asyncio.ensure_future(self.loop.run(calls))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE)
                if done:
                    return task.result()
                if not sink.write(_KEEPALIVE_LINE):
                    return None
                await sink.drain()
        finally:
            if not task.done():
                task.cancel()

    def _send(self, sink: ClientSink, data: bytes) -> bool:
        if not data:
            return True
        self.tap(data)
        return sink.write(data)
