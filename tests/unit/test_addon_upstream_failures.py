"""UpstreamFailures addon, in-process: only provider connections get a handover for mitmproxy's
own errors, and after an unreachable upstream it holds the JSON answer the core prepared.

The shim itself (`mitm_shim.install`, which makes mitmproxy's HTTP/1 server layer send the
handover) is not exercised here: that needs a live connection (tests/e2e)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.test import tflow

from aibridge.addons import mitm_shim
from aibridge.addons.upstream_failures import UpstreamFailures
from tests.unit.conftest import (
    BASE_CONFIG,
    OPENAI_KEY,
    TOKEN,
    basic,
    plain_flow,
    provider_flow,
)

ROUTES = {"api.openai.com": ("/v1/chat/completions", {"model": "gpt-4o", "messages": []}),
          "api.anthropic.com": ("/v1/messages", {"model": "claude-x", "max_tokens": 1,
                                                 "messages": []})}


async def provider_request(bridge, host="api.openai.com"):
    path, body = ROUTES[host]
    client = await bridge.tunnel(host)
    return await bridge.send(provider_flow(client, host, path, body=body))


def take(bridge, flow) -> mitm_shim.Handover | None:
    return bridge.addon(UpstreamFailures)._take(flow.client_conn)


async def test_a_non_provider_flow_gets_no_handover(bridge):
    flow = plain_flow("api.openai.com", "/v1/chat/completions",  # claims the host, no TLS
                      headers={"proxy-authorization": basic(TOKEN)})
    await bridge.hook("requestheaders", flow)
    assert flow.response is None and bridge.runtime.caller_of(flow) is not None
    assert take(bridge, flow) is None


async def test_a_bridged_flow_gets_a_handover_in_the_providers_shape(bridge):
    flow = await provider_request(bridge, "api.anthropic.com")
    handover = take(bridge, flow)
    assert isinstance(handover, mitm_shim.Handover) and handover.response is None
    generic = handover.generic(502, "Connection closed")
    assert generic.status_code == 502
    body = json.loads(generic.content)
    assert body["type"] == "error" and body["error"]["code"] == "proxy_error"


@pytest.mark.parametrize(("host", "anthropic_shape"), [("api.openai.com", False),
                                                       ("api.anthropic.com", True)])
async def test_an_unreachable_upstream_hands_over_a_json_502(bridge, host, anthropic_shape):
    flow = await provider_request(bridge, host)
    flow.error = mflow.Error("[Errno 111] Connect call failed ('127.0.0.1', 9)")  # asyncio's
    await bridge.hook("error", flow)
    handover = take(bridge, flow)
    assert handover is not None and handover.response is not None
    response = handover.response
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.content)
    assert (body.get("type") == "error") is anthropic_shape
    assert body["error"]["code"] == "upstream_unreachable"
    # It names the provider and the host the client asked for, not the upstream's address.
    provider = "anthropic" if anthropic_shape else "openai"
    assert body["error"]["message"] == (
        f"upstream {provider} ({host}) unreachable: connection refused")
    assert OPENAI_KEY not in response.get_text()
    assert flow not in bridge.runtime.exchanges  # ended


@pytest.mark.parametrize(("sni", "registered"), [("api.anthropic.com", True),
                                                  ("example.com", False), (None, False)])
async def test_only_a_decrypted_provider_connection_gets_a_handover_at_tls(bridge, sni,
                                                                           registered):
    client = tflow.tclient_conn()
    client.sni = sni
    bridge.addon(UpstreamFailures).tls_established_client(SimpleNamespace(conn=client))
    handover = bridge.addon(UpstreamFailures)._take(client)
    assert (handover is not None) is registered
    if registered:  # a malformed head never reaches a hook: the answer is JSON anyway
        assert json.loads(handover.generic(400, "bad request").content)["type"] == "error"


async def test_a_new_request_does_not_inherit_an_earlier_explanation(bridge):
    flow = await provider_request(bridge)
    flow.error = mflow.Error("Connection refused")
    await bridge.hook("error", flow)  # prepared, but mitmproxy never asked for it
    path, body = ROUTES["api.openai.com"]
    await bridge.send(provider_flow(flow.client_conn, "api.openai.com", path, body=body))
    handover = take(bridge, flow)
    assert handover is not None and handover.response is None


async def test_the_handover_is_used_once(bridge):
    flow = await provider_request(bridge)
    flow.error = mflow.Error("Connection refused")
    await bridge.hook("error", flow)
    assert take(bridge, flow).response is not None
    again = take(bridge, flow)
    assert again is not None and again.response is None  # back to the generic answer


async def test_an_unreachable_upstream_counts_against_the_circuit(bridge):
    breakers = bridge.runtime.settings.breakers
    for _ in range(breakers.settings.failure_threshold):
        flow = await provider_request(bridge)
        flow.error = mflow.Error("Connection refused")
        await bridge.hook("error", flow)
    assert breakers.state("openai", "/v1/chat/completions", "gpt-4o").value == "open"


async def test_a_client_cancel_prepares_no_answer(bridge):
    flow = await provider_request(bridge)
    flow.error = mflow.Error("Client disconnected.")
    await bridge.hook("error", flow)
    assert take(bridge, flow).response is None
    assert flow.metadata["aibridge"]["outcome"] == "cancelled"


async def test_the_upstream_timeout_is_armed_when_the_request_is_forwarded(make_bridge):
    bridge = make_bridge(BASE_CONFIG + "[resilience]\nupstream_timeout = 0.05\n")
    flow = await provider_request(bridge)
    ex = bridge.runtime.exchanges[flow]
    assert ex.timer is not None
    await asyncio.sleep(0.1)
    assert ex.timed_out == 0.05
    # No live connection to close (no proxyserver here): the flow is at least killed.
    assert flow.error is not None and flow.error.msg == mflow.Error.KILLED_MESSAGE


async def test_a_response_in_time_disarms_the_timer(make_bridge):
    bridge = make_bridge(BASE_CONFIG + "[resilience]\nupstream_timeout = 0.05\n")
    flow = await provider_request(bridge)
    flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
    await bridge.hook("responseheaders", flow)
    await asyncio.sleep(0.1)
    assert bridge.runtime.exchanges[flow].timed_out is None and flow.error is None


async def test_a_timeout_the_bridge_killed_is_a_failure_not_a_client_cancel(make_bridge):
    bridge = make_bridge(BASE_CONFIG + "[resilience]\nupstream_timeout = 0.05\n")
    flow = await provider_request(bridge)
    await asyncio.sleep(0.1)  # the timer fires; no live connection to close, so it kills
    await bridge.hook("error", flow)
    assert flow.metadata["aibridge"]["outcome"] == "failed"
    explanation = take(bridge, flow).response
    assert explanation is not None and explanation.status_code == 504
