"""The bridge core: route → admit → rewrite → tap → finish, for every flow on a provider host.

Hook order for a provider request (lazy connection strategy): tls_clienthello (decrypt provider
hosts only) → requestheaders (route, head checks) → request (body, admission, credential,
rewrite) → responseheaders (scrub the key, tap SSE) → response | error (failover, error
conversion, circuit, finish). Proxy access, egress and health run before this addon in the
chain; WebSocket sessions and upstream failures after it.
"""

from __future__ import annotations

import logging

from mitmproxy import http, tls
from mitmproxy.proxy import server_hooks

from aibridge.addons import client_writer, tool_rounds
from aibridge.addons.mitm_shim import Handover
from aibridge.addons.runtime import UNREAD_HOST, Runtime, fail_closed
from aibridge.admission.pipeline import Candidate
from aibridge.admission.steps import Pipelines
from aibridge.errors.convert import convert_error, converted_response_headers
from aibridge.errors.envelope import ResponseError
from aibridge.errors.proxy_failures import interrupted, is_client_cancel, unreachable
from aibridge.flow import fallback as fallback_flow
from aibridge.flow import finish, passthrough
from aibridge.flow.exchange import Exchange, Phase
from aibridge.flow.start import HANDSHAKE, open_interception, placeholder
from aibridge.intercept import CredentialKind, is_websocket_upgrade, new_credential_info
from aibridge.intercept.headers import without_actor_headers
from aibridge.observe import flowview
from aibridge.providers import BRIDGED, PASSTHROUGH, UNTOUCHED, Upstream
from aibridge.providers.base import WireApi
from aibridge.streaming.tap import StreamTap
from aibridge.upstream import failover, fallback
from aibridge.upstream.privacy import strip_client_identity
from aibridge.upstream.rewrite import retarget, rewrite_for_upstream
from aibridge.upstream.scrub import redact, reveal, scrub, sent_secrets

logger = logging.getLogger("aibridge")


class BridgeCore:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def running(self) -> None:
        self.runtime.splice_problems = client_writer.problems()
        if self.runtime.splice_problems:
            logger.warning("aibridge: MCP tools are offered on non-streaming requests only: "
                           f"{'; '.join(self.runtime.splice_problems)}")
        self.runtime.mcp.start()

    async def done(self) -> None:
        await self.runtime.mcp.close()

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if self.runtime.settings.registry.for_host(data.client_hello.sni) is None:
            # Tunnelled, never decrypted: to the CONNECT target, which the egress addon checks
            # when mitmproxy opens it, even when that target names a provider host.
            data.ignore_connection = True
        elif b"http/1.1" in data.client_hello.alpn_protocols:
            # One request per connection at a time lets each failure be answered exactly
            # (see mitm_shim); LLM clients gain nothing from h2 on these hosts. A client that
            # offers only h2 gets it, so that it can read why each request is refused
            # (admission's Http1Only); mitmproxy never opens the upstream for those.
            data.context.client.alpn = b"http/1.1"

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        provider = self.runtime.provider_of(flow)
        caller = self.runtime.caller_of(flow)
        if provider is None or caller is None:
            return
        request = flow.request
        match = provider.match(request.method, request.path)
        if match.target is not None and match.target != request.path:
            request.path = match.target  # routed on its normal form, and sent upstream in it
        ex = Exchange(provider, match, caller)
        ex.client_close = "close" in request.headers.get("connection", "").lower()
        if is_websocket_upgrade(request.method, request.headers):
            ex.websocket_api = provider.websocket_api(request.path)
        self.runtime.exchanges[flow] = ex
        flowview.start(flow, provider, ex.match, caller.actor)
        try:
            self._pipelines().head.admit(self._candidate(flow, ex))
            if ex.match.kind == PASSTHROUGH and passthrough.streams_body(request):
                self._stream_passthrough(flow, ex)
        except ResponseError as e:
            self._refuse(flow, ex, e, unread=passthrough.streams_body(request))

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.address is not None and data.server.address[0] == UNREAD_HOST:
            data.server.error = "refused by aibridge before its body was read"

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if ex is None or flow.response is not None or ex.phase is not Phase.HEADERS:
            return  # (a streamed passthrough was forwarded from its request headers)
        if (hidden := self.runtime.hidden.pop(flow, None)) is not None:
            reveal(flow.request, hidden)  # the credentials as sent (addons.masking hid them)
        if ex.match.kind == UNTOUCHED:
            # As sent, except that the trusted actor headers only ever come from the bridge.
            flow.request.headers = without_actor_headers(flow.request.headers)
            retarget(flow.request, ex.provider, _upstream(flow, ex))
            ex.phase = Phase.FORWARDED
            return
        bridged = ex.match.kind == BRIDGED
        pipelines = self._pipelines()
        candidate = self._candidate(flow, ex)
        try:
            (pipelines.bridged if bridged else pipelines.passthrough).admit(candidate)
        except ResponseError as e:
            ex.circuit_open = candidate.circuit_open
            if bridged and fallback_flow.divert(flow, ex, candidate, e, self._routes(),
                                                pipelines.bridged, self.runtime.reporter,
                                                self.runtime.hold):
                return  # served by the fallback's provider ([[fallbacks]])
            if candidate.info is not None:  # a malformed request never becomes an interception
                open_interception(self.runtime.reporter, flow, ex, candidate.info,
                                  candidate.body, placeholder(ex.provider))
            elif ex.websocket_api is not None:
                open_interception(self.runtime.reporter, flow, ex, HANDSHAKE, None,
                                  placeholder(ex.provider))
            self._secrets(flow, ex, candidate)
            self._refuse(flow, ex, e)
            return
        credential = candidate.credential
        assert credential is not None
        ex.admission, ex.credential, ex.info = candidate.circuit, credential, credential.info
        if candidate.info is not None:
            open_interception(self.runtime.reporter, flow, ex, candidate.info, candidate.body,
                              credential.info)
        self._secrets(flow, ex, candidate)
        self.runtime.hold(ex.interception, candidate.holds)
        if ex.provider.strip_client_identity:
            strip_client_identity(flow.request, candidate.body)  # after it was recorded
        tool_rounds.offer(self.runtime, flow, ex, candidate.body)  # MCP tools, if any
        rewrite_for_upstream(flow.request, ex.provider, credential, ex.caller.actor,
                             _upstream(flow, ex))
        flowview.sent(flow, credential.info, ex.interception)
        ex.phase = Phase.FORWARDED

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if ex is None or flow.response is None or ex.ended:
            return
        ex.stop_timer()
        self._scrub(flow, ex)
        response = flow.response
        if ex.client_close:
            response.headers["Connection"] = "close"  # honour it: we removed it upstream
        if ex.fallback is not None and ex.api is not None and fallback_flow.relay(
                response, ex, StreamTap(ex.api, None,
                                        keep_events=self.runtime.reporter.wants_output)):
            return  # Bedrock's event-stream re-emitted as the client's SSE
        if 200 <= response.status_code < 300 and is_event_stream(response, ex.api):
            if ex.interception is not None and ex.api is not None:
                ex.tap = StreamTap(ex.api, response.headers.get("content-encoding"),
                                   keep_events=self.runtime.reporter.wants_output)
                response.stream = ex.tap
                if ex.tool_loop is not None:
                    ex.tap = StreamTap(ex.api, None, keep_events=self.runtime.reporter.wants_output)
                    response.stream = tool_rounds.splice(flow, ex, ex.tap)
            else:
                response.stream = passthrough.Meter()
        elif response.stream is True and ex.match.kind == PASSTHROUGH:
            response.stream = passthrough.Meter()  # streamed by mitmproxy's own option

    async def response(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if ex is None or flow.response is None or ex.ended:
            return
        ex.stop_timer()
        self._scrub(flow, ex)
        cred = ex.credential
        if cred is not None and cred.key is not None and not ex.synthesized:
            await self._fail_over(flow, ex)
        if ex.fallback is not None:
            fallback_flow.answered(flow.response, ex)
        elif (trigger := fallback_flow.after_answer(flow.response, ex)) is not None:
            await self._rescue(flow, ex, trigger)
        if ex.tool_loop is not None:
            await tool_rounds.rounds(self.runtime, flow, ex)  # MCP tool calls: later rounds
        # Before the client, a conversion or a log line reads an answer that echoes the key.
        redact(flow.response, sent_secrets(cred))
        if flow.response.status_code == 101 and ex.websocket_api is not None:
            return  # a WebSocket session takes over (addons.sockets)
        self._record_handshake(flow, ex)
        if flow.response.status_code >= 400 and not ex.synthesized and ex.match.kind != UNTOUCHED:
            self._convert_error(flow, ex)
        if cred is not None and cred.attempt is not None:
            cred.attempt.finish()
        self._record_circuit(ex, flow.response.status_code)
        self._end(flow, ex)

    async def error(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if ex is None or ex.ended:
            return
        ex.stop_timer()
        self._scrub(flow, ex)
        # A flow the bridge killed on its upstream timeout is a failure, not a client cancel.
        cancelled = (flow.error is not None and ex.timed_out is None
                     and is_client_cancel(flow.error.msg))
        if not cancelled and flow.response is None and await self._rescue_unreachable(flow, ex):
            return
        client_status = None
        if not cancelled:
            client_status = self._explain_failure(flow, ex)
        if ex.credential is not None and ex.credential.attempt is not None:
            ex.credential.attempt.finish()
        breakers = self.runtime.settings.breakers
        if ex.admission is not None and breakers is not None:
            if cancelled:
                breakers.release(ex.admission)
            elif flow.response is None:  # no answer at all: the provider is unreachable
                breakers.record(ex.admission, failure=True)
            else:
                self._record_circuit(ex, flow.response.status_code)
            ex.admission = None
        self._record_handshake(flow, ex)
        self._end(flow, ex, client_status)

    # -- helpers ---------------------------------------------------------------------------

    def _secrets(self, flow: http.HTTPFlow, ex: Exchange, candidate: Candidate) -> None:
        """What secret scanning found: recorded, shown, and still to mask in the kept body."""
        found = candidate.secrets
        if found is None:
            return
        ex.mask_stored = found.mask_stored if found.mask is not None else None
        flowview.secrets(flow, found.findings)
        if ex.interception is not None:
            self.runtime.reporter.findings(ex.interception, found.findings)

    def _record_handshake(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        """A WebSocket upgrade that did not become a socket is recorded like a failed request
        (its responses would have been the interceptions)."""
        if ex.websocket_api is not None and ex.interception is None and ex.credential:
            open_interception(self.runtime.reporter, flow, ex, HANDSHAKE, None,
                              ex.credential.info)

    def _refuse(self, flow: http.HTTPFlow, ex: Exchange, error: ResponseError, *,
                unread: bool = False) -> None:
        finish.refuse(self.runtime.reporter, flow, ex, error)
        del self.runtime.exchanges[flow]
        handover = self.runtime.handovers.get(flow.client_conn)
        if unread and handover is not None and not self.runtime.shim_problems \
                and flow.request.http_version in ("HTTP/1.1", "HTTP/1.0"):
            self._leave_unread(flow, handover)
        else:
            flow.request.stream = False  # mitmproxy sends no answer to a streaming request

    @staticmethod
    def _leave_unread(flow: http.HTTPFlow, handover: Handover) -> None:
        """Answer a refused request with a large or chunked body now, and close, leaving the
        body unread: mitmproxy reads the whole body (whatever its size) before it sends an
        answer set in `requestheaders`. Instead the request streams towards an address
        `server_connect` refuses to open; mitmproxy answers that failure, and the shim
        (addons.mitm_shim) sends the handover's answer in its place, with `Connection: close`.
        """
        handover.response, flow.response = flow.response, None
        flow.request.headers.pop("expect", None)  # no "100 Continue" that invites the body
        flow.request.data.host, flow.request.data.port = UNREAD_HOST, 9
        flow.request.stream = True

    def _stream_passthrough(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        """A large (or chunked) passthrough body goes upstream as it arrives (flow.passthrough):
        admitted and rewritten now, since its headers leave right after this hook."""
        candidate = self._candidate(flow, ex)
        self._pipelines().passthrough.admit(candidate)
        credential = candidate.credential
        assert credential is not None
        ex.credential, ex.info = credential, credential.info
        if ex.provider.strip_client_identity:
            strip_client_identity(flow.request, None)
        framing = passthrough.framing(flow.request)
        rewrite_for_upstream(flow.request, ex.provider, credential, ex.caller.actor,
                             _upstream(flow, ex))
        passthrough.keep_framing(flow.request, framing)
        flow.request.stream = passthrough.Meter()
        flowview.sent(flow, credential.info, None)
        ex.phase = Phase.FORWARDED

    def _end(self, flow: http.HTTPFlow, ex: Exchange, client_status: int | None = None) -> None:
        finish.end(self.runtime.reporter, flow, ex, client_status)
        del self.runtime.exchanges[flow]

    def _routes(self) -> fallback_flow.Routes:
        settings = self.runtime.settings
        return fallback_flow.routes_of(settings.registry, settings.config.fallbacks)

    async def _rescue(self, flow: http.HTTPFlow, ex: Exchange, trigger: str) -> bool:
        """The fallback's provider answers instead (upstream.fallback); the first provider's
        failure still counts against its circuit."""
        assert flow.response is not None
        routes = self._routes()
        if routes.for_provider(ex.provider) is None:
            return False
        answer = await fallback_flow.rescue(flow, ex, trigger, routes,
                                            self.runtime.resend_client())
        if answer is None:
            return False
        self._record_circuit(ex, flow.response.status_code if flow.response else 502)
        if ex.client_close:
            answer.headers["Connection"] = "close"
        flow.response = answer
        ex.synthesized, ex.pool_error = False, None
        return True

    async def _rescue_unreachable(self, flow: http.HTTPFlow, ex: Exchange) -> bool:
        """The provider could not be reached: the fallback's answer goes to the client in place
        of the error (through the shim's handover, as mitmproxy ignores a response set here)."""
        handover = self.runtime.handovers.get(flow.client_conn)
        if handover is None or self.runtime.shim_problems or ex.interception is None:
            return False
        flow.response = http.Response.make(502)  # what the first provider amounted to
        if not await self._rescue(flow, ex, fallback.UNREACHABLE):
            flow.response = None
            return False
        handover.response, flow.error = flow.response, None
        if ex.credential is not None and ex.credential.attempt is not None:
            ex.credential.attempt.finish()
        self._end(flow, ex)
        return True

    def _pipelines(self) -> Pipelines:
        assert self.runtime.pipelines is not None
        return self.runtime.pipelines

    @staticmethod
    def _candidate(flow: http.HTTPFlow, ex: Exchange) -> Candidate:
        return Candidate(ex.provider, ex.match, flow.request.path.split("?", 1)[0],
                         ex.caller.token, request=flow.request, actor=ex.caller.actor)

    async def _fail_over(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        assert flow.response is not None and ex.credential is not None
        cred = ex.credential
        # Neither a stream nor a WebSocket handshake can be re-sent from here.
        streaming = ex.websocket_api is not None or bool(flow.request.stream) or (
            ex.interception.streaming if ex.interception else False)
        try:
            outcome = await failover.after_response(
                flow.response, ex.upstream_provider, cred, streaming=streaming,
                client=self.runtime.resend_client, request=flow.request)
        except Exception:  # a bug here must not cost the client the provider's answer
            logger.exception("aibridge: failover failed; returning the provider's answer")
            return
        if outcome.key is not cred.key:
            info = new_credential_info(CredentialKind.CENTRALIZED, outcome.key.secret,
                                       cred.header)
            if ex.interception is not None:
                self.runtime.reporter.failover(ex.interception, cred.info.hint, info.hint,
                                               f"upstream status {flow.response.status_code}")
                ex.interception.credential = info
            ex.info = info
            if ex.tool_loop is not None:  # later tool rounds go with the key that answered
                ex.tool_loop.auth_value = ex.provider.api.credential.value(outcome.key.secret)
            flowview.sent(flow, info, ex.interception)
        flow.metadata[flowview.KEY]["key_attempts"] = (
            cred.attempt.attempts if cred.attempt else 1)
        if outcome.response is not None:
            flow.response = outcome.response
            scrub(flow.request, cred.header, ex.info)
        elif outcome.error is not None:
            if outcome.pool_error is not None:
                ex.pool_error = str(outcome.pool_error.kind)
            headers = failover.RETRY_NOW if outcome.retry_now else None
            flow.response = outcome.error.to_response(ex.provider.api.errors, headers=headers)
            ex.synthesized = True

    def _convert_error(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        response = flow.response
        assert response is not None
        body = response.get_content(strict=False) or b""
        converted = convert_error(ex.provider.name, ex.provider.api.errors,
                                  response.status_code, response.headers, body,
                                  error_format=self.runtime.settings.config.resilience.error_format)
        if converted is not None:
            response.headers = converted_response_headers(response.headers)
            response.content = converted

    def _record_circuit(self, ex: Exchange, status: int) -> None:
        breakers = self.runtime.settings.breakers
        if breakers is None or ex.admission is None:
            return
        overloaded = ex.tap is not None and ex.tap.summary.error_type in (
            "overloaded_error", "overloaded")
        breakers.record(ex.admission, failure=breakers.is_failure_status(status) or overloaded)
        ex.admission = None

    def _explain_failure(self, flow: http.HTTPFlow, ex: Exchange) -> int | None:
        """What the client is told instead of mitmproxy's HTML page or a cut stream, handed to
        the mitmproxy shim (addons.upstream_failures). Returns the status the client gets."""
        errors = ex.provider.api.errors
        handover = self.runtime.handovers.get(flow.client_conn)
        if flow.response is None:
            reach, up = self.runtime.reach, _upstream(flow, ex)
            error = unreachable(ex.provider.name, flow, timed_out=ex.timed_out,
                                retried_for=reach.window if reach.gave_up(
                                    (up.host, up.port)) else None)
            # The client's message names no address; the operator's log keeps the details.
            logger.warning(f"aibridge: {ex.provider.name}: upstream {flow.request.host}:"
                           f"{flow.request.port}: "
                           f"{flow.error.msg if flow.error else 'no response'}")
            if handover is not None:
                handover.response = error.to_response(errors)
            if flow.error is not None:
                flow.error.msg = error.message
            return error.status
        if ex.tap is not None and ex.api is not None and handover is not None:
            reason = flow.error.msg if flow.error else "unknown"
            error = interrupted(ex.provider.name, reason)
            handover.tail = ex.tap.error_tail(error.body(errors))
        return None

    def _scrub(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        cred = ex.credential
        if cred is None or ex.scrubbed:
            return
        scrub(flow.request, cred.header, cred.info)
        ex.scrubbed = True


def _upstream(flow: http.HTTPFlow, ex: Exchange) -> Upstream:
    """Where the flow's request goes: the provider's upstream for the host it was decrypted for."""
    return ex.provider.upstream_for(flow.client_conn.sni)


def is_event_stream(response: http.Response, api: WireApi | None = None) -> bool:
    """An SSE answer, or a stream in the framing of the route's API (Bedrock's event-stream)."""
    content_type = response.headers.get("content-type", "").lower()
    return content_type.startswith("text/event-stream") or (
        api is not None and api.streams(content_type))

