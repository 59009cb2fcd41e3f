"""What the bridge's addons share: the current settings and pipelines, the reporter, who is
calling on each client connection, and the exchanges in flight. One instance per process; the
chain in addon/bridge.py hands it to every addon."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
from mitmproxy import connection, ctx, http

from aibridge.addons.mitm_shim import Handover
from aibridge.admission.budgets import Notify
from aibridge.admission.policies import build_policies
from aibridge.admission.secrets import SecretScan, secret_scan
from aibridge.admission.steps import Pipelines, pipelines
from aibridge.counters import Registry
from aibridge.errors.envelope import OPENAI_ERR_TYPE_API, new_response_error
from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.flow.exchange import Caller, Exchange
from aibridge.intercept import Interception
from aibridge.mcp.manager import McpManager
from aibridge.observe.reporting import Reporter
from aibridge.observe.webhook import Webhook
from aibridge.providers import Provider
from aibridge.recording.recorder import Recorder
from aibridge.settings import Settings
from aibridge.state.ledger import Hold, Ledger
from aibridge.streaming.socket_session import SocketSession
from aibridge.streaming.tool_loop import Aliases
from aibridge.upstream import resend, scrub
from aibridge.upstream.reach import Reachability

# Where a refused request is aimed so that it never opens a connection (the core's
# `_leave_unread`); a reserved name (RFC 6761) that no resolver answers, should the refusal
# ever be skipped. The core refuses to connect there; egress leaves it to the core.
UNREAD_HOST = "refused.aibridge.invalid"


class Runtime:
    def __init__(self) -> None:
        self.settings_or_none: Settings | None = None
        self.pipelines: Pipelines | None = None
        self.secret_scan: SecretScan | None = None  # also screens bridge tools' results
        self.counters = Registry()  # survives config reloads; telemetry reads it
        self.reporter = Reporter(None, None)
        self.recorder: Recorder | None = None  # for the health document
        self.shim_problems: list[str] = []
        self.callers: weakref.WeakKeyDictionary[connection.Client, Caller] = (
            weakref.WeakKeyDictionary())
        self.plain_callers: weakref.WeakKeyDictionary[http.HTTPFlow, Caller] = (
            weakref.WeakKeyDictionary())  # plain-HTTP proxy requests authenticate each time
        # Every flow on a provider host until it ends (a WebSocket's until the socket closes).
        self.exchanges: weakref.WeakKeyDictionary[http.HTTPFlow, Exchange] = (
            weakref.WeakKeyDictionary())
        self.sockets: weakref.WeakKeyDictionary[http.HTTPFlow, SocketSession] = (
            weakref.WeakKeyDictionary())
        # Credentials taken out of requests waiting for their body (addons.masking), until
        # the core (provider flows) or the masking addon (others) forwards them.
        self.hidden: weakref.WeakKeyDictionary[http.HTTPFlow, scrub.Hidden] = (
            weakref.WeakKeyDictionary())
        # Provider connections, with what their next mitmproxy-made error should say
        # (installed by addons.upstream_failures, filled by the core's error hook).
        self.handovers: weakref.WeakKeyDictionary[connection.Client, Handover] = (
            weakref.WeakKeyDictionary())
        self._client: httpx2.AsyncClient | None = None  # for failover re-sends
        self.reach = Reachability()  # the bridge's own connect retries (addons.upstream_reach)
        # What admitted interceptions hold (budget reservations, rate-limit slots) until they
        # end; outlives reloads, like the state the holds refer to.
        self.ledger = Ledger()
        self.webhook: Webhook | None = None  # [budgets_settings] webhook_url
        self.mcp = McpManager()  # [mcp.servers.*]: their connections outlive reloads
        self.splice_problems: list[str] = []  # why later tool rounds cannot reach stream clients
        self.tool_aliases = Aliases()  # response ids spliced streams showed (tool_loop.py)

    @property
    def settings(self) -> Settings:
        if self.settings_or_none is None:  # configure() always runs first; this guards misuse
            raise RuntimeError("aibridge is not configured")
        return self.settings_or_none

    def apply(self, settings: Settings) -> None:
        before = self.settings_or_none
        if before is not None and before.shared not in (None, settings.shared):
            before.shared.close()  # [state] changed: the new link replaces the old one
        self.settings_or_none = settings
        self.reporter.prices = settings.prices  # interceptions ending from now on use them
        self.reach.window = settings.config.resilience.connect_retry_window
        self.reporter.ledger = self.ledger  # (a reload may bring a new reporter)
        # What the recorder keeps is masked with the current rules (admission.secrets).
        self.reporter.secrets = settings.secrets.scanner if settings.secrets else None
        self.reporter.scan_responses = settings.config.secrets.responses
        self.mcp.configure(settings.config.mcp, settings.config.budgets_settings.team_key,
                           os.environ)
        budgets, limits = build_policies(settings, notify=self._webhook(settings))
        self.secret_scan = secret_scan(settings)
        self.pipelines = pipelines(settings.config.max_body_bytes, settings.breakers,
                                   settings.config.max_passthrough_body_bytes,
                                   budgets=budgets, limits=limits, secrets=self.secret_scan)

    def hold(self, interception: Interception | None, holds: Sequence[Hold]) -> None:
        """An admitted interception keeps what admission took until it ends (the reporter
        settles it); without an interception nothing will end it, so it is given back now."""
        if interception is not None:
            self.ledger.keep(interception.id, holds)
        else:
            for held in holds:
                held.release()

    def _webhook(self, settings: Settings) -> Notify | None:
        """The budget webhook sender for `[budgets_settings]`, kept while its set-up stays."""
        bs = settings.config.budgets_settings
        wanted = (bs.webhook_url, bs.webhook_timeout, bs.webhook_attempts)
        current = self.webhook
        if current is not None and (current.url, current.timeout, current.attempts) != wanted:
            current.close(0)
            current = self.webhook = None
        if current is None and bs.webhook_url is not None:
            current = self.webhook = Webhook(bs.webhook_url, timeout=bs.webhook_timeout,
                                             attempts=bs.webhook_attempts)
        return current.post if current is not None else None

    def caller_of(self, flow: http.HTTPFlow) -> Caller | None:
        return self.callers.get(flow.client_conn) or self.plain_callers.get(flow)

    def provider_of(self, flow: http.HTTPFlow) -> Provider | None:
        """Only TLS traffic whose SNI names a provider is ours: a plaintext request that merely
        claims `Host: api.openai.com` never gets a key."""
        client = flow.client_conn
        if not client.tls_established or flow.request.scheme != "https":
            return None
        return self.settings.registry.for_host(client.sni)

    def in_flight(self) -> int:
        return len(self.exchanges)

    def resend_client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = resend.new_client(resend.upstream_ssl_context(ctx.options),
                                             self.settings.config.resilience.upstream_timeout,
                                             proxy=resend.upstream_proxy_url(ctx.options))
        return self._client

    @property
    def has_resend_client(self) -> bool:
        return self._client is not None

    async def drop_resend_client(self) -> None:
        """Connection options changed: the next re-send builds a client with the new ones."""
        old, self._client = self._client, None
        if old is not None:
            await old.aclose()


logger = logging.getLogger("aibridge")


def internal_error() -> http.Response:
    error = new_response_error("aibridge: internal error; the request was not forwarded",
                               OPENAI_ERR_TYPE_API, "internal_error", 500)
    return error.to_response(ANTHROPIC_ERRORS)  # read by both SDKs


def fail_closed(hook: Callable[..., Any]) -> Callable[..., Any]:
    """An unexpected error in a hook that decides whether or how a request goes on refuses the
    request: mitmproxy would otherwise forward it as the client sent it (unauthenticated,
    unrewritten)."""
    if inspect.iscoroutinefunction(hook):
        @functools.wraps(hook)
        async def guarded_async(self: object, flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception:
                logger.exception(f"aibridge: internal error in {hook.__name__}; refusing it")
                flow.response = internal_error()
        return guarded_async

    @functools.wraps(hook)
    def guarded(self: object, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception:
            logger.exception(f"aibridge: internal error in {hook.__name__}; refusing it")
            flow.response = internal_error()
    return guarded
