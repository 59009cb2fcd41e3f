"""The tool loop (streaming/tool_loop.py) with a scripted runner and provider: rounds, their
bound, a client tool in the same turn, failed follow-ups, a client that leaves, records, and the
span each call gets."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aibridge.intercept import Actor, CredentialInfo, CredentialKind, Interception
from aibridge.mcp.catalog import Offer, RemoteTool
from aibridge.mcp.manager import CallOutcome
from aibridge.observe.reporting import Reporter
from aibridge.observe.telemetry import Telemetry
from aibridge.providers.anthropic_messages import MESSAGES
from aibridge.providers.tooluse import ToolSpec
from aibridge.recording.records import InterceptionStarted, McpRound
from aibridge.sse import SSEParser
from aibridge.streaming import tool_loop
from aibridge.streaming.tap import StreamTap
from aibridge.streaming.tool_loop import Answer, SplicedStream, ToolLoop, record_calls
from aibridge.summary import ToolCall
from tests.fakeprovider import TEXT, _messages, tool_call_reply

NAME = "bmcp_docs_search"
TOOL = RemoteTool("docs", "search", ToolSpec(NAME, "Search.", {"type": "object"}))
OFFER = Offer((TOOL,))
BODY = {"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


class Runner:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, tool: RemoteTool, arguments: str) -> CallOutcome:
        self.calls.append(arguments)
        return CallOutcome(tool.server, tool.tool, "found it", False, 8, 0.01, None)


def new_loop(runner: Runner | None = None, *, max_rounds: int = 3,
             body: dict | None = None) -> tuple[ToolLoop, list]:
    recorded: list = []
    loop = ToolLoop.offer_tools(MESSAGES, body or dict(BODY), OFFER, runner or Runner(),
                                max_rounds=max_rounds,
                                record=lambda *a: recorded.append(a))
    assert loop is not None
    return loop, recorded


def calling(stream: bool = False, **kw):
    return tool_call_reply("/v1/messages", NAME, {"q": 1}, stream=stream, **kw)


async def test_whole_runs_rounds_until_the_model_answers():
    loop, recorded = new_loop()
    sent: list[dict] = []

    async def send(body: bytes) -> Answer:
        sent.append(json.loads(body))
        answer = calling().body if len(sent) == 1 else _messages(3, {}, "").body
        return Answer(200, answer, None)

    merged = await loop.whole(calling(text="Let me see.").body, send)
    assert [b["text"] for b in merged["content"]] == ["Let me see.", TEXT]
    assert merged["usage"]["input_tokens"] == 33  # three rounds
    assert len(sent) == 2 and loop.rounds == 2
    assert [r[0] for r in recorded] == [1, 2]  # the round each call was made in
    assert sent[1]["messages"][-1]["content"][0]["content"] == "found it"
    assert NAME in [t["name"] for t in sent[0]["tools"]]


async def test_rounds_are_bounded():
    runner = Runner()
    loop, _ = new_loop(runner, max_rounds=2)

    async def send(body: bytes) -> Answer:
        return Answer(200, calling().body, None)  # the model never stops calling

    merged = await loop.whole(calling().body, send)
    assert loop.rounds == 2 and len(runner.calls) == 2
    assert merged["content"] == [] and merged["stop_reason"] == "end_turn"


async def test_a_failed_follow_up_is_the_answer():
    loop, _ = new_loop()

    async def send(body: bytes) -> Answer:
        return Answer(429, None, "the provider's 429")

    result = await loop.whole(calling().body, send)
    assert isinstance(result, Answer) and result.response == "the provider's 429"


async def test_an_answer_without_bridge_calls_is_returned_as_it_is():
    loop, _ = new_loop()
    first = _messages(1, {}, "").body
    assert await loop.whole(first, None) is first


def test_requests_without_tools_for_the_caller_are_left_alone():
    assert ToolLoop.offer_tools(MESSAGES, dict(BODY), Offer(()), Runner(), max_rounds=3,
                                record=print) is None
    named = {**BODY, "tool_choice": {"type": "tool", "name": "Bash"}}
    assert ToolLoop.offer_tools(MESSAGES, named, OFFER, Runner(), max_rounds=3,
                                record=print) is None
    loop, _ = new_loop(body=dict(BODY))
    assert "tools" not in BODY  # the client's body was copied, not changed
    assert [t["name"] for t in loop.body["tools"]] == [NAME]


# -- streams ----------------------------------------------------------------------------------


class Sink:
    def __init__(self, open_for: int = 10**9) -> None:
        self.data = b""
        self.open_for = open_for  # writes before the client goes away

    def write(self, data: bytes) -> bool:
        if self.open_for <= 0:
            return False
        self.open_for -= 1
        self.data += data
        return True

    async def drain(self) -> None:
        pass


class Streamed:
    def __init__(self, status: int, chunks: list[bytes]) -> None:
        self.status_code, self._chunks = status, chunks

    async def aiter_bytes(self):
        for chunk in self._chunks:
            yield chunk

    async def aread(self) -> bytes:
        return b"".join(self._chunks)


def opener(*replies: Streamed):
    pending = list(replies)
    bodies: list[dict] = []

    @asynccontextmanager
    async def open_stream(body: bytes):
        bodies.append(json.loads(body))
        yield pending.pop(0)
    open_stream.bodies = bodies
    return open_stream


def sse(reply) -> list[bytes]:
    return [e.encode() for e in reply.events]


def spliced(loop: ToolLoop) -> tuple[SplicedStream, StreamTap]:
    tap = StreamTap(MESSAGES, None)

    def broken(reason: str) -> bytes:
        return MESSAGES.stream_error_tail({"type": "error", "error": {
            "type": "api_error", "message": reason}})
    return SplicedStream(loop, tap, None, broken), tap


async def test_a_stream_goes_on_in_the_same_body():
    loop, recorded = new_loop()
    stream, tap = spliced(loop)
    first = b"".join(b"".join(stream(c)) for c in sse(calling(stream=True)))
    assert b"".join(stream(b"")) == b"" and stream.pending is not None
    assert not tap.ended  # the tap ends with the whole stream, not with round one
    sink = Sink()
    default = Streamed(200, sse(_messages(2, {"stream": True}, "")))
    assert await stream.continue_rounds(opener(default), sink)
    assert tap.ended and tap.summary.completed
    assert tap.summary.input_tokens == 22 and tap.summary.output_tokens == 12
    assert tap.summary.tool_calls == []
    assert NAME.encode() not in first + sink.data
    assert sink.data.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    assert len(recorded) == 1


async def test_a_failed_follow_up_ends_the_stream_with_an_error_event():
    loop, _ = new_loop()
    stream, tap = spliced(loop)
    for chunk in [*sse(calling(stream=True)), b""]:
        stream(chunk)
    sink = Sink()
    await stream.continue_rounds(opener(Streamed(500, [b'{"error":"x"}'])), sink)
    assert b"event: error" in sink.data and b"answered 500" in sink.data
    assert tap.ended and tap.summary.error is not None


async def test_a_client_that_leaves_stops_the_loop():
    loop, _ = new_loop()
    stream, tap = spliced(loop)
    for chunk in [*sse(calling(stream=True)), b""]:
        stream(chunk)
    default = Streamed(200, sse(_messages(2, {"stream": True}, "")))
    assert not await stream.continue_rounds(opener(default), Sink(open_for=1))
    assert tap.ended


async def test_keepalive_comments_while_a_tool_runs(monkeypatch):
    import asyncio

    class Slow(Runner):
        async def call(self, tool, arguments):
            await asyncio.sleep(0.12)
            return await super().call(tool, arguments)

    monkeypatch.setattr(tool_loop, "KEEPALIVE", 0.03)
    loop, _ = new_loop(Slow())
    stream, _ = spliced(loop)
    for chunk in [*sse(calling(stream=True)), b""]:
        stream(chunk)
    sink = Sink()
    await stream.continue_rounds(opener(Streamed(200, sse(_messages(2, {"stream": True}, "")))),
                                 sink)
    assert sink.data.startswith(b": AI Bridge is running a tool\n\n")


def test_a_stream_that_calls_no_bridge_tool_passes_and_ends_at_once():
    loop, _ = new_loop()
    stream, tap = spliced(loop)
    out = b"".join(b"".join(stream(c)) for c in [*sse(_messages(1, {"stream": True}, "")), b""])
    assert stream.pending is None and tap.ended and tap.summary.completed
    assert [e.event for e in SSEParser().feed(out)].count("message_stop") == 1


def test_a_splicing_bug_ends_the_stream_with_an_error_event(monkeypatch):
    loop, _ = new_loop()
    stream, tap = spliced(loop)

    def boom(*_):
        raise RuntimeError("bug")
    monkeypatch.setattr(stream._splicer, "event", boom)
    out = b"".join(stream(sse(calling(stream=True))[0]))
    assert b"event: error" in out and stream.failure is not None
    assert stream(b"more") == []
    assert stream(b"") == [] and tap.ended and tap.summary.error is not None


# -- records and spans -----------------------------------------------------------------------


def test_each_call_is_recorded_with_a_span_under_its_interception():
    spans = InMemorySpanExporter()
    telemetry = Telemetry.from_settings("none", span_exporter=spans)
    submitted: list = []

    class Recorder:
        def submit(self, record):
            submitted.append(record)

    reporter = Reporter(Recorder(), telemetry)
    interception = Interception(provider="anthropic", provider_type="anthropic",
                                route="/v1/messages", model="claude-x", streaming=False,
                                actor=Actor("alice", {}),
                                credential=CredentialInfo(CredentialKind.CENTRALIZED, "sk", 2),
                                correlating_tool_call_id=None)
    started = InterceptionStarted(
        interception.id, interception.started_at, "alice", {}, "anthropic", "anthropic",
        "/v1/messages", "claude-x", False, "http", "curl", None, None, "centralized", "sk", 2,
        None)
    telemetry.interception_started(started, "api.anthropic.com", 443)
    record = record_calls(reporter, interception)
    record(1, ToolCall("toolu_1", NAME, '{"q":1}'), TOOL,
           CallOutcome("docs", "search", "x", True, 0, 0.5, "no answer within 0.5s"))
    row, = [r for r in submitted if isinstance(r, McpRound)]
    assert (row.interception_id, row.round, row.server, row.tool, row.injected_name,
            row.tool_call_id, row.arguments, row.error) == (
        interception.id, 1, "docs", "search", NAME, "toolu_1", '{"q":1}',
        "no answer within 0.5s")
    span, = spans.get_finished_spans()
    assert span.name == "execute_tool search"
    assert span.attributes["gen_ai.tool.call.id"] == "toolu_1"
    assert span.attributes["aibridge.mcp.server"] == "docs"
    assert span.parent is not None  # the interception's span, still open
    assert span.status.status_code.name == "ERROR"
    assert (span.end_time - span.start_time) == pytest.approx(0.5e9, rel=0.01)
