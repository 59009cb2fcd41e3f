"""The bridge's addon chain, in hook order. mitmproxy calls each hook on every addon in this
order, so a later addon sees what an earlier one decided (and each returns early on a flow
that already has a response)."""

from __future__ import annotations

from aibridge.addons.access import ProxyAccess
from aibridge.addons.configuration import Configuration
from aibridge.addons.core import BridgeCore
from aibridge.addons.egress import Egress
from aibridge.addons.health import Health
from aibridge.addons.runtime import Runtime
from aibridge.addons.sockets import Sockets
from aibridge.addons.upstream_failures import UpstreamFailures


def chain(runtime: Runtime | None = None) -> list[object]:
    runtime = runtime or Runtime()
    return [
        Configuration(runtime),  # options, settings, hot reload, recorder and telemetry
        Health(runtime),  # /healthz needs no proxy credentials
        ProxyAccess(runtime),  # who is calling (407 otherwise)
        Egress(runtime),  # no internal destinations for tunnels and plain HTTP
        BridgeCore(runtime),  # route → admit → rewrite → tap → finish
        Sockets(runtime),  # Responses over WebSocket, one interception per response
        UpstreamFailures(runtime),  # JSON instead of HTML pages, upstream timeouts
    ]
