"""Egress addon, in-process: tunnels and plain-HTTP requests to internal addresses are refused
(403), the checked address is pinned for the connection, and provider hosts are not checked."""

from __future__ import annotations

import pytest
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from aibridge.access import egress
from aibridge.addons.egress import Egress
from tests.unit.conftest import BASE_CONFIG, TOKEN, basic, connect_flow, plain_flow

# What names resolve to here, without DNS.
RESOLVES = {"example.com": "93.184.216.34", "api.openai.com": "162.159.140.245",
            "internal.example": "10.0.0.7"}


@pytest.fixture
def lookups(monkeypatch):
    """Resolve the names of RESOLVES without DNS; record every lookup."""
    seen: list[str] = []
    real = egress.resolve_allowed

    async def resolve(host, port, allowed):
        seen.append(host)
        return await real(RESOLVES.get(host, host), port, allowed)

    monkeypatch.setattr(egress, "resolve_allowed", resolve)
    return seen


def server_hook(client, host: str, port: int = 443) -> server_hooks.ServerConnectionHookData:
    """What mitmproxy hands `server_connect` when it opens a connection for `client`."""
    server = tflow.tserver_conn()
    server.address = (host, port)
    server.error = None
    return server_hooks.ServerConnectionHookData(server, client)


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
    data = server_hook(flow.client_conn, "example.com")
    await bridge.hook("server_connect", data)
    assert data.server.address == ("93.184.216.34", 443) and data.server.error is None
    assert lookups == ["example.com"]  # not resolved twice


async def test_the_pin_applies_only_to_the_checked_destination(bridge, lookups):
    flow = connect_flow("example.com")
    await bridge.hook("http_connect", flow)
    data = server_hook(flow.client_conn, "internal.example")
    await bridge.hook("server_connect", data)
    assert data.server.address == ("internal.example", 443)
    assert data.server.error is not None and "internal address" in data.server.error


# -- provider host names are no way around the check ----------------------------------------


@pytest.mark.parametrize("port", [22, 8443, 9])
async def test_a_connect_to_a_provider_host_on_another_port_is_checked(make_bridge, lookups,
                                                                        port):
    bridge = make_bridge(BASE_CONFIG.replace("[providers.openai]",
                                             '[providers.openai]\nhosts = ["internal.example"]'))
    flow = connect_flow("internal.example", port)
    await bridge.hook("http_connect", flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert b"10.0.0.7, an internal address" in flow.response.content
    assert lookups == ["internal.example"]


async def test_a_public_provider_host_on_another_port_is_pinned(bridge, lookups):
    flow = connect_flow("api.openai.com", 8443)
    await bridge.hook("http_connect", flow)
    assert flow.response is None and lookups == ["api.openai.com"]
    data = server_hook(flow.client_conn, "api.openai.com", 8443)
    await bridge.hook("server_connect", data)
    assert data.server.address == ("162.159.140.245", 8443)


@pytest.mark.parametrize("sni", ["evil.example", None])
async def test_an_undecrypted_tunnel_to_a_provider_host_is_checked_when_opened(make_bridge,
                                                                            lookups, sni):
    """CONNECT names a provider host, but the TLS SNI does not (or the client sends no TLS):
    mitmproxy tunnels to the CONNECT target, which must be checked like any other."""
    bridge = make_bridge(BASE_CONFIG.replace("[providers.openai]",
                                             '[providers.openai]\nhosts = ["internal.example"]'))
    flow = connect_flow("internal.example")
    await bridge.hook("http_connect", flow)
    assert flow.response is None and lookups == []  # 443: maybe decrypted, not resolved yet
    flow.client_conn.sni = sni
    data = server_hook(flow.client_conn, "internal.example")
    await bridge.hook("server_connect", data)
    assert data.server.error is not None and "10.0.0.7, an internal address" in data.server.error


async def test_an_undecrypted_tunnel_to_a_public_provider_host_is_pinned(bridge, lookups):
    flow = connect_flow("api.openai.com")
    await bridge.hook("http_connect", flow)
    flow.client_conn.sni = "evil.example"
    data = server_hook(flow.client_conn, "api.openai.com")
    await bridge.hook("server_connect", data)
    assert data.server.error is None and data.server.address == ("162.159.140.245", 443)


async def test_decrypted_provider_traffic_goes_to_the_configured_upstream_unchecked(bridge,
                                                                                  lookups):
    client = await bridge.tunnel("api.openai.com")  # SNI api.openai.com, decrypted
    data = server_hook(client, "127.0.0.1", 9)  # DEAD_UPSTREAM, loopback: the operator's choice
    await bridge.hook("server_connect", data)
    assert data.server.error is None and data.server.address == ("127.0.0.1", 9)
    assert lookups == []


async def test_the_configured_upstream_is_no_exemption_for_a_tunnel(bridge, lookups):
    flow = connect_flow("127.0.0.1", 9)
    await bridge.hook("http_connect", flow)
    assert flow.response is not None and flow.response.status_code == 403
    client = await bridge.tunnel("api.openai.com")
    client.sni = "evil.example"  # not decrypted: a tunnel
    data = server_hook(client, "127.0.0.1", 9)
    await bridge.hook("server_connect", data)
    assert data.server.error is not None


async def test_a_decrypted_provider_connection_reaches_nothing_but_upstreams(bridge, lookups):
    client = await bridge.tunnel("api.openai.com")
    data = server_hook(client, "10.0.0.8", 443)
    await bridge.hook("server_connect", data)
    assert data.server.error is not None


async def test_an_error_in_the_check_refuses_the_connection(bridge, monkeypatch):
    async def broken(host, port, allowed):
        raise RuntimeError("bug")

    monkeypatch.setattr(egress, "resolve_allowed", broken)
    client = await bridge.tunnel("api.openai.com")
    client.sni = None
    data = server_hook(client, "api.openai.com")
    await bridge.hook("server_connect", data)
    assert data.server.error is not None and "internal error" in data.server.error


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
