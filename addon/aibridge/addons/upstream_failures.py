"""Upstream failures: what a client of a provider host reads when the upstream fails below HTTP
(refused, DNS, TLS, a timeout, a stream cut mid-way), and the upstream timeout itself.

mitmproxy answers such failures with an HTML page and cuts broken streams; the `mitm_shim`
replaces that, for provider connections only, with the JSON error or the error event the core's
error hook put in the connection's handover (`Runtime.handovers`). Every other connection keeps
mitmproxy's own behaviour.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from mitmproxy import connection, ctx, http, tls

from aibridge.addons import mitm_shim
from aibridge.addons.runtime import Runtime
from aibridge.errors import proxy_failures
from aibridge.errors.envelope import ErrorShape
from aibridge.flow.exchange import Phase

logger = logging.getLogger("aibridge")


class UpstreamFailures:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def running(self) -> None:
        problems = mitm_shim.install(self._take)
        self.runtime.shim_problems = problems
        if problems:
            logger.error("aibridge: upstream failures will reach clients as mitmproxy's HTML "
                         f"pages and upstream timeouts are off: {'; '.join(problems)}")

    def tls_established_client(self, data: tls.TlsData) -> None:
        """A decrypted provider connection: mitmproxy's errors on it (a malformed request head
        too, which never reaches a hook) become JSON in its API's shape."""
        provider = self.runtime.settings.registry.for_host(data.conn.sni)
        if provider is not None:
            self.runtime.handovers[data.conn] = self._generic(provider.api.errors)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if ex is not None:  # a new request: nothing prepared for an earlier one carries over
            self.runtime.handovers[flow.client_conn] = self._generic(ex.provider.api.errors)

    @staticmethod
    def _generic(shape: ErrorShape) -> mitm_shim.Handover:
        return mitm_shim.Handover(functools.partial(proxy_failures.generic, shape=shape))

    def request(self, flow: http.HTTPFlow) -> None:
        ex = self.runtime.exchanges.get(flow)
        if ex is None or ex.phase is not Phase.FORWARDED or flow.response is not None:
            return
        timeout = self.runtime.settings.config.resilience.upstream_timeout
        ex.timer = asyncio.get_running_loop().call_later(timeout, self._time_out, flow, timeout)

    def _take(self, client: connection.Client) -> mitm_shim.Handover | None:
        handover = self.runtime.handovers.get(client)
        if handover is None:
            return None
        # Used once: the next error on this connection starts from the generic answer again.
        self.runtime.handovers[client] = mitm_shim.Handover(handover.generic)
        return handover

    def _time_out(self, flow: http.HTTPFlow, seconds: float) -> None:
        ex = self.runtime.exchanges.get(flow)
        if ex is None or flow.response is not None:
            return
        ex.timed_out = seconds
        if not mitm_shim.close_server_connection(ctx.master.addons.get("proxyserver"), flow):
            flow.kill()  # not connected yet or shim unavailable: at least stop waiting
