"""ClientConnections addon, in-process: a cap per client address, a deadline to authenticate,
an idle timeout that spares connections with a bridged request in flight, and closing the
connections a reload revoked. Closing itself needs mitmproxy's live proxyserver (e2e tests)."""

from __future__ import annotations

import logging
import time

from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import tflow

from aibridge.addons import connections as connections_module
from aibridge.addons.access import ProxyAccess
from aibridge.addons.configuration import Configuration
from aibridge.addons.connections import ClientConnections, internals_problem
from tests.unit.conftest import ACTORS, BASE_CONFIG, TOKEN, connect_flow, provider_flow

LIMITS = BASE_CONFIG.replace("[auth]\n", "[auth]\nmax_connections_per_address = 2\n"
                                         "login_timeout = 5\nidle_timeout = 60\n")


def client(peer: str = "10.0.0.1"):
    conn = tflow.tclient_conn()
    conn.peername = (peer, 40000)
    return conn


async def test_connections_over_the_cap_of_one_address_are_refused(make_bridge, caplog):
    bridge = make_bridge(LIMITS)
    first, second, third = client(), client(), client()
    for conn in (first, second, third):
        await bridge.hook("client_connected", conn)
    assert (first.error, second.error) == (None, None)
    assert third.error == "too many connections from this address"
    assert "refused a connection from 10.0.0.1: 2 connections" in caplog.text
    other = client("10.0.0.2")
    await bridge.hook("client_connected", other)
    assert other.error is None
    await bridge.hook("client_disconnected", third)  # a refused one frees nothing
    await bridge.hook("client_disconnected", first)
    fourth = client()
    await bridge.hook("client_connected", fourth)
    assert fourth.error is None


async def test_refusals_are_logged_once_per_interval(make_bridge, caplog):
    bridge = make_bridge(LIMITS)
    for _ in range(6):
        await bridge.hook("client_connected", client())
    assert caplog.text.count("refused a connection") == 1


async def test_a_connection_that_does_not_authenticate_in_time_is_closed(make_bridge):
    bridge = make_bridge(LIMITS)
    connections = bridge.addon(ClientConnections)
    late, refused, good = client(), client("10.0.0.2"), client("10.0.0.3")
    for conn in (late, refused, good):
        await bridge.hook("client_connected", conn)
    flow = connect_flow("api.openai.com", token="wrong")
    flow.client_conn = refused
    await bridge.hook("http_connect", flow)
    flow = connect_flow("api.openai.com")
    flow.client_conn = good
    await bridge.hook("http_connect", flow)
    opened = connections.open[late.id].opened
    assert connections.sweep(opened + 4) == []
    closed = connections.sweep(opened + 6)
    assert {t.client for t in closed} == {late, refused}
    assert connections.sweep(opened + 7) == []  # closing already


async def test_an_idle_connection_is_closed_unless_a_bridged_request_is_in_flight(
        make_bridge, monkeypatch):
    bridge = make_bridge(LIMITS)
    connections = bridge.addon(ClientConnections)
    idle, busy = client(), client("10.0.0.2")
    for conn in (idle, busy):
        await bridge.hook("client_connected", conn)
        flow = connect_flow("api.openai.com")
        flow.client_conn = conn
        await bridge.hook("http_connect", flow)
        conn.sni = "api.openai.com"
    waiting = provider_flow(busy, "api.openai.com", "/v1/chat/completions",
                            body={"model": "gpt-4o", "messages": []})
    await bridge.send(waiting)
    assert waiting.response is None and waiting in bridge.runtime.exchanges
    quiet_for = 30.0  # seconds since mitmproxy last moved a byte on either connection
    monkeypatch.setattr(connections_module, "last_activity", lambda c: time.time() - quiet_for)
    assert connections.sweep() == []
    quiet_for = 61.0
    assert [t.client for t in connections.sweep()] == [idle]
    monkeypatch.setattr(connections_module, "last_activity", lambda c: None)  # unknown: kept
    assert connections.sweep() == []


def test_the_mitmproxy_internals_used_for_closing_are_there():
    assert internals_problem(Proxyserver()) is None
    assert internals_problem(object()) == "the proxyserver addon's connections"


async def test_revoked_connections_are_closed_at_the_next_sweep(make_bridge, caplog):
    caplog.set_level(logging.INFO, "aibridge")
    bridge = make_bridge(LIMITS)
    connections = bridge.addon(ClientConnections)
    conn = client()
    await bridge.hook("client_connected", conn)
    flow = connect_flow("api.openai.com")
    flow.client_conn = conn
    await bridge.hook("http_connect", flow)
    (bridge.config.parent / "actors.toml").write_text(ACTORS.replace(TOKEN, "a-new-token"))
    assert bridge.addon(Configuration).reload()
    closed = connections.sweep()
    assert [t.client for t in closed] == [conn]
    assert conn in bridge.addon(ProxyAccess).revoked
    assert "closing the connection from 10.0.0.1: its proxy credentials were revoked" \
        in caplog.text
    assert "a-new-token" not in caplog.text and TOKEN not in caplog.text
