"""Egress: clients cannot reach internal addresses through the bridge. A CONNECT to a host that
is not a provider, and a plain-HTTP proxy request, are checked on the resolved address, and the
connection is pinned to the address that was checked (no DNS rebinding in between). Provider
traffic goes to the operator's configured upstreams, which are trusted."""

from __future__ import annotations

import logging
import weakref

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import server_hooks

from aibridge.access import egress
from aibridge.addons.runtime import Runtime, fail_closed

logger = logging.getLogger("aibridge")


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
        if self.runtime.settings.registry.for_host(host) is not None:
            return
        try:
            ip = await egress.resolve_allowed(host, port, self._allowed())
        except egress.EgressDenied as e:
            caller = self.runtime.callers.get(flow.client_conn)
            logger.warning(f"aibridge: refused CONNECT from {caller.actor.id if caller else '?'}"
                           f": {e}")
            flow.response = forbidden(e)
            return
        self._pinned[flow.client_conn] = ((host, port), (ip, port))

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        pinned = self._pinned.get(data.client)
        if pinned is not None and data.server.address == pinned[0] and data.server.via is None:
            data.server.address = pinned[1]

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


def forbidden(error: Exception) -> http.Response:
    return http.Response.make(403, f"Forbidden: {error}\n".encode(),
                              {"Content-Type": "text/plain"})


def _upstream_mode() -> bool:
    return ctx.options.mode[0].startswith("upstream")
