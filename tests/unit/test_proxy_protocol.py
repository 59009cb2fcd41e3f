"""The PROXY protocol: the header parser (v1 text, v2 binary), the trust rule, the layer that
reads a balancer's header before mitmproxy's own decisions, and the per-address cap counted for
the address the header names. End to end with real HAProxy: tests/e2e/test_proxy_protocol.py."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from mitmproxy import options
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from aibridge.access import proxy_header
from aibridge.access.proxy_header import NO_HEADER, ProxyHeader, ProxyHeaderError, parse
from aibridge.addons.connections import ClientConnections
from aibridge.addons.proxy_protocol import AfterHeader, ProxyHeaderLayer, ProxyProtocol
from tests.unit.conftest import BASE_CONFIG

SIG = proxy_header.V2_SIGNATURE
REQUEST = b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n"


def v2(command: int = 1, family: int = 1, addresses: bytes | None = None, tlvs: bytes = b"",
       version: int = 2) -> bytes:
    if addresses is None:
        addresses = socket.inet_aton("10.1.2.3") + socket.inet_aton("10.9.9.9") + \
            struct.pack("!HH", 51000, 8080)
    body = addresses + tlvs
    return SIG + bytes([version << 4 | command, family << 4 | 1]) + \
        struct.pack("!H", len(body)) + body


def v2_inet6(source: str, port: int) -> bytes:
    addresses = ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address("::1").packed + \
        struct.pack("!HH", port, 8080)
    return v2(family=2, addresses=addresses)


# -- the parser -----------------------------------------------------------------------------

def test_v2_ipv4_names_the_source_and_takes_exactly_the_header():
    header = v2()
    assert parse(header + REQUEST) == ProxyHeader(len(header), ("10.1.2.3", 51000), 2)
    assert len(header) == 28


def test_v2_ipv6_and_ipv4_mapped_sources():
    assert parse(v2_inet6("2001:db8::7", 443)).source == ("2001:db8::7", 443)
    assert parse(v2_inet6("::ffff:192.0.2.5", 1)).source == ("192.0.2.5", 1)


def test_v2_tlvs_are_skipped():
    tlvs = bytes([0x04]) + struct.pack("!H", 5) + b"\x00" * 5  # PP2_TYPE_NOOP
    header = v2(tlvs=tlvs)
    found = parse(header + b"GET")
    assert found is not None and found.length == len(header) and found.source[0] == "10.1.2.3"


def test_v2_local_unspec_and_unix_keep_the_connections_own_address():
    local = v2(command=0, family=0, addresses=b"")  # what HAProxy's health checks send
    assert parse(local) == ProxyHeader(16, None, 2)
    assert parse(v2(command=0)).source is None  # LOCAL ignores whatever addresses follow
    assert parse(v2(family=0, addresses=b"")).source is None
    assert parse(v2(family=3, addresses=b"\x00" * 216)).source is None


@pytest.mark.parametrize("cut", [0, 1, 5, 11, 12, 13, 15, 16, 20, 27])
def test_v2_truncated_needs_more(cut):
    assert parse(v2()[:cut]) is None


@pytest.mark.parametrize("header, message", [
    (v2(version=1), "version 1"),
    (v2(command=2), "command 2"),
    (v2(family=4), "address family 4"),
    (v2(addresses=b"\x01\x02\x03"), "too short for IPv4"),
    (v2(family=2), "too short for IPv6"),
    (SIG + b"\x21\x11" + struct.pack("!H", 5000), "5016 bytes"),
])
def test_v2_malformed_is_an_error(header, message):
    with pytest.raises(ProxyHeaderError, match=message):
        parse(header)


def test_v2_oversize_is_refused_before_its_bytes_arrive():
    with pytest.raises(ProxyHeaderError):
        parse(SIG + b"\x21\x11\xff\xff")  # 65 551 bytes announced


def test_v1_tcp4_tcp6_unknown():
    line = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 8080\r\n"
    assert parse(line + REQUEST) == ProxyHeader(len(line), ("192.0.2.10", 56324), 1)
    line6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"
    assert parse(line6) == ProxyHeader(len(line6), ("2001:db8::1", 1), 1)
    unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"
    assert parse(unknown + b"GET") == ProxyHeader(len(unknown), None, 1)
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(15, None, 1)


@pytest.mark.parametrize("data", [b"", b"P", b"PROX", b"PROXY ", b"PROXY TCP4 192.0.2.10",
                                  b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 8080\r", b"\r\n",
                                  SIG[:7]])
def test_v1_truncated_needs_more(data):
    assert parse(data) is None


@pytest.mark.parametrize("line, message", [
    (b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n", "4 fields"),
    (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "'TCP5'"),
    (b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n", "not TCP4"),
    (b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n", "not TCP6"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "port '65536'"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "port '01'"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "port '-1'"),
    (b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "fields"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "CRLF"),
    (b"PROXY TCP4 \xff.2.3.4 1.2.3.4 1 2\r\n", "not ASCII"),
    (b"PROXY " + b"x" * 200, "longer than 107"),
])
def test_v1_malformed_is_an_error(line, message):
    with pytest.raises(ProxyHeaderError, match=message):
        parse(line)


@pytest.mark.parametrize("data", [REQUEST, b"GET /healthz HTTP/1.1\r\n", b"POST / HTTP/1.1",
                                  b"PROPFIND / HTTP/1.1", b"\x16\x03\x01\x02\x00",
                                  b"\r\nGET", b"garbage"])
def test_data_without_a_signature_has_no_header(data):
    assert parse(data) is NO_HEADER


def test_the_trust_rule():
    nets = proxy_header.trusted_networks(["127.0.0.1", "10.0.0.0/8", " ::1 "])
    assert proxy_header.is_trusted("127.0.0.1", nets)
    assert proxy_header.is_trusted("::ffff:127.0.0.1", nets)  # a dual-stack listener's view
    assert proxy_header.is_trusted("10.200.0.9", nets) and proxy_header.is_trusted("::1", nets)
    assert not proxy_header.is_trusted("127.0.0.2", nets)
    assert not proxy_header.is_trusted("192.0.2.1", nets)
    assert not proxy_header.is_trusted("not-an-address", nets)
    assert not proxy_header.is_trusted("127.0.0.1", ())
    with pytest.raises(ValueError, match="'balancer' is not an IP address or network"):
        proxy_header.trusted_networks(["balancer"])


# -- the hook and the layer -----------------------------------------------------------------

def proxy_context(peer: str) -> tuple[Context, layer.Layer]:
    client = tflow.tclient_conn()
    client.peername = (peer, 40000)
    context = Context(client, options.Options())
    return context, modes.HttpProxy(context)  # what mitmproxy puts first on a proxy listener


def first_decision(context: Context, data: bytes) -> layer.NextLayer:
    nextlayer = layer.NextLayer(context)
    nextlayer.events = [events.Start(), events.DataReceived(context.client, data)]
    return nextlayer


def test_the_hook_believes_headers_only_from_listed_balancers():
    addon = ProxyProtocol()
    with taddons.context(addon) as tctx:
        context, _ = proxy_context("127.0.0.1")
        decision = first_decision(context, v2())
        addon.next_layer(decision)  # the option is off: nothing at all
        assert decision.layer is None
        tctx.configure(addon, bridge_proxy_protocol=["127.0.0.1"])
        addon.next_layer(decision)
        assert isinstance(decision.layer, ProxyHeaderLayer) and decision.layer.believed
        untrusted, _ = proxy_context("127.0.0.2")
        decision = first_decision(untrusted, v2())
        addon.next_layer(decision)
        assert isinstance(decision.layer, ProxyHeaderLayer) and not decision.layer.believed
        after = AfterHeader(context)
        addon.next_layer(after)
        assert after.layer is None  # the decision after the header is mitmproxy's own
        with pytest.raises(Exception, match="'nope' is not an IP address"):
            tctx.configure(addon, bridge_proxy_protocol=["nope"])


class Owner(ProxyProtocol):
    def __init__(self, refusal: str | None = None) -> None:
        super().__init__()
        self.admitted: list = []
        self.admit = lambda c: self.admitted.append(c.peername) or refusal


def test_only_proxy_listeners_read_headers():
    addon = ProxyProtocol()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, bridge_proxy_protocol=["127.0.0.1"])
        context, _ = proxy_context("127.0.0.1")
        assert addon.reads_header(context.client)
        context.client.proxy_mode = ProxyMode.parse("reverse:https://example.com")
        assert not addon.reads_header(context.client)  # its connection cap is not deferred


def feed(target: layer.Layer, *evs: events.Event) -> list[commands.Command]:
    out: list[commands.Command] = []
    for ev in evs:
        out.extend(target.handle_event(ev))
    return out


def test_the_layer_takes_the_address_and_hands_over_the_rest():
    context, top = proxy_context("127.0.0.1")
    owner = Owner()
    admitted = owner.admitted
    reader = ProxyHeaderLayer(context, owner, believed=True)
    assert context.layers == [top]  # invisible to the decisions after it
    header = v2()
    client = context.client
    assert feed(reader, events.Start(), events.DataReceived(client, header[:10])) == []
    assert client.peername == ("127.0.0.1", 40000) and admitted == []
    out = feed(reader, events.DataReceived(client, header[10:] + REQUEST[:20]))
    assert client.peername == ("10.1.2.3", 51000)
    assert admitted == [("10.1.2.3", 51000)]
    (hook,) = out  # the fresh decision asks next_layer with the bytes after the header
    assert isinstance(hook, layer.NextLayerHook) and isinstance(hook.data, AfterHeader)
    assert hook.data.data_client() == REQUEST[:20]
    assert context.layers == [top]
    # Later events reach the decision (and whatever it chose), not the header reader: here
    # no addon decided yet, so it asks again with all the bytes after the header.
    out = feed(reader, events.HookCompleted(hook, None), events.DataReceived(client, REQUEST[20:]))
    assert isinstance(out[-1], layer.NextLayerHook) and out[-1].data is hook.data
    assert hook.data.data_client() == REQUEST


def test_the_layer_without_a_header_keeps_the_address():
    for believed in (True, False):
        context, _ = proxy_context("127.0.0.1")
        owner = Owner()
        reader = ProxyHeaderLayer(context, owner, believed)
        out = feed(reader, events.Start(), events.DataReceived(context.client, b"GET /healthz"))
        assert context.client.peername == ("127.0.0.1", 40000)
        assert out[-1].data.data_client() == b"GET /healthz"
        # A balancer's connection is counted for its own address; another was counted as it
        # connected.
        assert owner.admitted == ([("127.0.0.1", 40000)] if believed else [])


def test_a_header_from_a_peer_that_is_no_balancer_closes_the_connection(caplog):
    owner = Owner()
    for data in (v2(), b"PROXY TCP4 10.9.9.9 127.0.0.1 1 2\r\nGET", b"PROXY nonsense\r\n"):
        context, _ = proxy_context("127.0.0.2")
        reader = ProxyHeaderLayer(context, owner, believed=False)
        out = feed(reader, events.Start(), events.DataReceived(context.client, data))
        assert [type(c) for c in out] == [commands.CloseConnection]
        assert context.client.peername == ("127.0.0.2", 40000)
    assert owner.admitted == []
    # One line, then quiet for a while: a client cannot flood the log.
    assert caplog.text.count("is not a balancer in bridge_proxy_protocol") == 1


def test_the_layer_closes_on_a_malformed_header_and_on_a_refusal(caplog):
    context, _ = proxy_context("127.0.0.1")
    reader = ProxyHeaderLayer(context, Owner(), believed=True)
    out = feed(reader, events.Start(),
               events.DataReceived(context.client, b"PROXY TCP4 nope nope 1 2\r\nGET"))
    assert [type(c) for c in out] == [commands.CloseConnection]
    assert "closing the connection from 127.0.0.1:40000: PROXY protocol v1" in caplog.text
    assert feed(reader, events.DataReceived(context.client, b"more")) == []
    context, _ = proxy_context("127.0.0.1")
    refusing = ProxyHeaderLayer(context, Owner("too many connections from this address"), True)
    out = feed(refusing, events.Start(), events.DataReceived(context.client, v2() + REQUEST))
    assert [type(c) for c in out] == [commands.CloseConnection]


def test_the_layer_closes_when_the_client_leaves_mid_header():
    context, _ = proxy_context("127.0.0.1")
    reader = ProxyHeaderLayer(context, Owner(), believed=True)
    out = feed(reader, events.Start(), events.DataReceived(context.client, v2()[:14]),
               events.ConnectionClosed(context.client))
    assert [type(c) for c in out] == [commands.CloseConnection]


# -- the per-address cap counts the header's address ----------------------------------------

CAP = BASE_CONFIG.replace("[auth]\n", "[auth]\nmax_connections_per_address = 2\n")


async def test_the_cap_waits_for_the_address_a_balancer_names(make_bridge):
    bridge = make_bridge(CAP)
    bridge.tctx.options.bridge_proxy_protocol = ["127.0.0.1"]
    connections = bridge.addon(ClientConnections)
    balancer = []
    for _ in range(5):  # more than the cap, all from the balancer's address
        conn = tflow.tclient_conn()
        conn.peername = ("127.0.0.1", 40000)
        await bridge.hook("client_connected", conn)
        assert conn.error is None
        balancer.append(conn)
    assert dict(connections.per_address) == {}
    refusals = []
    for conn, source in zip(balancer, ["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"],
                            strict=False):
        conn.peername = (source, 5000)
        refusals.append(connections.admit_address(conn))
    assert refusals == [None, None, "too many connections from this address", None]
    assert dict(connections.per_address) == {"10.0.0.1": 2, "10.0.0.2": 1}
    for conn in balancer:
        await bridge.hook("client_disconnected", conn)
    assert dict(connections.per_address) == {}
    direct = tflow.tclient_conn()
    direct.peername = ("10.0.0.1", 1)  # not a balancer: counted as it connects
    await bridge.hook("client_connected", direct)
    assert dict(connections.per_address) == {"10.0.0.1": 1}
