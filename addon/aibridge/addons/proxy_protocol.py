"""The client's own address behind a TCP load balancer: the PROXY protocol header (v2 or v1,
access/proxy_header.py) that HAProxy puts before the client's bytes, read on connections from
the balancers named in `bridge_proxy_protocol` (`aibridge serve` names its HAProxy).

mitmproxy has no reader for it, so this addon puts one in front of the first protocol decision
of each such connection. In `next_layer` it hands the connection to `ProxyHeaderLayer`, which
holds the first bytes until the header is complete, makes the address it names the client's
(`client.peername`: what the failure limits, the connection cap, saved flows and log lines
use), and then hands the rest of the bytes, and every later event, to a fresh next-layer
decision, which sees the connection as if it had begun after the header (the HTTP proxy layer,
TLS after CONNECT and the health endpoint work as they do without a balancer).

Trust: a header is only believed from a listed peer. A connection from anyone else that
begins with one is closed (a log line says so, at most one every few seconds), so a client
cannot choose the address it is counted under. A connection without a header (a probe, a local
client, any client not behind the balancer) keeps its own address; one from a listed peer
whose header is malformed is closed with a log line.

The per-address connection cap (addons/connections.py) waits for the address of a balancer's
connection: `admit` is its check, called once the address is known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from mitmproxy import connection, ctx, exceptions
from mitmproxy.proxy import commands, events, layer, mode_specs
from mitmproxy.proxy.layers import modes
from mitmproxy.utils import human

from aibridge.access import proxy_header
from aibridge.access.proxy_header import Network, ProxyHeaderError

logger = logging.getLogger("aibridge")
EXPLICIT_PROXY = (modes.HttpProxy, modes.HttpUpstreamProxy)
EXPLICIT_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode)
UNTRUSTED_LOG_EVERY = 10.0  # seconds between "not a balancer" lines
Admit = Callable[[connection.Client], str | None]  # None: admitted; else why it is refused


def _admit_all(client: connection.Client) -> str | None:
    return None


class ProxyProtocol:
    def __init__(self) -> None:
        self.trusted: tuple[Network, ...] = ()
        self.admit: Admit = _admit_all  # ClientConnections puts its cap here
        self._untrusted: tuple[float, int] = (float("-inf"), 0)  # last line, refused since

    def load(self, loader) -> None:
        loader.add_option(
            "bridge_proxy_protocol", Sequence[str], [],
            "Addresses or networks of TCP load balancers (e.g. 127.0.0.1, 10.0.0.0/8) whose "
            "connections to the proxy listener (regular or upstream mode) begin with a PROXY "
            "protocol header (HAProxy send-proxy-v2 or send-proxy): the client address it "
            "names is the client's. A header from any other peer closes its connection. "
            "Empty (default): no header is read.")

    def configure(self, updated: set[str]) -> None:
        if "bridge_proxy_protocol" not in updated:
            return
        try:
            self.trusted = proxy_header.trusted_networks(ctx.options.bridge_proxy_protocol)
        except ValueError as e:
            raise exceptions.OptionsError(f"aibridge: bridge_proxy_protocol: {e}") from None
        if self.trusted:
            logger.info("aibridge: reading the PROXY protocol header on connections from "
                        f"{', '.join(map(str, self.trusted))} (bridge_proxy_protocol)")

    def reads_header(self, client: connection.Client) -> bool:
        """Whether this connection comes from a balancer to a proxy listener (regular or
        upstream mode), so its client's address comes with its first bytes."""
        return bool(self.trusted) and client.peername is not None \
            and isinstance(client.proxy_mode, EXPLICIT_MODES) \
            and proxy_header.is_trusted(client.peername[0], self.trusted)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        if not self.trusted:
            return
        context = nextlayer.context
        # Only a new connection's first decision on a proxy listener: not the one after the
        # header (AfterHeader), not those inside tunnels.
        if nextlayer.layer is not None or isinstance(nextlayer, AfterHeader) \
                or len(context.layers) != 1 or not isinstance(context.layers[0], EXPLICIT_PROXY):
            return
        nextlayer.layer = ProxyHeaderLayer(context, self, self.reads_header(context.client))

    def untrusted_header(self, peer: str) -> None:
        """A PROXY header from a peer that is no listed balancer (its connection is closed)."""
        now = time.monotonic()
        last, since = self._untrusted
        if now - last < UNTRUSTED_LOG_EVERY:
            self._untrusted = (last, since + 1)
            return
        more = f" ({since} more since the last line)" if since else ""
        logger.warning(f"aibridge: closing the connection from {peer}: it sent a PROXY protocol "
                       f"header but is not a balancer in bridge_proxy_protocol{more}")
        self._untrusted = (now, 0)


class AfterHeader(layer.NextLayer):
    """The next-layer decision of a connection whose PROXY header was read."""


class ProxyHeaderLayer(layer.Layer):
    """Holds a connection's first bytes until it is clear whether they begin with a PROXY
    header. From a balancer (`believed`) the client's address is taken from it; from anyone
    else a header closes the connection. The bytes after it go on as a new connection's first
    bytes."""

    def __init__(self, context, owner: ProxyProtocol, believed: bool) -> None:
        super().__init__(context)
        # Out of the layer stack, as mitmproxy's NextLayer is: the decisions after the header
        # see the stack of a connection that had none.
        self.context.layers.remove(self)
        self.owner = owner
        self.believed = believed
        self.buffer = b""
        self.child: layer.Layer | None = None
        self.closed = False

    def handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self.child is not None:
            yield from self.child.handle_event(event)
        else:
            yield from super().handle_event(event)

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        client = self.context.client
        if self.closed or isinstance(event, events.Start):
            return
        if isinstance(event, events.ConnectionClosed) and event.connection == client:
            yield from self._close()
            return
        if not (isinstance(event, events.DataReceived) and event.connection == client):
            return  # nothing else happens before a layer after this one opens a connection
        self.buffer += event.data
        peer = human.format_address(client.peername)
        try:
            header = proxy_header.parse(self.buffer)
        except ProxyHeaderError as e:
            if self.believed:
                logger.warning(f"aibridge: closing the connection from {peer}: {e} (it is a "
                               "balancer's address in bridge_proxy_protocol)")
            else:
                self.owner.untrusted_header(peer)
            yield from self._close()
            return
        if header is None:
            return  # more of the header to come (login_timeout bounds the wait)
        if not self.believed and header.length:
            self.owner.untrusted_header(peer)
            yield from self._close()
            return
        if self.believed:
            if header.source is not None:
                client.peername = header.source
                logger.debug(f"aibridge: {peer} is the balancer's connection for "
                             f"{human.format_address(header.source)}")
            if self.owner.admit(client) is not None:  # the per-address connection cap
                yield from self._close()
                return
        rest, self.buffer = self.buffer[header.length:], b""
        self.child = AfterHeader(self.context)
        yield from self.child.handle_event(events.Start())
        if rest:
            yield from self.child.handle_event(events.DataReceived(client, rest))

    def _close(self) -> layer.CommandGenerator[None]:
        self.closed = True
        self.buffer = b""
        yield commands.CloseConnection(self.context.client)
