"""The bridge retries a provider's upstream that refused a connection, so clients need not.

mitmproxy dials the upstream after the `request` hook (lazy strategy) and calls
`server_connect` first: for an address that failed before, this waits (bounded) until a TCP
connection succeeds — streams and WebSocket handshakes included, since nothing has been sent
yet. The state lives in `Runtime.reach` (upstream.reach); the bridge core reads it to tell the
client the bridge already retried.
"""

from __future__ import annotations

from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from aibridge.addons.runtime import Runtime


class UpstreamReach:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _provider_upstream(self, data: ServerConnectionHookData) -> bool:
        settings = self.runtime.settings_or_none
        return (data.server.address is not None and settings is not None
                and settings.registry.for_host(data.client.sni) is not None)

    async def server_connect(self, data: ServerConnectionHookData) -> None:
        if data.server.error is not None or not self._provider_upstream(data):
            return
        assert data.server.address is not None
        # Whatever the outcome, mitmproxy dials next: a failure then takes the usual error
        # path (setting `data.server.error` here would skip the flow's error hook), where
        # the core reads `reach.gave_up` to say the bridge already retried.
        await self.runtime.reach.wait_until_reachable(data.server.address)

    def server_connected(self, data: ServerConnectionHookData) -> None:
        if data.server.address is not None:
            self.runtime.reach.connected(data.server.address)

    def server_connect_error(self, data: ServerConnectionHookData) -> None:
        if self._provider_upstream(data):
            assert data.server.address is not None
            self.runtime.reach.failed(data.server.address)
