"""Where an interception starts: the request is bridged and is recorded from here on."""

from __future__ import annotations

import time

from mitmproxy import http

from aibridge.flow.exchange import Exchange
from aibridge.intercept import FAILOVER_KEY_HINT, CredentialInfo, CredentialKind, Interception
from aibridge.observe.clients import guess_client
from aibridge.observe.reporting import Reporter
from aibridge.providers import Provider
from aibridge.providers.base import RequestInfo
from aibridge.textsafe import storable

# A WebSocket handshake carries no request body: its model is only known from the frames.
HANDSHAKE = RequestInfo(model="", streaming=True, correlating_tool_call_id=None)


def open_interception(reporter: Reporter, flow: http.HTTPFlow, ex: Exchange, req: RequestInfo,
                      body: object, credential: CredentialInfo) -> None:
    api = ex.api or ex.websocket_api
    assert api is not None
    ex.started_mono = time.monotonic()  # time to first token counts from here
    ex.interception = Interception(
        provider=ex.provider.name, provider_type=ex.provider.type,
        route=storable(flow.request.path.split("?", 1)[0]), model=storable(req.model),
        streaming=req.streaming, actor=ex.caller.actor, credential=credential,
        correlating_tool_call_id=(storable(req.correlating_tool_call_id)
                                  if req.correlating_tool_call_id else None))
    up = ex.provider.upstream_for(flow.client_conn.sni)
    reporter.started(
        ex.interception, api=api, transport="http" if ex.api else "websocket",
        client=guess_client(flow.request.headers, body),
        user_agent=flow.request.headers.get("user-agent"), body=body, server=(up.host, up.port))


def placeholder(provider: Provider) -> CredentialInfo:
    """The credential of an interception refused before a key was chosen
    (docs/behaviour.md §4.3)."""
    if provider.pool is not None and provider.credentials != "byok":
        return CredentialInfo(CredentialKind.CENTRALIZED, FAILOVER_KEY_HINT, 0)
    return CredentialInfo(CredentialKind.BYOK, "", 0)
