"""The core's side of the MCP tool loop (streaming/tool_loop.py), one function per hook:

- `offer` (request): the caller's MCP tools appended to a bridged request, before it is
  rewritten for the upstream; a streaming request then asks for an uncompressed answer.
- `splice` (responseheaders): a 2xx stream goes through the loop's `SplicedStream`, which
  holds back the bridge tools' events and feeds the stream tap what the client gets.
- `rounds` (response): run the calls and send the follow-up rounds: a whole answer is replaced
  by the merged one; a stream goes on in the same response body.
"""

from __future__ import annotations

import functools
import json
import logging

import httpx2
from mitmproxy import ctx, http

from aibridge.addons import client_writer
from aibridge.addons.runtime import Runtime
from aibridge.admission.secrets import SecretScan
from aibridge.errors.proxy_failures import interrupted
from aibridge.flow.exchange import Exchange
from aibridge.observe import flowview
from aibridge.streaming.tap import StreamTap
from aibridge.streaming.tool_loop import Answer, SplicedStream, ToolLoop, record_calls
from aibridge.summary import ToolCall
from aibridge.upstream.followup import FollowUps

logger = logging.getLogger("aibridge")


def offer(runtime: Runtime, flow: http.HTTPFlow, ex: Exchange, body: object) -> None:
    mcp = runtime.mcp
    if not mcp.active or ex.interception is None:
        return
    if ex.provider.strip_client_identity and isinstance(body, dict) and "metadata" in body:
        # What goes upstream is the request as strip_client_identity left it.
        body = json.loads(flow.request.get_content(strict=False) or b"{}")
    wire = ex.api.tool_wire() if ex.api is not None else None
    if wire is not None and isinstance(body, dict) and runtime.tool_aliases:
        rechained = dict(body)
        if wire.rechain(rechained, runtime.tool_aliases.get):
            body = rechained  # continues from a spliced stream: from its last round
            flow.request.content = json.dumps(body, ensure_ascii=False,
                                              separators=(",", ":")).encode()
    streaming = ex.interception.streaming
    if streaming and runtime.splice_problems:
        return  # the later rounds of a stream could not reach the client
    loop = ToolLoop.offer_tools(ex.api, body, mcp.offer(ex.caller.actor), mcp,
                                max_rounds=mcp.config.max_rounds,
                                record=record_calls(runtime.reporter, ex.interception))
    if loop is None:
        return
    loop.aliases = runtime.tool_aliases
    if runtime.secret_scan is not None:
        loop.screen = functools.partial(_screen, runtime.secret_scan, runtime, flow, ex)
    flow.request.content = loop.encoded()
    if streaming:
        flow.request.headers["Accept-Encoding"] = "identity"  # spliced as plain text
    ex.tool_loop = loop


def _screen(scan: SecretScan, runtime: Runtime, flow: http.HTTPFlow, ex: Exchange,
            call: ToolCall, text: str) -> str:
    """A bridge tool's result is scanned like what a client sends, before the next round
    takes it upstream; what is found is recorded like a request's findings."""
    assert ex.interception is not None
    text, found = scan.screen(ex.caller.actor, ex.provider.name,
                              f"result of bridge tool {call.name} (call {call.id})", text)
    if found:
        runtime.reporter.findings(ex.interception, found)
        flowview.secrets(flow, found)
    return text


def splice(flow: http.HTTPFlow, ex: Exchange, tap: StreamTap) -> SplicedStream:
    """The stream callable of a 2xx stream with MCP tools; `tap` reads what the client gets,
    which is plain (the upstream's encoding is undone here) and chunked (later rounds follow)."""
    loop = ex.tool_loop
    assert loop is not None and flow.response is not None and ex.api is not None
    headers = flow.response.headers
    encoding = headers.pop("content-encoding", None)
    headers.pop("content-length", None)
    headers["transfer-encoding"] = "chunked"
    api, errors, provider = ex.api, ex.provider.api.errors, ex.provider.name

    def broken(reason: str) -> bytes:
        return api.stream_error_tail(interrupted(provider, reason).body(errors))

    loop.stream = SplicedStream(loop, tap, encoding, broken)
    return loop.stream


async def rounds(runtime: Runtime, flow: http.HTTPFlow, ex: Exchange) -> None:
    loop, response, cred = ex.tool_loop, flow.response, ex.credential
    if loop is None or response is None or cred is None or ex.synthesized:
        return
    follow_ups = FollowUps(runtime.resend_client(), flow.request, cred.header,
                           loop.auth_value or cred.value)
    try:
        if getattr(ex, "fallback", None) is not None:
            _hide_calls(response, loop)  # another provider answered: no rounds with it
        elif loop.stream is not None:
            await _stream_rounds(flow, loop.stream, follow_ups)
        elif 200 <= response.status_code < 300:
            await _whole_rounds(flow, ex, loop, follow_ups)
    except Exception as e:  # a bug, or a follow-up that could not be sent
        logger.warning(f"aibridge: MCP tool loop failed: {type(e).__name__}: {e}")
        if loop.stream is None:
            error = interrupted(ex.provider.name, f"follow-up request failed: {type(e).__name__}")
            flow.response = error.to_response(ex.provider.api.errors)
            ex.synthesized = True


async def _stream_rounds(flow: http.HTTPFlow, stream: SplicedStream,
                         follow_ups: FollowUps) -> None:
    if stream.pending is None:
        return
    sink = client_writer.for_flow(ctx.master.addons.get("proxyserver"), flow)
    if sink is None:
        logger.error("aibridge: the client connection of a stream with MCP tools is gone "
                     "from mitmproxy's connections; the stream ends after its first round")
        stream.tap(b"")
        return
    if not await stream.continue_rounds(follow_ups.stream, sink):
        flow.error = http.Error("Client disconnected.")  # recorded as a cancel


async def _whole_rounds(flow: http.HTTPFlow, ex: Exchange, loop: ToolLoop,
                        follow_ups: FollowUps) -> None:
    response = flow.response
    assert response is not None
    try:
        first = json.loads(response.get_content(strict=False) or b"")
    except ValueError:
        return
    if not isinstance(first, dict):
        return

    async def send(body: bytes) -> Answer:
        try:
            answer = await follow_ups.send(body)
        except httpx2.HTTPError as e:
            raise ConnectionError(f"follow-up request failed: {type(e).__name__}") from e
        parsed = None
        if 200 <= answer.status_code < 300:
            try:
                parsed = json.loads(answer.get_content(strict=False) or b"")
            except ValueError:
                parsed = None
        return Answer(answer.status_code, parsed if isinstance(parsed, dict) else None, answer)

    result = await loop.whole(first, send)
    if isinstance(result, Answer):
        assert isinstance(result.response, http.Response)
        flow.response = result.response  # the failed round's answer, converted as any error
    elif result is not first:
        response.content = json.dumps(result, ensure_ascii=False,
                                      separators=(",", ":")).encode()


def _hide_calls(response: http.Response, loop: ToolLoop) -> None:
    """A whole answer without the calls of the bridge's tools (none of them is run)."""
    if not 200 <= response.status_code < 300 or loop.stream is not None:
        return
    try:
        answer = json.loads(response.get_content(strict=False) or b"")
    except ValueError:
        return
    if isinstance(answer, dict) and any(loop.injected(c.name) for c in loop.wire.calls(answer)):
        hidden = loop.wire.merge([answer], loop.injected, dropped_calls=True)
        response.content = json.dumps(hidden, ensure_ascii=False, separators=(",", ":")).encode()
