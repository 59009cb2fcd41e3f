"""Egress: clients cannot reach internal addresses through the bridge.

Every connection the proxy opens for a client is checked on the address it resolves to, and
pinned to the address that was checked (no DNS rebinding in between), except one kind: a
request decrypted on a provider host, which the core always aims at the operator's configured
upstream (host and port) — those upstreams are trusted for provider traffic only. A provider
without `upstream` sends each request to the host it was decrypted for: a host the provider
names is trusted the same way, one its wildcard matched (`*.openai.azure.com`) is resolved and
checked like any other.

- A CONNECT to any other host, and a plain-HTTP proxy request, are checked when they arrive
  (a clear 403).
- A CONNECT to a provider host on a port clients use for it (443, or the configured upstream's
  when that is the same host) is not resolved yet: decrypted, its requests never go to the
  CONNECT target. When it is not decrypted after all (the TLS SNI names another host, no SNI,
  not TLS at all) mitmproxy would tunnel it to the CONNECT target: `server_connect` checks that
  connection like any other and kills it when the target is internal. A provider host on any
  other port is checked at CONNECT time like any other host.
"""

from __future__ import annotations

import logging
import weakref

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import server_hooks

from aibridge.access import egress
from aibridge.addons.runtime import UNREAD_HOST, Runtime, fail_closed
from aibridge.providers import Provider

logger = logging.getLogger("aibridge")

HTTPS_PORT = 443


class Egress:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pinned: weakref.WeakKeyDictionary[connection.Client, tuple] = (
            weakref.WeakKeyDictionary())

    @fail_closed
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or _upstream_mode():
            return
        host, port = flow.request.host, flow.request.port
        provider = self.runtime.settings.registry.for_host(host)
        if provider is not None and port in client_ports(provider):
            return  # decrypted or checked when a connection is opened (server_connect)
        try:
            ip = await egress.resolve_allowed(host, port, self._allowed())
        except egress.EgressDenied as e:
            caller = self.runtime.callers.get(flow.client_conn)
            logger.warning(f"aibridge: refused CONNECT from {caller.actor.id if caller else '?'}"
                           f": {e}")
            flow.response = forbidden(e)
            return
        self._pinned[flow.client_conn] = ((host, port), (ip, port))

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # Not `fail_closed` (there is no flow to answer): an error kills the connection.
        try:
            await self._check_server(data)
        except Exception:
            logger.exception("aibridge: internal error in the egress check; connection refused")
            data.server.error = "aibridge: internal error in the egress check"

    async def _check_server(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.address is None or server.via is not None or _upstream_mode():
            return  # a corporate proxy resolves and polices the names itself
        pinned = self._pinned.get(data.client)
        if pinned is not None and server.address == pinned[0]:
            server.address = pinned[1]  # checked at CONNECT time
            return
        if self._is_provider_upstream(data.client, server.address):
            return
        host, port = server.address
        if host == UNREAD_HOST:
            return  # the core refuses it without a lookup
        try:
            ip = await egress.resolve_allowed(host, port, self._allowed())
        except egress.EgressDenied as e:
            caller = self.runtime.callers.get(data.client)
            logger.warning(f"aibridge: refused a connection for "
                           f"{caller.actor.id if caller else '?'} (TLS SNI {data.client.sni!r})"
                           f": {e}")
            server.error = f"refused by the egress policy: {e}"
            return
        server.address = (ip, port)

    def _is_provider_upstream(self, client: connection.Client, address: tuple) -> bool:
        """A request decrypted on a provider host, on its way to a configured upstream."""
        registry = self.runtime.settings.registry
        provider = registry.for_host(client.sni) if client.tls_established else None
        if provider is None:
            return False
        host, port = address
        # A provider without `upstream` sends a request to the host it was decrypted for. A
        # host it names is trusted like a configured upstream; one a wildcard matched is
        # checked like any other (who controls the names under a wildcard is not known).
        own = provider.upstream_for(client.sni)
        if own.host in provider.hosts and own.host == str(host).lower() and own.port == port:
            return True
        return any(
            p.upstream.host == str(host).lower() and p.upstream.port == port
            for p in registry.providers)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        """A plain-HTTP proxy request names its destination: refuse internal ones, and pin the
        checked address (the Host header stays as sent)."""
        if flow.response is not None or flow.client_conn.tls_established or _upstream_mode():
            return
        request = flow.request
        try:
            ip = await egress.resolve_allowed(request.host, request.port, self._allowed())
        except egress.EgressDenied as e:
            flow.response = forbidden(e)
            return
        request.data.host = ip

    def _allowed(self) -> tuple[egress.Network, ...]:
        return egress.parse_networks(self.runtime.settings.config.egress.allow)


def client_ports(provider: Provider) -> frozenset[int]:
    """The ports clients reach a provider host on: HTTPS, or the configured upstream's when the
    upstream is that same host (an internal gateway on its own port)."""
    up = provider.upstream
    return frozenset({HTTPS_PORT, up.port} if up.host in provider.hosts else {HTTPS_PORT})


def forbidden(error: Exception) -> http.Response:
    return http.Response.make(403, f"Forbidden: {error}\n".encode(),
                              {"Content-Type": "text/plain"})


def _upstream_mode() -> bool:
    return ctx.options.mode[0].startswith("upstream")
