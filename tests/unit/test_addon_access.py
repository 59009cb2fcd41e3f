"""ProxyAccess addon, in-process: proxy credentials on CONNECT pick the caller for the whole
tunnel; plain-HTTP proxy requests authenticate every time; the credentials never travel on."""

from __future__ import annotations

import pytest
from mitmproxy import http

from aibridge.access.actors import token_digest
from aibridge.addons.access import ProxyAccess
from tests.unit.conftest import TOKEN, basic, connect_flow, plain_flow, provider_flow


def assert_407(flow) -> None:
    assert flow.response is not None and flow.response.status_code == 407
    assert flow.response.headers["proxy-authenticate"] == 'Basic realm="AI Bridge"'


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_connect_without_valid_credentials_gets_407(bridge, token):
    flow = connect_flow("api.openai.com", token=token)
    await bridge.hook("http_connect", flow)
    assert_407(flow)
    assert flow.client_conn not in bridge.runtime.callers


async def test_a_malformed_proxy_authorization_gets_407(bridge):
    flow = connect_flow("api.openai.com", token=None)
    flow.request.headers["proxy-authorization"] = f"Bearer {TOKEN}"
    await bridge.hook("http_connect", flow)
    assert_407(flow)


async def test_connect_with_the_right_token_stores_the_caller(bridge):
    flow = connect_flow("api.openai.com", token=TOKEN)
    await bridge.hook("http_connect", flow)
    assert flow.response is None
    caller = bridge.runtime.callers[flow.client_conn]
    assert caller.actor.id == "alice" and caller.actor.metadata == {"Team": "ml"}
    assert caller.token == token_digest(TOKEN)
    assert "proxy-authorization" not in flow.request.headers


async def test_requests_in_an_authenticated_tunnel_lose_proxy_authorization(bridge):
    client = await bridge.tunnel("api.openai.com")
    flow = provider_flow(client, "api.openai.com", "/v1/models", method="GET",
                         headers={"proxy-authorization": basic("someone-else")})
    bridge.addon(ProxyAccess).requestheaders(flow)
    assert flow.response is None
    assert "proxy-authorization" not in flow.request.headers
    assert bridge.runtime.caller_of(flow).actor.id == "alice"


async def test_a_plain_http_request_authenticates_every_time(bridge):
    access = bridge.addon(ProxyAccess)
    first = plain_flow("example.com", headers={"proxy-authorization": basic(TOKEN)})
    access.requestheaders(first)
    assert first.response is None
    assert "proxy-authorization" not in first.request.headers
    assert bridge.runtime.plain_callers[first].actor.id == "alice"
    assert first.client_conn not in bridge.runtime.callers  # not cached per connection
    second = plain_flow("example.com", client=first.client_conn)  # same connection, no creds
    access.requestheaders(second)
    assert_407(second)
    assert second not in bridge.runtime.plain_callers


async def test_a_plain_http_request_without_credentials_gets_407(bridge):
    flow = plain_flow("example.com")
    await bridge.hook("requestheaders", flow)
    assert_407(flow)


async def test_repeated_failures_block_the_address_even_for_the_right_token(bridge):
    access = bridge.addon(ProxyAccess)
    for _ in range(access.failures.limit):
        await bridge.hook("http_connect", connect_flow("api.openai.com", token="guess"))
    flow = connect_flow("api.openai.com", token=TOKEN)  # same peer address (tflow's)
    await bridge.hook("http_connect", flow)
    assert_407(flow)
    assert flow.client_conn not in bridge.runtime.callers


async def test_a_success_resets_the_failure_count(bridge):
    access = bridge.addon(ProxyAccess)
    for _ in range(access.failures.limit - 1):
        await bridge.hook("http_connect", connect_flow("api.openai.com", token="guess"))
    await bridge.tunnel("api.openai.com")  # succeeds, and forgets the failures
    await bridge.hook("http_connect", connect_flow("api.openai.com", token="guess"))
    await bridge.tunnel("api.openai.com")  # one failure since: not blocked


async def test_a_connect_already_answered_is_left_alone(bridge):
    flow = connect_flow("api.openai.com", token=None)
    flow.response = http.Response.make(418)
    bridge.addon(ProxyAccess).http_connect(flow)
    assert flow.response.status_code == 418 and flow.client_conn not in bridge.runtime.callers


async def test_without_an_actors_file_everyone_is_the_local_user(make_bridge):
    bridge = make_bridge("[auth]\nallow_open_proxy = true\n[recording]\nenabled = false\n")
    flow = connect_flow("api.openai.com", token=None)
    await bridge.hook("http_connect", flow)
    assert flow.response is None
    caller = bridge.runtime.callers[flow.client_conn]
    assert caller.actor == bridge.runtime.settings.local_actor and caller.token is None
