"""Proxy access: who is calling. Proxy credentials on CONNECT (or on every plain-HTTP proxy
request) become a caller, with failures rate-limited per client address; without them the
answer is 407. The proxy credentials never travel further."""

from __future__ import annotations

import logging

from mitmproxy import http

from aibridge.access.actors import REALM, parse_proxy_authorization, token_digest
from aibridge.access.failure_limit import AuthFailureLimiter
from aibridge.addons.runtime import Runtime, fail_closed
from aibridge.flow.exchange import Caller
from aibridge.settings import Settings

logger = logging.getLogger("aibridge")


class ProxyAccess:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.failures = AuthFailureLimiter()

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        caller = self._from_request(flow)
        if caller is None:
            flow.response = proxy_auth_required()
        else:
            self.runtime.callers[flow.client_conn] = caller

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        if flow.client_conn in self.runtime.callers:
            flow.request.headers.pop("proxy-authorization", None)
            return
        # A plain-HTTP proxy request (no CONNECT): it authenticates on every request.
        caller = self._from_request(flow)
        if caller is None:
            flow.response = proxy_auth_required()
        else:
            self.runtime.plain_callers[flow] = caller

    def _from_request(self, flow: http.HTTPFlow) -> Caller | None:
        token = parse_proxy_authorization(flow.request.headers.get("proxy-authorization"))
        flow.request.headers.pop("proxy-authorization", None)
        return self.authenticate_client(flow, token)

    def authenticate_client(self, flow: http.HTTPFlow, token: str | None) -> Caller | None:
        """Proxy credentials → caller, with failures rate-limited per client address."""
        settings = self.runtime.settings
        if not settings.actors.requires_auth:
            return authenticate(settings, token)
        address = flow.client_conn.peername[0] if flow.client_conn.peername else "?"
        if self.failures.blocked(address):
            return None  # too many recent failures: not even checked
        caller = authenticate(settings, token)
        if caller is not None:
            self.failures.succeeded(address)
        elif self.failures.failed(address):
            logger.warning(f"aibridge: {address} failed proxy authentication "
                           f"{self.failures.limit} times in {self.failures.window:g}s; "
                           "refusing it for a while")
        else:
            logger.info(f"aibridge: proxy authentication failed for "
                        f"{flow.request.host}:{flow.request.port} from {address}")
        return caller


def authenticate(settings: Settings, token: str | None) -> Caller | None:
    digest = token_digest(token) if token else None
    if not settings.actors.requires_auth:
        return Caller(settings.local_actor, digest)
    actor = settings.actors.authenticate(token)
    return Caller(actor, digest) if actor else None


def proxy_auth_required() -> http.Response:
    return http.Response.make(
        407, b"Proxy Authentication Required: set HTTPS_PROXY=http://<you>:<token>@host:port\n",
        {"Proxy-Authenticate": f'Basic realm="{REALM}"', "Proxy-Connection": "close",
         "Content-Type": "text/plain"})
