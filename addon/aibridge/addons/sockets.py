"""Responses over WebSocket (Codex's first choice): after a bridged handshake (101), each
`response.create` frame from the client is one interception. It passes the same admission
pipeline as an HTTP request; a refused one is dropped and answered with an error frame. The
provider's frames are read (never changed) for usage, and the terminal one ends it."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable

from mitmproxy import ctx, http
from mitmproxy.websocket import WebSocketMessage

from aibridge.addons.runtime import Runtime
from aibridge.admission.pipeline import Candidate
from aibridge.admission.secrets import encode
from aibridge.errors.envelope import ErrorShape, ResponseError
from aibridge.flow import finish
from aibridge.flow.exchange import Phase
from aibridge.intercept import Interception
from aibridge.observe import flowview
from aibridge.observe.clients import guess_client
from aibridge.streaming.socket_session import Finished, SocketSession

logger = logging.getLogger("aibridge")


class Sockets:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Client frames sent with a secret that scanning logged: masked in the flow's copy at
        # the socket's next message (by then mitmproxy has sent them).
        self.pending: weakref.WeakKeyDictionary[http.HTTPFlow, list[Callable[[], None]]] = (
            weakref.WeakKeyDictionary())

    def response(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if (ex is None or ex.ended or ex.websocket_api is None or ex.info is None
                or flow.response is None or flow.response.status_code != 101):
            return
        ex.phase = Phase.ENDED  # the socket's responses are interceptions of their own
        up = ex.provider.upstream_for(flow.client_conn.sni)
        self.runtime.sockets[flow] = SocketSession(
            ex.websocket_api, ex.provider.name, ex.provider.type,
            flow.request.path.split("?", 1)[0], ex.caller.actor, ex.info,
            guess_client(flow.request.headers, None), flow.request.headers.get("user-agent"),
            (up.host, up.port), keep_output=self.runtime.reporter.wants_output)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        session = self.runtime.sockets.get(flow)
        if session is None or flow.websocket is None:
            return
        self._mask_sent(flow)  # the frames before this one are on their way
        message = flow.websocket.messages[-1]
        if not message.is_text:
            return
        reporter = self.runtime.reporter
        if message.from_client:
            opened = session.client_frame(message.text)
            if opened is None:
                return
            interception = opened.interception
            ex = self.runtime.exchanges.get(flow)
            assert ex is not None
            candidate = Candidate(ex.provider, ex.match, session.route_path, ex.caller.token,
                                  body=opened.body, info=opened.info, actor=ex.caller.actor,
                                  body_bytes=len(message.content), wire=session.api)
            try:
                assert self.runtime.pipelines is not None
                self.runtime.pipelines.frame.admit(candidate)
            except ResponseError as e:
                self._started(flow, session, interception, candidate, message, sent=False)
                session.discard(interception)
                message.drop()
                ctx.master.commands.call("inject.websocket", flow, True,
                                         error_frame(e, ex.provider.api.errors).encode(), True)
                finish.refuse_socket_response(reporter, flow, interception, e,
                                              candidate.circuit_open)
                return
            if candidate.secrets is not None and candidate.secrets.rewritten:
                message.text = encode(opened.frame).decode()  # redacted: this goes upstream
            self._started(flow, session, interception, candidate, message, sent=True)
            session.admitted(interception, candidate.circuit)
            self.runtime.hold(interception, candidate.holds)
        elif (done := session.server_frame(message.text)) is not None:
            self._record_circuit(done)
            finish.end_socket_response(reporter, flow, done)

    def _started(self, flow: http.HTTPFlow, session: SocketSession, interception: Interception,
                 candidate: Candidate, message: WebSocketMessage, *, sent: bool) -> None:
        """The interception is recorded (after admission: with the body as it went, or would
        have gone, upstream), with what secret scanning found; a secret the frame still holds
        is masked in the copy the flow keeps: at once if it was not sent, else once it was."""
        self.runtime.reporter.started(
            interception, api=session.api, transport="websocket", client=session.client,
            user_agent=session.user_agent, body=candidate.body, server=session.server)
        found = candidate.secrets
        if found is None:
            return
        flowview.secrets(flow, found.findings)
        self.runtime.reporter.findings(interception, found.findings)
        if found.mask is None:
            return

        def mask() -> None:
            if (masked := found.mask_frame(message.text)) is not None:
                message.text = masked

        if sent:
            self.pending.setdefault(flow, []).append(mask)
        else:
            mask()

    def _mask_sent(self, flow: http.HTTPFlow) -> None:
        for mask in self.pending.pop(flow, ()):
            try:
                mask()
            except Exception:  # a bug here must not break the socket
                logger.exception("aibridge: masking secrets in a kept frame failed")

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._mask_sent(flow)
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
