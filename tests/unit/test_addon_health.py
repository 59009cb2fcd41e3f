"""Health addon, in-process: `http://aibridge.health/healthz` through the proxy is answered with
the JSON status document, before and without proxy authentication; nothing else is."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from aibridge.addons.health import Health
from aibridge.addons.runtime import Runtime
from tests.unit.conftest import ANTHROPIC_KEY, OPENAI_KEY, json_of, plain_flow, provider_flow


async def test_healthz_over_plain_http_is_a_json_200_with_ready(bridge):
    flow = plain_flow("aibridge.health", "/healthz")
    await bridge.hook("requestheaders", flow)  # the whole chain: no proxy credentials sent
    assert flow.response is not None and flow.response.status_code == 200
    status = json_of(flow)
    assert status["ready"] is True and status["problems"] == []
    assert {p["name"] for p in status["providers"]} >= {"openai", "anthropic"}
    assert flow.response.headers["cache-control"] == "no-store"
    body = flow.response.get_text()
    assert OPENAI_KEY not in body and ANTHROPIC_KEY not in body  # masked hints only


async def test_the_health_host_is_matched_case_insensitively(bridge):
    flow = plain_flow("AIBridge.Health", "/healthz")
    bridge.addon(Health).requestheaders(flow)
    assert flow.response is not None and json_of(flow)["ready"] is True


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


async def test_an_open_circuit_shows_in_the_document(bridge):
    breakers = bridge.runtime.settings.breakers
    for _ in range(breakers.settings.failure_threshold):
        breakers.record(breakers.admit("openai", "/v1/chat/completions", "gpt-4o"), failure=True)
    flow = plain_flow("aibridge.health", "/healthz")
    await bridge.hook("requestheaders", flow)
    circuits = json_of(flow)["circuits"]
    assert [(c["provider"], c["model"], c["state"]) for c in circuits] == [
        ("openai", "gpt-4o", "open")]
