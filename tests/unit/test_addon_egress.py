"""Egress addon, in-process: tunnels and plain-HTTP requests to internal addresses are refused
(403), the checked address is pinned for the connection, and provider hosts are not checked."""

from __future__ import annotations

import pytest
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from aibridge.access import egress
from aibridge.addons.egress import Egress
from tests.unit.conftest import BASE_CONFIG, TOKEN, basic, connect_flow, plain_flow


@pytest.fixture
def lookups(monkeypatch):
    """Resolve example.com to a public address without DNS; record every lookup."""
    seen: list[str] = []
    real = egress.resolve_allowed

    async def resolve(host, port, allowed):
        seen.append(host)
        return await real("93.184.216.34" if host == "example.com" else host, port, allowed)

    monkeypatch.setattr(egress, "resolve_allowed", resolve)
    return seen


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1"])
async def test_a_connect_to_an_internal_address_is_refused(bridge, host):
    flow = connect_flow(host)
    await bridge.hook("http_connect", flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert b"Forbidden" in flow.response.content


async def test_authentication_comes_before_the_egress_check(bridge):
    flow = connect_flow("127.0.0.1", token=None)
    await bridge.hook("http_connect", flow)
    assert flow.response is not None and flow.response.status_code == 407


@pytest.mark.parametrize("host", ["api.openai.com", "api.anthropic.com"])
async def test_a_connect_to_a_provider_host_is_not_checked(bridge, lookups, host):
    flow = connect_flow(host)
    await bridge.hook("http_connect", flow)
    assert flow.response is None
    assert lookups == []  # never resolved: provider traffic goes to the configured upstream


async def test_an_allowed_connect_is_pinned_to_the_checked_address(bridge, lookups):
    flow = connect_flow("example.com")
    await bridge.hook("http_connect", flow)
    assert flow.response is None and lookups == ["example.com"]
    server = tflow.tserver_conn()
    server.address = ("example.com", 443)
    bridge.addon(Egress).server_connect(server_hooks.ServerConnectionHookData(server,
                                                                             flow.client_conn))
    assert server.address == ("93.184.216.34", 443)


async def test_the_pin_applies_only_to_the_checked_destination(bridge, lookups):
    flow = connect_flow("example.com")
    await bridge.hook("http_connect", flow)
    server = tflow.tserver_conn()
    server.address = ("other.example", 443)
    bridge.addon(Egress).server_connect(server_hooks.ServerConnectionHookData(server,
                                                                             flow.client_conn))
    assert server.address == ("other.example", 443)


async def test_the_allow_list_opens_an_internal_network(make_bridge):
    bridge = make_bridge(BASE_CONFIG + '[egress]\nallow = ["10.0.0.0/8"]\n')
    allowed = connect_flow("10.1.2.3")
    await bridge.hook("http_connect", allowed)
    assert allowed.response is None
    still_refused = connect_flow("192.168.1.1")
    await bridge.hook("http_connect", still_refused)
    assert still_refused.response is not None and still_refused.response.status_code == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.8"])
async def test_a_plain_http_request_to_an_internal_address_is_refused(bridge, host):
    flow = plain_flow(host, headers={"proxy-authorization": basic(TOKEN)})
    await bridge.send(flow)
    assert flow.response is not None and flow.response.status_code == 403


async def test_a_plain_http_request_is_pinned_but_keeps_its_host_header(bridge, lookups):
    flow = plain_flow("example.com", headers={"proxy-authorization": basic(TOKEN),
                                              "host": "example.com"})
    await bridge.send(flow)
    assert flow.response is None
    assert flow.request.host == "93.184.216.34"
    assert flow.request.headers["host"] == "example.com"


async def test_requests_inside_a_tls_tunnel_are_not_checked_again(bridge, lookups):
    flow = plain_flow("example.com")
    flow.client_conn.timestamp_tls_setup = 1.0
    await bridge.addon(Egress).request(flow)
    assert flow.response is None and lookups == []
