"""The bridge's addon chain, in hook order. mitmproxy calls each hook on every addon in this
order, so a later addon sees what an earlier one decided (and each returns early on a flow
that already has a response)."""

from __future__ import annotations

from aibridge.addons.access import ProxyAccess
from aibridge.addons.configuration import Configuration
from aibridge.addons.connections import ClientConnections
from aibridge.addons.core import BridgeCore
from aibridge.addons.egress import Egress
from aibridge.addons.health import Health
from aibridge.addons.masking import Masking
from aibridge.addons.proxy_protocol import ProxyProtocol
from aibridge.addons.runtime import Runtime
from aibridge.addons.sockets import Sockets
from aibridge.addons.upstream_failures import UpstreamFailures
from aibridge.addons.upstream_reach import UpstreamReach


def chain(runtime: Runtime | None = None) -> list[object]:
    runtime = runtime or Runtime()
    access = ProxyAccess(runtime)
    proxy_protocol = ProxyProtocol()
    return [
        Configuration(runtime),  # options, settings, hot reload, recorder and telemetry
        # Before anything reads a connection's first bytes: a balancer's PROXY header.
        proxy_protocol,
        Health(runtime, access),  # /healthz needs no proxy credentials (details do)
        access,  # who is calling (407 otherwise)
        # per-address cap, login and idle timeouts, revocation
        ClientConnections(runtime, access, proxy_protocol),
        Egress(runtime),  # no internal destinations for tunnels and plain HTTP
        UpstreamReach(runtime),  # retries a provider upstream that refused, so clients need not
        BridgeCore(runtime),  # route → admit → rewrite → tap → finish
        Sockets(runtime),  # Responses over WebSocket, one interception per response
        UpstreamFailures(runtime),  # JSON instead of HTML pages, upstream timeouts
        # Last: after every addon read the request; before mitmproxy's save, savehar, flow
        # printer and mitmweb view, which come after the script loader.
        Masking(runtime),  # no credential kept in a flow, however it ends
    ]
