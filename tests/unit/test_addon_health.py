"""Health addon, in-process: `/healthz` straight to the listen port (a connection that began with
an origin-form request) or `http://aibridge.health/healthz` through the proxy is answered before
and without proxy authentication: readiness and counts for anyone, the details for an actor."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.proxy import events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.test import taddons, tflow

from aibridge.addons.health import Health
from aibridge.addons.runtime import Runtime
from aibridge.recording.recorder import Recorder
from tests.unit.conftest import (
    ANTHROPIC_KEY,
    DEAD_UPSTREAM,
    OPENAI_KEY,
    TOKEN,
    basic,
    json_of,
    plain_flow,
    provider_flow,
)

OPENAI_HINT = "sk-p...6789"


def direct_client(bridge, first_bytes: bytes, mode: type = modes.HttpProxy):
    """A client connection whose first bytes went through the next_layer hook."""
    client = tflow.tclient_conn()
    client.timestamp_tls_setup = None
    client.sni = None
    context = Context(client, bridge.tctx.options)
    mode(context)  # the listener's mode layer: context.layers == [mode]
    nextlayer = layer.NextLayer(context)
    nextlayer.events.append(events.DataReceived(client, first_bytes))
    bridge.addon(Health).next_layer(nextlayer)
    return client


def origin_form_flow(client, path: str = "/healthz", method: str = "GET",
                     headers: dict[str, str] | None = None) -> http.HTTPFlow:
    # mitmproxy fills host and port from the Host header for an origin-form request.
    flow = plain_flow("10.0.0.5", path, headers=headers, client=client)
    flow.request.method = method
    flow.request.port = 8080
    return flow


def assert_public(flow: http.HTTPFlow) -> dict:
    body = flow.response.get_text()
    for leak in (OPENAI_KEY, ANTHROPIC_KEY, OPENAI_HINT, DEAD_UPSTREAM, "127.0.0.1:9",
                 "upstream", "listen"):
        assert leak not in body, leak
    return json_of(flow)


async def test_healthz_through_the_proxy_is_readiness_and_counts_only(bridge):
    flow = plain_flow("aibridge.health", "/healthz")
    await bridge.hook("requestheaders", flow)  # the whole chain: no proxy credentials sent
    assert flow.response is not None and flow.response.status_code == 200
    assert flow.response.headers["cache-control"] == "no-store"
    status = assert_public(flow)
    assert status["ready"] is True and status["problems"] == []
    assert status["providers"]["openai"] == {"central_keys": 1, "usable_keys": 1}
    assert status["open_circuits"] == 0 and status["recording"] is None


async def test_an_actors_credentials_show_the_details_and_leave_the_flow(bridge):
    flow = plain_flow("aibridge.health", "/healthz",
                      headers={"proxy-authorization": basic(TOKEN)})
    await bridge.hook("requestheaders", flow)
    status = json_of(flow)
    openai = next(p for p in status["providers"] if p["name"] == "openai")
    assert openai["upstream"] == DEAD_UPSTREAM
    assert openai["keys"][0]["hint"] == OPENAI_HINT
    body = flow.response.get_text()
    assert OPENAI_KEY not in body and ANTHROPIC_KEY not in body
    assert "proxy-authorization" not in flow.request.headers  # not in saved flows


@pytest.mark.parametrize("header", ["proxy-authorization", "authorization"])
async def test_wrong_credentials_get_the_public_document_via_proxy_access(
        bridge, header, monkeypatch):
    access = bridge.addon(Health).access
    checked = []
    check = access.authenticate_client

    def spy(flow, token, user=""):
        checked.append(token)
        return check(flow, token, user)

    monkeypatch.setattr(access, "authenticate_client", spy)  # with its failure limits
    flow = plain_flow("aibridge.health", "/healthz", headers={header: basic("wrong")})
    await bridge.hook("requestheaders", flow)
    assert flow.response.status_code == 200
    assert_public(flow)
    assert header not in flow.request.headers
    assert checked == ["wrong"]


async def test_without_actors_nobody_gets_the_details(make_bridge):
    bridge = make_bridge(f"""\
[auth]
allow_open_proxy = true
[recording]
enabled = false
[providers.openai]
upstream = "{DEAD_UPSTREAM}"
""")
    flow = plain_flow("aibridge.health", "/healthz",
                      headers={"proxy-authorization": basic(TOKEN)})
    await bridge.hook("requestheaders", flow)
    assert isinstance(assert_public(flow)["providers"], dict)


async def test_the_health_host_is_matched_case_insensitively(bridge):
    flow = plain_flow("AIBridge.Health", "/healthz")
    bridge.addon(Health).requestheaders(flow)
    assert flow.response is not None and json_of(flow)["ready"] is True


async def test_a_probe_straight_to_the_port_is_answered_whatever_its_host_header(bridge):
    client = direct_client(bridge, b"GET /healthz HTTP/1.1\r\nHost: lb.example.com\r\n\r\n")
    flow = origin_form_flow(client, "/healthz?verbose=1")
    await bridge.hook("requestheaders", flow)
    assert flow.response is not None and flow.response.status_code == 200
    assert assert_public(flow)["ready"] is True
    # Later requests on the same connection too (a probe that keeps its connection).
    again = origin_form_flow(client, "/readyz")
    await bridge.hook("requestheaders", again)
    assert again.response.status_code == 200


@pytest.mark.parametrize("mode", [modes.HttpProxy, modes.HttpUpstreamProxy])
async def test_liveness_and_head_straight_to_the_port(bridge, mode):
    client = direct_client(bridge, b"HEAD /livez HTTP/1.1\r\n", mode)
    flow = origin_form_flow(client, "/livez", method="HEAD")
    await bridge.hook("requestheaders", flow)
    assert flow.response.status_code == 200 and flow.response.content == b""
    assert int(flow.response.headers["content-length"]) > 0
    flow = origin_form_flow(client, "/livez")
    await bridge.hook("requestheaders", flow)
    assert json_of(flow)["live"] is True


@pytest.mark.parametrize("first", [
    b"GET http://10.0.0.5:8080/healthz HTTP/1.1\r\n",  # absolute form: a proxy request
    b"CONNECT api.openai.com:443 HTTP/1.1\r\n",
    b"\x16\x03\x01\x02\x00",  # TLS to the proxy
])
async def test_proxy_requests_for_a_healthz_path_are_not_answered_as_health(bridge, first):
    client = direct_client(bridge, first)
    flow = origin_form_flow(client)
    bridge.addon(Health).requestheaders(flow)
    assert flow.response is None


async def test_other_paths_straight_to_the_port_are_left_to_the_chain(bridge):
    client = direct_client(bridge, b"GET / HTTP/1.1\r\n")
    flow = origin_form_flow(client, "/")
    await bridge.hook("requestheaders", flow)
    assert flow.response is not None and flow.response.status_code == 407
    flow = origin_form_flow(client, "/healthz", method="POST")
    bridge.addon(Health).requestheaders(flow)
    assert flow.response is None


async def test_layers_inside_a_tunnel_are_not_looked_at(bridge):
    client = tflow.tclient_conn()
    context = Context(client, bridge.tctx.options)
    modes.HttpProxy(context)
    modes.HttpProxy(context)  # a second layer: a decision inside the connection
    nextlayer = layer.NextLayer(context)
    nextlayer.events.append(events.DataReceived(client, b"GET /healthz HTTP/1.1\r\n"))
    bridge.addon(Health).next_layer(nextlayer)
    assert client not in bridge.addon(Health).direct


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_a_tls_flow_to_the_health_host_is_not_answered_by_health(bridge, scheme):
    client = tflow.tclient_conn()  # TLS established with the client
    client.sni = "aibridge.health"
    flow = provider_flow(client, "aibridge.health", "/healthz", method="GET")
    flow.request.scheme = scheme
    bridge.addon(Health).requestheaders(flow)
    assert flow.response is None
    await bridge.hook("requestheaders", flow)  # the rest of the chain: no tunnel, no caller
    assert flow.response is not None and flow.response.status_code == 407


async def test_other_plain_hosts_are_not_answered_by_health(bridge):
    flow = plain_flow("example.com", "/healthz")
    bridge.addon(Health).requestheaders(flow)
    assert flow.response is None


async def test_a_flow_that_already_has_an_answer_is_left_alone(bridge):
    flow = plain_flow("aibridge.health", "/healthz")
    flow.response = http.Response.make(418)
    bridge.addon(Health).requestheaders(flow)
    assert flow.response.status_code == 418


async def test_shim_problems_make_it_not_ready(bridge):
    bridge.runtime.shim_problems = ["mitmproxy 99.0 is not 12.2.x"]
    flow = plain_flow("aibridge.health", "/healthz")
    await bridge.hook("requestheaders", flow)
    assert flow.response is not None and flow.response.status_code == 503
    status = json_of(flow)
    assert status["ready"] is False and status["problems"] == ["mitmproxy 99.0 is not 12.2.x"]


async def test_an_unconfigured_bridge_is_not_ready():
    health = Health(Runtime())
    with taddons.context(health):
        flow = plain_flow("aibridge.health", "/healthz")
        health.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert json_of(flow)["problems"] == ["not configured"]


async def test_an_open_circuit_is_counted_and_shown_to_an_actor(bridge):
    breakers = bridge.runtime.settings.breakers
    for _ in range(breakers.settings.failure_threshold):
        breakers.record(breakers.admit("openai", "/v1/chat/completions", "gpt-4o"), failure=True)
    flow = plain_flow("aibridge.health", "/healthz")
    await bridge.hook("requestheaders", flow)
    assert json_of(flow)["open_circuits"] == 1 and "gpt-4o" not in flow.response.get_text()
    flow = plain_flow("aibridge.health", "/healthz",
                      headers={"proxy-authorization": basic(TOKEN)})
    await bridge.hook("requestheaders", flow)
    circuits = json_of(flow)["circuits"]
    assert [(c["provider"], c["model"], c["state"]) for c in circuits] == [
        ("openai", "gpt-4o", "open")]


@pytest.fixture
def unreachable_recorder(tmp_path):
    # Port 9 on loopback refuses at once: the recorder starts, spooling.
    recorder = Recorder("postgresql://bridge:pw-secret@127.0.0.1:9/aibridge",
                        spool_path=tmp_path / "spool.jsonl")
    yield recorder
    recorder.close(1)


async def test_an_unreachable_database_makes_it_not_ready_without_naming_it(
        bridge, unreachable_recorder):
    assert unreachable_recorder.database_reachable is False
    bridge.runtime.recorder = unreachable_recorder
    flow = plain_flow("aibridge.health", "/healthz")
    await bridge.hook("requestheaders", flow)
    assert flow.response.status_code == 503
    status = json_of(flow)
    assert status["problems"] == [
        "recording database unreachable: 0 record(s) spooled, written once it is back"]
    assert status["recording"] == {"database_reachable": False, "spooled": 0}
    body = flow.response.get_text()
    for leak in ("postgresql", "pw-secret", "127.0.0.1:9", "spool.jsonl", "last_error"):
        assert leak not in body, leak
    # Liveness stays up: restarting the bridge would not bring the database back.
    client = direct_client(bridge, b"GET /livez HTTP/1.1\r\n")
    flow = origin_form_flow(client, "/livez")
    await bridge.hook("requestheaders", flow)
    assert flow.response.status_code == 200
