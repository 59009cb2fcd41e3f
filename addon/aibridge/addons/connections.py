"""Client connections: a cap on open connections per client address, a deadline to pass proxy
authentication, an idle timeout, and closing connections whose credentials were revoked.

- Over `[auth] max_connections_per_address` open connections from one address, a new one is
  closed as it is accepted (mitmproxy's `client.error`), with a log line. A connection from a
  balancer that sends the PROXY protocol (addons/proxy_protocol.py) counts for the client
  address its header names, once it is read (`admit_address`), and for no address before.
- A connection that has not completed a request or CONNECT that passed proxy authentication
  within `login_timeout` seconds is closed: idle, slow (a request head sent byte by byte) and
  refused clients do not hold sockets.
- An authenticated connection with no bytes moving either way for `idle_timeout` seconds is
  closed, unless a bridged request is still in flight on it (an upstream may think for minutes
  before its first byte). mitmproxy's own `tcp_timeout` (600 s, the same activity clock, but
  blind to requests in flight) stays the outer bound.
- Connections `ProxyAccess` revoked after an actors reload are closed (idle tunnels and
  WebSocket sessions included), not just refused on their next request.

A sweep every fraction of a second does the timing; requests pay one dictionary lookup.
Closing a connection and reading its last activity go through mitmproxy's proxyserver addon
(`connections` by client id, the handler's transports and inactivity watchdog), checked at start
by `internals_problem`; without them nothing is closed for idleness.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, ctx, http

from aibridge.addons.access import ProxyAccess
from aibridge.addons.proxy_protocol import ProxyProtocol
from aibridge.addons.runtime import Runtime

logger = logging.getLogger("aibridge")
REFUSAL_LOG_EVERY = 10.0  # seconds between "refused a connection" lines for one address


@dataclass(eq=False)
class OpenConnection:
    client: connection.Client
    address: str | None  # None: a balancer's connection whose client address is not read yet
    opened: float  # time.monotonic()
    authenticated: bool = False
    closing: bool = False


class ClientConnections:
    def __init__(self, runtime: Runtime, access: ProxyAccess,
                 proxy_protocol: ProxyProtocol | None = None) -> None:
        self.runtime = runtime
        self.access = access
        self.proxy_protocol = proxy_protocol
        if proxy_protocol is not None:  # it asks once a balancer's connection names its client
            proxy_protocol.admit = self.admit_address
        self.open: dict[str, OpenConnection] = {}  # by client id
        self.per_address: Counter[str] = Counter()
        self._refusals: dict[str, tuple[float, int]] = {}  # address → (last logged, since)
        self._sweeper: asyncio.Task | None = None

    # -- hooks ------------------------------------------------------------------------------------

    def running(self) -> None:
        if problem := internals_problem(ctx.master.addons.get("proxyserver")):
            logger.error(f"aibridge: this mitmproxy lacks {problem}: idle connections and "
                         "revoked ones are not closed (revoked ones are still refused)")
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def client_connected(self, client: connection.Client) -> None:
        settings = self.runtime.settings_or_none
        if settings is None or client.error:
            return
        track = OpenConnection(client, None, time.monotonic())
        if self.proxy_protocol is not None and self.proxy_protocol.reads_header(client):
            self.open[client.id] = track  # its address comes with its first bytes
            return
        if refusal := self._count(track, settings.config.auth.max_connections_per_address):
            client.error = refusal
            return
        self.open[client.id] = track

    def admit_address(self, client: connection.Client) -> str | None:
        """A balancer's connection whose client address is now known (`client.peername`):
        count it for that address, or say why it is refused (the cap)."""
        settings = self.runtime.settings_or_none
        track = self.open.get(client.id)
        if settings is None or track is None or track.address is not None:
            return None
        return self._count(track, settings.config.auth.max_connections_per_address)

    def _count(self, track: OpenConnection, limit: int) -> str | None:
        peer = track.client.peername
        address = peer[0] if peer else "?"
        if self.per_address[address] >= limit:
            self._log_refusal(address, limit)
            return "too many connections from this address"
        self.per_address[address] += 1
        track.address = address
        return None

    def client_disconnected(self, client: connection.Client) -> None:
        track = self.open.pop(client.id, None)
        if track is None or track.address is None:
            return
        self.per_address[track.address] -= 1
        if self.per_address[track.address] <= 0:
            del self.per_address[track.address]

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._seen(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._seen(flow)

    def _seen(self, flow: http.HTTPFlow) -> None:
        # After ProxyAccess in the chain: no response yet means the credentials passed.
        if flow.response is None:
            track = self.open.get(flow.client_conn.id)
            if track is not None:
                track.authenticated = True

    # -- the sweep --------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval())
            try:
                self.sweep()
            except Exception:  # one bad sweep must not end the timeouts for good
                logger.exception("aibridge: internal error while checking client connections")

    def _interval(self) -> float:
        settings = self.runtime.settings_or_none
        if settings is None:
            return 1.0
        auth = settings.config.auth
        return min(1.0, max(0.05, min(auth.login_timeout, auth.idle_timeout) / 4))

    def sweep(self, now: float | None = None) -> list[OpenConnection]:
        """Close what is revoked, late to authenticate or idle; returns what it closed."""
        settings = self.runtime.settings_or_none
        if settings is None:
            return []
        now = time.monotonic() if now is None else now
        auth = settings.config.auth
        self.access.refresh()
        closed: list[OpenConnection] = []
        for client in list(self.access.revoked):
            track = self.open.get(client.id)
            if track is not None and not track.closing:
                self._close(track, "its proxy credentials were revoked")
                closed.append(track)
        busy: set[str] | None = None
        for track in list(self.open.values()):
            if track.closing:
                continue
            if not track.authenticated:
                if now - track.opened > auth.login_timeout:
                    self._close(track, "no request with valid proxy credentials within "
                                       f"{auth.login_timeout:g}s ([auth] login_timeout)")
                    closed.append(track)
                continue
            idle = self._idle_for(track)
            if idle is None or idle <= auth.idle_timeout:
                continue
            if busy is None:  # bridged requests in flight may wait long for a first byte
                busy = {flow.client_conn.id for flow in list(self.runtime.exchanges.keys())}
            if track.client.id not in busy:
                self._close(track, f"idle for over {auth.idle_timeout:g}s ([auth] idle_timeout)")
                closed.append(track)
        self._forget_refusals(now)
        return closed

    def _idle_for(self, track: OpenConnection) -> float | None:
        """Seconds without a byte either way, or None when unknown (then it is not closed:
        cutting a busy tunnel would be worse than keeping an idle one)."""
        last = last_activity(track.client)
        return None if last is None else time.time() - last

    def _close(self, track: OpenConnection, reason: str) -> None:
        track.closing = True
        peer = track.client.peername[0] if track.client.peername else "?"
        logger.info(f"aibridge: closing the connection from {track.address or peer}: {reason}")
        handler = _handler(track.client)
        io = getattr(handler, "transports", {}).get(track.client)
        if io is None:
            return  # already closing, or not a live connection (in-process tests)
        if io.handler is not None:
            io.handler.cancel(reason)  # what mitmproxy's own inactivity timeout does
        elif io.writer is not None:
            io.writer.close()

    # -- refusals ---------------------------------------------------------------------------------

    def _log_refusal(self, address: str, limit: int) -> None:
        now = time.monotonic()
        last, since = self._refusals.get(address, (None, 0))
        if last is not None and now - last < REFUSAL_LOG_EVERY:
            self._refusals[address] = (last, since + 1)
            return
        more = f" ({since} more refused since the last line)" if since else ""
        logger.warning(f"aibridge: refused a connection from {address}: {limit} connections "
                       f"from that address are open ([auth] max_connections_per_address){more}")
        self._refusals[address] = (now, 0)

    def _forget_refusals(self, now: float) -> None:
        for address, (last, _) in list(self._refusals.items()):
            if now - last > 6 * REFUSAL_LOG_EVERY:
                del self._refusals[address]


def last_activity(client: connection.Client) -> float | None:
    """When mitmproxy last moved a byte for this client connection (either side; wall-clock
    time), from the handler's inactivity watchdog — the clock its own `tcp_timeout` uses."""
    watchdog = getattr(_handler(client), "timeout_watchdog", None)
    last = getattr(watchdog, "last_activity", None)
    return last if isinstance(last, float) else None


def internals_problem(proxyserver: Any) -> str | None:
    """What of mitmproxy's connection internals we rely on is missing (checked at start)."""
    from mitmproxy.proxy import server

    if not isinstance(getattr(proxyserver, "connections", None), dict):
        return "the proxyserver addon's connections"
    if not hasattr(server.TimeoutWatchdog, "last_activity") and \
            "self.last_activity" not in inspect.getsource(server.TimeoutWatchdog):
        return "TimeoutWatchdog.last_activity"
    if "self.timeout_watchdog" not in inspect.getsource(server.ConnectionHandler):
        return "ConnectionHandler.timeout_watchdog"
    if "handler" not in getattr(server.ConnectionIO, "__dataclass_fields__", {}):
        return "ConnectionIO.handler"
    return None


def _handler(client: connection.Client) -> Any:
    """mitmproxy's live handler of a client connection, or None."""
    try:
        server = ctx.master.addons.get("proxyserver")
    except Exception:  # no master (in-process tests)
        return None
    handler = getattr(server, "connections", {}).get(client.id)
    if handler is None or getattr(handler, "client", None) is not client:
        return None
    return handler
