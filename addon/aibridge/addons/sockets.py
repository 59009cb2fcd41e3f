"""Responses over WebSocket (Codex's first choice): after a bridged handshake (101), each
`response.create` frame from the client is one interception. It passes the same admission
pipeline as an HTTP request; a refused one is dropped and answered with an error frame. The
provider's frames are read (never changed) for usage, and the terminal one ends it."""

from __future__ import annotations

import json
import logging

from mitmproxy import ctx, http

from aibridge.addons.runtime import Runtime
from aibridge.admission.pipeline import Candidate
from aibridge.errors.envelope import ErrorShape, ResponseError
from aibridge.flow import finish
from aibridge.flow.exchange import Phase
from aibridge.observe import flowview
from aibridge.observe.clients import guess_client
from aibridge.streaming.socket_session import Finished, SocketSession

logger = logging.getLogger("aibridge")


class Sockets:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def response(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if (ex is None or ex.ended or ex.websocket_api is None or ex.info is None
                or flow.response is None or flow.response.status_code != 101):
            return
        ex.phase = Phase.ENDED  # the socket's responses are interceptions of their own
        up = ex.provider.upstream
        self.runtime.sockets[flow] = SocketSession(
            ex.websocket_api, ex.provider.name, ex.provider.type,
            flow.request.path.split("?", 1)[0], ex.caller.actor, ex.info,
            guess_client(flow.request.headers, None), flow.request.headers.get("user-agent"),
            (up.host, up.port))

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        session = self.runtime.sockets.get(flow)
        if session is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        if not message.is_text:
            return
        reporter = self.runtime.reporter
        if message.from_client:
            opened = session.client_frame(message.text)
            if opened is None:
                return
            interception, body, info = opened
            reporter.started(interception, api=session.api, transport="websocket",
                             client=session.client, user_agent=session.user_agent, body=body,
                             server=session.server)
            ex = self.runtime.exchanges.get(flow)
            assert ex is not None
            candidate = Candidate(ex.provider, ex.match, session.route_path, ex.caller.token,
                                  body=body, info=info, actor=ex.caller.actor,
                                  body_bytes=len(message.content))
            try:
                assert self.runtime.pipelines is not None
                self.runtime.pipelines.frame.admit(candidate)
            except ResponseError as e:
                session.discard(interception)
                message.drop()
                ctx.master.commands.call("inject.websocket", flow, True,
                                         error_frame(e, ex.provider.api.errors).encode(), True)
                finish.refuse_socket_response(reporter, flow, interception, e,
                                              candidate.circuit_open)
                return
            session.admitted(interception, candidate.circuit)
            self.runtime.hold(interception, candidate.holds)
        elif (done := session.server_frame(message.text)) is not None:
            self._record_circuit(done)
            finish.end_socket_response(reporter, flow, done)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        session = self.runtime.sockets.pop(flow, None)
        if session is None:
            return
        self.runtime.exchanges.pop(flow, None)  # the handshake's, kept while the socket lived
        reason = flow.error.msg if flow.error else None
        for done in session.close(reason):
            self._record_circuit(done)
            finish.end_socket_response(self.runtime.reporter, flow, done)
        meta = flow.metadata.get(flowview.KEY, {})
        failed = any(i["outcome"] not in ("completed", "rejected", "warmup")
                     for i in meta.get("interceptions", []))
        meta["outcome"] = "failed" if failed else "completed"

    def _record_circuit(self, done: Finished) -> None:
        breakers = self.runtime.settings.breakers
        if breakers is None or done.circuit is None:
            return
        # As for HTTP: the provider failing counts, the request's own errors do not.
        failure = done.reason is not None and (
            done.summary.error_type in SERVER_SIDE or not done.summary.events)
        breakers.record(done.circuit, failure=failure)


SERVER_SIDE = frozenset({"overloaded_error", "overloaded", "server_error", "api_error"})


def error_frame(error: ResponseError, shape: ErrorShape) -> str:
    """A Responses WebSocket error event: the error object nested under `error`."""
    body = error.body(shape)
    return json.dumps({"type": "error", "status": error.status, "error": body["error"]},
                      separators=(",", ":"))
