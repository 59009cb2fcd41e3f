"""The state of one flow on a provider host, from its request headers to its end.

Phases (`Exchange.phase`), in order; every flow ends exactly once, in `finish.end`:

    HEADERS ──▶ (refused: a bridge-made error, ended at once) ─────┐
       │                                                           │
       ▼                                                           ▼
    FORWARDED ──▶ response headers ──▶ (a tapped SSE body) ────▶ ENDED
       │  (on the wire)                                             ▲
       └──────────── upstream failure, client cancel ───────────────┘

An ended exchange leaves `Runtime.exchanges`: nothing of it (the credential included) outlives
the interception.

A WebSocket handshake that succeeds (101) leaves the HTTP phases to a socket session, whose
responses are interceptions of their own, each ended by `finish.end_socket_response`.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aibridge.admission.credential import UpstreamCredential
from aibridge.intercept import Actor, CredentialInfo, Interception
from aibridge.keys.circuit import Admission
from aibridge.providers import Provider, RouteMatch
from aibridge.providers.base import WireApi
from aibridge.streaming.tap import StreamTap
from aibridge.streaming.tool_loop import ToolLoop
from aibridge.upstream.fallback import Diverted


@dataclass(frozen=True)
class Caller:
    actor: Actor
    token: bytes | None  # SHA-256 of the proxy token, to tell it apart from a provider key
    expires: float | None = None  # epoch seconds a sign-in token (OIDC) stops counting


class Phase(enum.Enum):
    HEADERS = "headers"
    FORWARDED = "forwarded"
    ENDED = "ended"


@dataclass
class Exchange:
    provider: Provider
    match: RouteMatch
    caller: Caller
    phase: Phase = Phase.HEADERS
    websocket_api: WireApi | None = None  # a handshake that opens a bridged WebSocket route
    credential: UpstreamCredential | None = None
    info: CredentialInfo | None = None  # the credential's masked info (changes on failover)
    interception: Interception | None = None
    admission: Admission | None = None  # the circuit breaker's slot
    tap: StreamTap | None = None
    timer: asyncio.TimerHandle | None = None
    timed_out: float | None = None  # the upstream timeout that fired, in seconds
    client_close: bool = False  # the client sent `Connection: close` (stripped upstream)
    scrubbed: bool = False  # the key in the request is masked already
    synthesized: bool = False  # the response is the bridge's own, not the provider's
    circuit_open: bool = False  # refused because the breaker is open
    pool_error: str | None = None  # rate_limited | auth_failed when the key pool ran out
    # Masks the request body the flow keeps, once it was sent or refused: a secret that
    # scanning logged (or blocked) is still in it (admission.secrets).
    mask_stored: Callable[[Any], None] | None = None
    tool_loop: ToolLoop | None = None  # MCP tools were offered (streaming/tool_loop.py)
    # Served by another provider ([[fallbacks]], upstream.fallback): the route and model.
    fallback: Diverted | None = None
    started_mono: float = field(default_factory=time.monotonic)

    @property
    def upstream_provider(self) -> Provider:
        """The provider the request went to: the fallback's when another one serves it."""
        return self.fallback.route.target if self.fallback is not None else self.provider

    @property
    def api(self) -> WireApi | None:
        return self.match.api

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
