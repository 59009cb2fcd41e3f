"""The mitmproxy hooks: a thin layer that asks the modules underneath what to do.

Hook order for a provider request (lazy connection strategy): http_connect (who is calling) →
tls_clienthello (decrypt provider hosts only) → requestheaders (route, early size check) →
request (body, credential, headers, destination) → responseheaders (scrub the key, tap SSE) →
response | error (summary, metadata, log line).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass

import httpx2
from mitmproxy import connection, ctx, exceptions, http, tls
from mitmproxy.proxy import server_hooks

from aibridge.access import egress
from aibridge.access.actors import REALM, parse_proxy_authorization, token_digest
from aibridge.access.failure_limit import AuthFailureLimiter
from aibridge.addons import mitm_shim as mitm_internals
from aibridge.admission.body import declared_too_large, parse_json_object, too_large
from aibridge.admission.credential import UpstreamCredential, resolve_credential
from aibridge.config import ConfigError
from aibridge.counters import Registry
from aibridge.errors import categories as error_types
from aibridge.errors import proxy_failures as failures
from aibridge.errors.convert import convert_error, converted_response_headers
from aibridge.intercept import (
    FAILOVER_KEY_HINT,
    OPENAI_ERR_TYPE_API,
    OPENAI_ERR_TYPE_INVALID_REQUEST,
    OPENAI_ERR_TYPE_NOT_FOUND,
    Actor,
    CredentialInfo,
    CredentialKind,
    Interception,
    ResponseError,
    is_websocket_upgrade,
    new_credential_info,
    new_response_error,
)
from aibridge.keys import failover, resend
from aibridge.keys.circuit import Admission, circuit_open_error
from aibridge.keys.pool import KeyPoolError
from aibridge.observe import accesslog, health
from aibridge.observe import flowview as flowinfo
from aibridge.observe.clients import guess_client
from aibridge.observe.reporting import Reporter
from aibridge.observe.telemetry import Telemetry, TelemetryConfigError
from aibridge.providers import BRIDGED, UNKNOWN, UNTOUCHED, Provider, RouteMatch
from aibridge.providers.parsing import RequestInfo, parse_request
from aibridge.recording.recorder import Recorder, RecordingError
from aibridge.settings import Settings
from aibridge.streaming.socket_session import Finished, SocketSession
from aibridge.streaming.tap import StreamTap
from aibridge.textsafe import storable
from aibridge.upstream.privacy import strip_client_identity
from aibridge.upstream.rewrite import retarget, rewrite_for_upstream

logger = logging.getLogger("aibridge")
MITMWEB_DEFAULT_COLUMNS = ["tls", "icon", "path", "method", "status", "size", "time"]
MAX_HEAD_BYTES = 64 << 10  # provider APIs refuse larger heads anyway; we never forward them


@dataclass(frozen=True)
class Caller:
    actor: Actor
    token: bytes | None  # SHA-256 of the proxy token, to tell it apart from a provider key


@dataclass
class FlowState:
    provider: Provider
    match: RouteMatch
    caller: Caller
    credential: UpstreamCredential | None = None
    info: CredentialInfo | None = None
    scrubbed: bool = False
    interception: Interception | None = None
    admission: Admission | None = None
    tap: StreamTap | None = None
    timer: asyncio.TimerHandle | None = None
    timed_out: float | None = None  # the timeout that fired, in seconds
    synthesized: bool = False  # the response is the bridge's own, not the provider's
    client_close: bool = False  # the client sent `Connection: close` (stripped upstream)
    client_status: int | None = None  # what the client got when the provider sent nothing
    websocket_route: str | None = None  # a WebSocket handshake that opens a bridged route
    started_mono: float = 0.0  # monotonic clock at interception start, for time to first token
    circuit_open: bool = False  # the bridge refused because the breaker is open
    pool_error: str | None = None  # rate_limited | auth_failed when the key pool ran out

    @property
    def anthropic(self) -> bool:
        return self.provider.type == "anthropic"

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Bridge:
    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.counters = Registry()  # survives config reloads; telemetry reads it
        self._client: httpx2.AsyncClient | None = None  # for failover re-sends
        self.recorder: Recorder | None = None
        self.telemetry: Telemetry | None = None
        self.reporter = Reporter(None, None)
        self._shim_problems: list[str] = []
        self._auth_failures = AuthFailureLimiter()
        self._watcher: asyncio.Task | None = None
        self._pinned: weakref.WeakKeyDictionary[connection.Client, tuple] = (
            weakref.WeakKeyDictionary())
        self._plain_requests: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self._callers: weakref.WeakKeyDictionary[connection.Client, Caller] = (
            weakref.WeakKeyDictionary())
        self._flows: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = (
            weakref.WeakKeyDictionary())
        self._sockets: weakref.WeakKeyDictionary[http.HTTPFlow, SocketSession] = (
            weakref.WeakKeyDictionary())

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("bridge_config", str | None, None,
                          "AI Bridge configuration file (TOML). Keys never go in options.")
        loader.add_option("bridge_access_log", str, "stderr",
                          "Where the one line per interception goes: stderr, event-log "
                          "(mitmproxy's log, shown in mitmweb), a file path, or off.")

    def configure(self, updated: set[str]) -> None:
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager dials the real host at CONNECT time, before we can choose the upstream or
            # answer offline; lazy lets the request hook decide first.
            logger.info("aibridge: using connection_strategy=lazy")
            ctx.options.connection_strategy = "lazy"
        if "web_columns" in updated and "comment" not in ctx.options.web_columns \
                and list(ctx.options.web_columns) == MITMWEB_DEFAULT_COLUMNS:
            # mitmweb hides flow comments by default; ours say actor, model, key hint, tokens.
            ctx.options.web_columns = [*MITMWEB_DEFAULT_COLUMNS, "comment"]
        if "bridge_access_log" in updated:
            accesslog.configure(ctx.options.bridge_access_log)
        if "bridge_config" in updated:
            try:
                settings = Settings.load(ctx.options.bridge_config, self.counters)
            except ConfigError as e:
                raise exceptions.OptionsError(f"aibridge: {e}") from None
            self._guard_open_proxy(settings)
            self._start_reporting(settings)
            self.settings = settings
            for line in settings.describe():
                logger.info(f"aibridge: {line}")
            logger.info(f"aibridge: {self._reporting_summary()}")

        if self._client is not None and updated & {"bridge_config", "ssl_insecure",
                                                   "ssl_verify_upstream_trusted_ca", "mode",
                                                   "upstream_auth"}:
            old, self._client = self._client, None
            asyncio.get_running_loop().create_task(old.aclose())

        elif self.settings and updated & {"mode", "listen_host", "listen_port"}:
            self._guard_open_proxy(self.settings)

    def _guard_open_proxy(self, settings: Settings) -> None:
        if settings.actors.requires_auth or settings.config.auth.allow_open_proxy:
            return
        problem = health.open_proxy_problem(self._listen_addresses())
        if problem:
            raise exceptions.OptionsError(f"aibridge: {problem}")

    @staticmethod
    def _listen_addresses() -> list[tuple[str, int | None]]:
        return health.listen_addresses(ctx.options.mode, ctx.options.listen_host,
                                       ctx.options.listen_port or 8080)

    def _health(self) -> http.Response:
        settings = self.settings
        problems = list(self._shim_problems)
        if settings is None:
            problems.append("not configured")
        return health.health_response(health.status_document(
            ready=not problems, problems=problems,
            listen=[f"{h or '*'}:{p}" for h, p in self._listen_addresses()],
            providers=settings.registry.providers if settings else [],
            breakers=settings.breakers if settings else None, recorder=self.recorder,
            telemetry_exporter=settings.config.telemetry.exporter if settings else "none"))

    async def done(self) -> None:
        """Shutdown (SIGTERM) or script reload: in-flight requests and streams get a bounded
        time to finish, then every pending record is flushed."""
        if self._watcher is not None:
            self._watcher.cancel()
        grace = self.settings.config.shutdown_grace if self.settings else 0
        deadline = time.monotonic() + grace
        if self._flows or self._sockets:
            logger.info(f"aibridge: waiting up to {grace:g}s for "
                        f"{len(self._flows) + len(self._sockets)} in-flight request(s)")
        while (self._flows or self._sockets) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._client is not None:
            await self._client.aclose()
        self._stop_reporting()

    def _start_reporting(self, settings: Settings) -> None:
        """Recorder and telemetry live across requests; a config (re)load replaces them."""
        config = settings.config
        try:
            recorder = (Recorder.from_settings(config.recording, settings.base_dir)
                        if config.recording.enabled else None)
        except RecordingError as e:
            raise exceptions.OptionsError(f"aibridge: recording: {e}") from None
        try:
            telemetry = Telemetry.from_settings(
                config.telemetry.exporter, service_name=config.telemetry.service_name,
                otlp_endpoint=config.telemetry.otlp_endpoint, counters=self.counters)
        except TelemetryConfigError as e:
            if recorder is not None:
                recorder.close(5)
            raise exceptions.OptionsError(f"aibridge: telemetry: {e}") from None
        self._stop_reporting()
        self.recorder, self.telemetry = recorder, telemetry
        self.reporter = Reporter(recorder, telemetry, prompts=config.recording.prompts,
                                 prompt_limit=config.recording.prompt_limit)

    def _stop_reporting(self) -> None:
        if self.recorder is not None:
            self.recorder.close(10)
        if self.telemetry is not None:
            self.telemetry.shutdown()
        self.recorder = self.telemetry = None

    def _reporting_summary(self) -> str:
        where = (f"records to {self.recorder.stats()['database']}" if self.recorder
                 else "recording off")
        exporter = self._settings().config.telemetry.exporter
        return f"{where}; telemetry exporter {exporter}"

    async def _watch_files(self, interval: float = 1.0) -> None:
        """Hot reload: a changed config, actors or keys file applies without a restart.
        In-flight requests keep the settings they started with; a bad file is rejected with
        a log line and the current settings stay."""
        seen = self._fingerprint()
        while True:
            await asyncio.sleep(interval)
            now = self._fingerprint()
            if now == seen:
                continue
            seen = now
            self.reload()

    def reload(self) -> bool:
        current = self._settings()
        try:
            settings = Settings.load(current.config_path, self.counters, previous=current)
            self._guard_open_proxy(settings)
            if (settings.config.recording, settings.config.telemetry) != (
                    current.config.recording, current.config.telemetry):
                self._start_reporting(settings)
        except (ConfigError, exceptions.OptionsError) as e:
            logger.error(f"aibridge: reload rejected, keeping the current settings: {e}")
            return False
        self.settings = settings
        logger.info("aibridge: configuration reloaded")
        for line in settings.describe():
            logger.info(f"aibridge: {line}")
        return True

    def _fingerprint(self) -> tuple:
        if self.settings is None:
            return ()
        marks = []
        for path in self.settings.watched_files():
            try:
                stat = path.stat()
                marks.append((str(path), stat.st_mtime_ns, stat.st_size))
            except OSError:
                marks.append((str(path), None, None))
        return tuple(marks)

    def running(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_files())
        listen = ", ".join(f"{h or '*'}:{p}" for h, p in self._listen_addresses())
        logger.info(f"aibridge: listening on {listen}; health: curl --proxy "
                    f"http://<proxy> http://{health.HEALTH_HOST}/healthz")
        problems = mitm_internals.install(failures.generic)
        self._shim_problems = problems
        if problems:
            logger.error("aibridge: upstream failures will reach clients as mitmproxy's HTML "
                         f"pages and upstream timeouts are off: {'; '.join(problems)}")

    # -- who is calling, and what gets decrypted -----------------------------------------------

    # Fail closed: an unexpected error in these hooks must refuse the request, never let it
    # through unauthenticated or unrewritten (mitmproxy would forward it as the client sent it).

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        try:
            await self._http_connect(flow)
        except Exception:
            logger.exception("aibridge: internal error on CONNECT; refusing it")
            flow.response = internal_error()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._requestheaders(flow)
        except Exception:
            logger.exception("aibridge: internal error on a request; refusing it")
            flow.response = internal_error()

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception:
            logger.exception("aibridge: internal error on a request; refusing it")
            flow.response = internal_error()

    async def _http_connect(self, flow: http.HTTPFlow) -> None:
        settings = self._settings()
        token = parse_proxy_authorization(flow.request.headers.get("proxy-authorization"))
        flow.request.headers.pop("proxy-authorization", None)
        caller = self._authenticate_client(settings, flow, token)
        if caller is None:
            flow.response = proxy_auth_required()
            return
        self._callers[flow.client_conn] = caller
        host, port = flow.request.host, flow.request.port
        if settings.registry.for_host(host) is None and not ctx.options.mode[0].startswith(
                "upstream"):
            try:
                ip = await egress.resolve_allowed(host, port, self._egress_allowed(settings))
            except egress.EgressDenied as e:
                logger.warning(f"aibridge: refused CONNECT from {caller.actor.id}: {e}")
                flow.response = http.Response.make(403, f"Forbidden: {e}\n".encode(),
                                                   {"Content-Type": "text/plain"})
                return
            # Pinned: the tunnel connects to the address that was checked (no DNS rebinding).
            self._pinned[flow.client_conn] = ((host, port), (ip, port))

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        pinned = self._pinned.get(data.client)
        if pinned is not None and data.server.address == pinned[0] and data.server.via is None:
            data.server.address = pinned[1]

    @staticmethod
    def _egress_allowed(settings: Settings) -> tuple[egress.Network, ...]:
        return egress.parse_networks(settings.config.egress.allow)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if self._settings().registry.for_host(data.client_hello.sni) is None:
            data.ignore_connection = True
        elif b"http/1.1" in data.client_hello.alpn_protocols:
            # One request per connection at a time lets each failure be answered exactly
            # (see mitm_internals); LLM clients gain nothing from h2 on these hosts.
            data.context.client.alpn = b"http/1.1"

    # -- requests ------------------------------------------------------------------------------

    def _requestheaders(self, flow: http.HTTPFlow) -> None:
        if not flow.client_conn.tls_established and health.is_health_request(flow.request):
            flow.response = self._health()  # probes carry no proxy credentials
            return
        settings = self._settings()
        provider = self._provider_of(flow)
        caller = self._callers.get(flow.client_conn)
        if caller is None:
            # A plain-HTTP proxy request (no CONNECT): it authenticates on every request.
            token = parse_proxy_authorization(flow.request.headers.get("proxy-authorization"))
            caller = self._authenticate_client(settings, flow, token)
            if caller is None:
                flow.response = proxy_auth_required()
                return
        flow.request.headers.pop("proxy-authorization", None)
        if provider is None:
            if not flow.client_conn.tls_established:
                self._plain_requests.add(flow)  # checked in `request` (egress)
            return
        match = provider.match(flow.request.method, flow.request.path)
        state = FlowState(provider, match, caller)
        state.client_close = "close" in flow.request.headers.get("connection", "").lower()
        if is_websocket_upgrade(flow.request.method, flow.request.headers):
            state.websocket_route = provider.websocket_route(flow.request.path)
        self._flows[flow] = state
        flowinfo.start(flow, state.provider, state.match, caller.actor)
        if sum(len(k) + len(v) for k, v in flow.request.headers.fields) > MAX_HEAD_BYTES:
            self._reply(flow, state, new_response_error(
                f"request headers larger than {MAX_HEAD_BYTES >> 10} KiB",
                OPENAI_ERR_TYPE_INVALID_REQUEST, "headers_too_large", 431))
        elif any(c in value for _, value in flow.request.headers.items(multi=True)
                 for c in "\r\n\0"):
            self._reply(flow, state, new_response_error(
                "header values must not contain CR, LF or NUL", OPENAI_ERR_TYPE_INVALID_REQUEST,
                "invalid_header", 400))
        elif match.kind == UNKNOWN:
            self._reply(flow, state, new_response_error(
                f"route not supported: {flow.request.method} {flow.request.path.split('?')[0]}",
                OPENAI_ERR_TYPE_NOT_FOUND, "route_not_supported", 404))
        elif match.kind == BRIDGED and declared_too_large(flow.request,
                                                          settings.config.max_body_bytes):
            self._reply(flow, state, too_large(settings.config.max_body_bytes))

    async def _request(self, flow: http.HTTPFlow) -> None:
        if flow in self._plain_requests:
            self._plain_requests.discard(flow)
            await self._check_plain_egress(flow)
            return
        state = self._flows.get(flow)
        if state is None or flow.response is not None:
            return
        if state.match.kind == UNTOUCHED:
            retarget(flow.request, state.provider)
            return
        body: object = None
        req: RequestInfo | None = None
        if state.match.kind == BRIDGED:
            # A malformed request is refused before it becomes an interception.
            try:
                body = parse_json_object(flow.request, self._settings().config.max_body_bytes)
            except ResponseError as e:
                self._reply(flow, state, e)
                return
            assert state.match.route is not None
            req = parse_request(state.match.route, body)
        try:
            if req is not None:
                state.admission = self._admit(state, flow.request.path, req.model)
            pool = state.provider.pool
            credential = resolve_credential(state.provider, flow.request.headers,
                                            state.caller.token,
                                            attempt=pool.attempt() if pool else None)
        except ResponseError as e:
            if req is not None:
                self._open_interception(flow, state, req, body, _placeholder(state.provider))
            self._reply(flow, state, e)
            return
        state.credential, state.info = credential, credential.info
        if req is not None:
            self._open_interception(flow, state, req, body, credential.info)
        if state.provider.strip_client_identity:
            strip_client_identity(flow.request, body)  # after the interception recorded it
        rewrite_for_upstream(flow.request, state.provider, credential, state.caller.actor)
        flowinfo.sent(flow, credential.info, state.interception)
        timeout = self._settings().config.resilience.upstream_timeout
        state.timer = asyncio.get_running_loop().call_later(timeout, self._time_out, flow, timeout)

    # -- responses -----------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self._flows.get(flow)
        if state is None or flow.response is None:
            return
        state.stop_timer()
        self._scrub(flow, state)
        response = flow.response
        if state.client_close:
            response.headers["Connection"] = "close"  # honour it: we removed it upstream
        if 200 <= response.status_code < 300 and is_event_stream(response):
            if state.interception is not None:
                assert state.match.route is not None
                state.tap = StreamTap(state.match.route,
                                      response.headers.get("content-encoding"))
                response.stream = state.tap
            else:
                response.stream = True

    async def response(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow, None)
        if state is None or flow.response is None:
            return
        state.stop_timer()
        self._scrub(flow, state)
        cred = state.credential
        if cred is not None and cred.key is not None and not state.synthesized:
            await self._fail_over(flow, state, cred)
        if flow.response.status_code == 101 and state.websocket_route and state.info:
            up = state.provider.upstream
            self._sockets[flow] = SocketSession(
                state.provider.name, state.provider.type, flow.request.path.split("?", 1)[0],
                state.caller.actor, state.info, guess_client(flow.request.headers, None),
                flow.request.headers.get("user-agent"), (up.host, up.port))
            return  # the socket's interceptions are logged as its frames go by
        if (flow.response.status_code >= 400 and not state.synthesized
                and state.match.kind != UNTOUCHED):
            self._convert_error(flow, state)
        if cred is not None and cred.attempt is not None:
            cred.attempt.finish()
        self._record_circuit(state, flow.response.status_code)
        if state.interception is not None:
            self._end_interception(flow, state)
        else:
            flowinfo.finish(flow, None, state.tap, state.match.route)

    def error(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow, None)
        if state is None:
            return
        state.stop_timer()
        self._scrub(flow, state)
        cancelled = flow.error is not None and failures.is_client_cancel(flow.error.msg)
        if not cancelled:
            self._explain_failure(flow, state)
        if state.credential is not None and state.credential.attempt is not None:
            state.credential.attempt.finish()
        if state.admission is not None and self.settings and self.settings.breakers:
            if cancelled:
                self.settings.breakers.release(state.admission)
            elif flow.response is None:  # no answer at all: the provider is unreachable
                self.settings.breakers.record(state.admission, failure=True)
            else:
                self._record_circuit(state, flow.response.status_code)
        if state.interception is not None:
            self._end_interception(flow, state)
        else:
            flowinfo.finish(flow, None, state.tap, state.match.route)

    # -- Responses over WebSocket ---------------------------------------------------------------

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        session = self._sockets.get(flow)
        if session is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        if not message.is_text:
            return
        if message.from_client:
            if (opened := session.client_frame(message.text)) is not None:
                interception, body = opened
                self.reporter.started(interception, route_kind="responses",
                                      transport="websocket", client=session.client,
                                      user_agent=session.user_agent, body=body,
                                      server=session.server)
        elif (done := session.server_frame(message.text)) is not None:
            self._end_socket_interception(flow, done)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        session = self._sockets.pop(flow, None)
        if session is None:
            return
        reason = flow.error.msg if flow.error else None
        for done in session.close(reason):
            self._end_socket_interception(flow, done)
        meta = flow.metadata.get(flowinfo.KEY, {})
        failed = any(i["outcome"] != "completed" for i in meta.get("interceptions", []))
        meta["outcome"] = "failed" if failed else "completed"

    def _end_socket_interception(self, flow: http.HTTPFlow, done: Finished) -> None:
        flowinfo.socket_interception(flow, done.interception, done.summary, done.outcome,
                                     done.reason)
        kind = None if done.outcome == "completed" else error_types.error_type(
            status=None, provider_type=done.interception.provider_type,
            upstream_error_type=done.summary.error_type)
        self.reporter.ended(done.interception, outcome=done.outcome, status=101,
                            error_type=kind, error_message=done.reason, summary=done.summary,
                            key_attempts=0, time_to_first_token=done.time_to_first_token)

    async def _fail_over(self, flow: http.HTTPFlow, state: FlowState,
                         cred: UpstreamCredential) -> None:
        assert flow.response is not None
        # Neither a stream nor a WebSocket handshake can be re-sent from here.
        streaming = bool(state.websocket_route) or (
            state.interception.streaming if state.interception else False)
        try:
            outcome = await failover.after_response(
                flow.response, state.provider, cred, streaming=streaming,
                client=self._resend_client(), request=flow.request)
        except Exception:  # a bug here must not cost the client the provider's answer
            logger.exception("aibridge: failover failed; returning the provider's answer")
            return
        if outcome.key is not cred.key:
            info = new_credential_info(CredentialKind.CENTRALIZED, outcome.key.secret,
                                       cred.header)
            if state.interception is not None:
                self.reporter.failover(state.interception, cred.info.hint, info.hint,
                                       f"upstream status {flow.response.status_code}")
            state.info = info
            if state.interception is not None:
                state.interception.credential = info
            flowinfo.sent(flow, info, state.interception)
        flow.metadata[flowinfo.KEY]["key_attempts"] = (
            cred.attempt.attempts if cred.attempt else 1)
        if outcome.response is not None:
            flow.response = outcome.response
            self._scrub_value(flow, cred.header, state.info)
        elif outcome.error is not None:
            if outcome.pool_error is not None:
                state.pool_error = str(outcome.pool_error.kind)
            headers = failover.RETRY_NOW if outcome.retry_now else None
            flow.response = outcome.error.to_response(anthropic=state.anthropic, headers=headers)
            state.synthesized = True

    def _convert_error(self, flow: http.HTTPFlow, state: FlowState) -> None:
        response = flow.response
        assert response is not None
        body = response.get_content(strict=False) or b""
        converted = convert_error(state.provider.name, state.provider.type,
                                  response.status_code, response.headers, body,
                                  error_format=self._settings().config.resilience.error_format)
        if converted is not None:
            response.headers = converted_response_headers(response.headers)
            response.content = converted

    async def _check_plain_egress(self, flow: http.HTTPFlow) -> None:
        """A plain-HTTP proxy request names its destination: refuse internal ones, and pin the
        checked address (the Host header stays as sent)."""
        if flow.response is not None or ctx.options.mode[0].startswith("upstream"):
            return
        request = flow.request
        try:
            ip = await egress.resolve_allowed(request.host, request.port,
                                              self._egress_allowed(self._settings()))
        except egress.EgressDenied as e:
            flow.response = http.Response.make(403, f"Forbidden: {e}\n".encode(),
                                               {"Content-Type": "text/plain"})
            return
        request.data.host = ip

    def _open_interception(self, flow: http.HTTPFlow, state: FlowState, req: RequestInfo,
                           body: object, credential: CredentialInfo) -> None:
        """The request is bridged: it becomes an interception, recorded from here on."""
        state.started_mono = time.monotonic()
        state.interception = Interception(
            provider=state.provider.name, provider_type=state.provider.type,
            route=storable(flow.request.path.split("?", 1)[0]), model=storable(req.model),
            streaming=req.streaming, actor=state.caller.actor, credential=credential,
            correlating_tool_call_id=(storable(req.correlating_tool_call_id)
                                      if req.correlating_tool_call_id else None))
        assert state.match.route is not None
        up = state.provider.upstream
        self.reporter.started(
            state.interception, route_kind=state.match.route, transport="http",
            client=guess_client(flow.request.headers, body),
            user_agent=flow.request.headers.get("user-agent"), body=body,
            server=(up.host, up.port))

    def _end_interception(self, flow: http.HTTPFlow, state: FlowState) -> None:
        interception = state.interception
        if interception is None:
            return
        ending = flowinfo.finish(flow, interception, state.tap, state.match.route)
        status = flow.response.status_code if flow.response else state.client_status
        summary = ending.summary
        ttft = None
        if state.tap is not None and state.tap.first_token_at is not None:
            ttft = max(0.0, state.tap.first_token_at - state.started_mono)
        kind = error_types.error_type(
            status=status, provider_type=state.provider.type,
            timed_out=state.timed_out is not None, cancelled=ending.outcome == "cancelled",
            circuit_open=state.circuit_open, key_pool_kind=state.pool_error,
            upstream_error_type=summary.error_type if summary else None)
        if ending.outcome == "completed":
            kind = None
        elif ending.outcome == "failed" and kind is None:
            kind = "server_error"  # e.g. a stream the provider broke after a 200
        cred = state.credential
        self.reporter.ended(
            interception, outcome=ending.outcome, status=status, error_type=kind,
            error_message=ending.reason, summary=summary,
            key_attempts=cred.attempt.attempts if cred and cred.attempt else 0,
            time_to_first_token=ttft)

    def _admit(self, state: FlowState, path: str, model: str) -> Admission | None:
        breakers = self._settings().breakers
        if breakers is None:
            return None
        admission = breakers.admit(state.provider.name, path.split("?", 1)[0], model)
        if not admission.allowed:
            state.circuit_open = True
            raise circuit_open_error(admission.retry_after)
        return admission

    def _record_circuit(self, state: FlowState, status: int) -> None:
        breakers = self.settings.breakers if self.settings else None
        if breakers is None or state.admission is None:
            return
        overloaded = state.tap is not None and state.tap.summary.error_type in (
            "overloaded_error", "overloaded")
        breakers.record(state.admission,
                        failure=breakers.is_failure_status(status) or overloaded)

    def _resend_client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = resend.new_client(resend.upstream_ssl_context(ctx.options),
                                             self._settings().config.resilience.upstream_timeout,
                                             proxy=resend.upstream_proxy_url(ctx.options))
        return self._client

    def _explain_failure(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Prepare what mitmproxy sends this client instead of its HTML page or a cut stream."""
        anthropic = state.provider.type == "anthropic"
        if flow.response is None:
            error = failures.unreachable(state.provider.name, flow, timed_out=state.timed_out)
            state.client_status = error.status
            mitm_internals.pending_responses[flow.client_conn] = error.to_response(
                anthropic=anthropic)
            if flow.error is not None:
                flow.error.msg = error.message
        elif state.tap is not None and state.match.route is not None:
            reason = flow.error.msg if flow.error else "unknown"
            error = failures.interrupted(state.provider.name, reason)
            mitm_internals.pending_tails[flow.client_conn] = mitm_internals.sse_error_tail(
                state.match.route, error.body(anthropic=anthropic))

    def _time_out(self, flow: http.HTTPFlow, seconds: float) -> None:
        state = self._flows.get(flow)
        if state is None or flow.response is not None:
            return
        state.timed_out = seconds
        if not mitm_internals.close_server_connection(ctx.master.addons.get("proxyserver"),
                                                      flow):
            flow.kill()  # not connected yet or shim unavailable: at least stop waiting

    # -- helpers -------------------------------------------------------------------------------

    def _settings(self) -> Settings:
        if self.settings is None:  # configure() always runs first; this guards misuse
            raise RuntimeError("aibridge is not configured")
        return self.settings

    def _authenticate_client(self, settings: Settings, flow: http.HTTPFlow,
                             token: str | None) -> Caller | None:
        """Proxy credentials → caller, with failures rate-limited per client address."""
        if not settings.actors.requires_auth:
            return self._authenticate(settings, token)
        address = flow.client_conn.peername[0] if flow.client_conn.peername else "?"
        if self._auth_failures.blocked(address):
            return None  # too many recent failures: not even checked
        caller = self._authenticate(settings, token)
        if caller is not None:
            self._auth_failures.succeeded(address)
        elif self._auth_failures.failed(address):
            logger.warning(f"aibridge: {address} failed proxy authentication "
                           f"{self._auth_failures.limit} times in "
                           f"{self._auth_failures.window:g}s; refusing it for a while")
        else:
            logger.info(f"aibridge: proxy authentication failed for "
                        f"{flow.request.host}:{flow.request.port} from {address}")
        return caller

    def _authenticate(self, settings: Settings, token: str | None) -> Caller | None:
        digest = token_digest(token) if token else None
        if not settings.actors.requires_auth:
            return Caller(settings.local_actor, digest)
        actor = settings.actors.authenticate(token)
        return Caller(actor, digest) if actor else None

    def _provider_of(self, flow: http.HTTPFlow) -> Provider | None:
        """Only TLS traffic whose SNI names a provider is ours: a plaintext request that merely
        claims `Host: api.openai.com` never gets a key."""
        client = flow.client_conn
        if not client.tls_established or flow.request.scheme != "https":
            return None
        return self._settings().registry.for_host(client.sni)

    def _reply(self, flow: http.HTTPFlow, state: FlowState, error: ResponseError) -> None:
        flow.response = error.to_response(anthropic=state.anthropic)
        state.synthesized = True
        if state.admission is not None and self.settings and self.settings.breakers:
            self.settings.breakers.release(state.admission)  # refused before going upstream
            state.admission = None
        flowinfo.rejected(flow, error)
        if isinstance(error.__cause__, KeyPoolError):
            state.pool_error = str(error.__cause__.kind)
        if state.interception is not None:
            self.reporter.ended(
                state.interception, outcome="rejected", status=error.status,
                error_type=error_types.error_type(
                    status=error.status, provider_type=state.provider.type,
                    circuit_open=state.circuit_open, key_pool_kind=state.pool_error),
                error_message=error.message, summary=None, key_attempts=0,
                time_to_first_token=None)
            state.interception = None  # ended; the response hook must not end it again

    def _scrub(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Once the request is on the wire, keep only the masked hint in the flow, so saved
        flows, HAR files and mitmweb never hold the key."""
        cred = state.credential
        if cred is None or state.scrubbed:
            return
        self._scrub_value(flow, cred.header, cred.info)
        state.scrubbed = True

    @staticmethod
    def _scrub_value(flow: http.HTTPFlow, header: str, info: CredentialInfo | None) -> None:
        if info is not None and header in flow.request.headers:
            bearer = flow.request.headers[header].startswith("Bearer ")
            flow.request.headers[header] = f"Bearer {info.hint}" if bearer else info.hint


def is_event_stream(response: http.Response) -> bool:
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def proxy_auth_required() -> http.Response:
    return http.Response.make(
        407, b"Proxy Authentication Required: set HTTPS_PROXY=http://<you>:<token>@host:port\n",
        {"Proxy-Authenticate": f'Basic realm="{REALM}"', "Proxy-Connection": "close",
         "Content-Type": "text/plain"})


def _placeholder(provider: Provider) -> CredentialInfo:
    """The credential of an interception refused before a key was chosen (reference §4.4)."""
    if provider.pool is not None and provider.credentials != "byok":
        return CredentialInfo(CredentialKind.CENTRALIZED, FAILOVER_KEY_HINT, 0)
    return CredentialInfo(CredentialKind.BYOK, "", 0)



def internal_error() -> http.Response:
    error = new_response_error("aibridge: internal error; the request was not forwarded",
                               OPENAI_ERR_TYPE_API, "internal_error", 500)
    return error.to_response(anthropic=True)
