"""ProxyAccess addon, in-process: proxy credentials on CONNECT pick the caller for the whole
tunnel; plain-HTTP proxy requests authenticate every time; the credentials never travel on."""

from __future__ import annotations

import base64

import pytest
from mitmproxy import http

from aibridge.access.actors import token_digest
from aibridge.addons.access import ProxyAccess, user_hint
from aibridge.addons.configuration import Configuration
from tests.unit.conftest import (
    ACTORS,
    BASE_CONFIG,
    TOKEN,
    basic,
    connect_flow,
    json_of,
    plain_flow,
    provider_flow,
)


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


def connect_as(user: str, token: str, peer: str = "10.0.0.1") -> http.HTTPFlow:
    flow = connect_flow("api.openai.com", token=None)
    flow.request.headers["proxy-authorization"] = (
        "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode())
    flow.client_conn.peername = (peer, 40000)
    return flow


async def test_repeated_failures_block_that_user_name_even_for_the_right_token(bridge):
    access = bridge.addon(ProxyAccess)
    for _ in range(access.failures.policy.per_user):
        await bridge.hook("http_connect", connect_as("mallory", "guess"))
    flow = connect_as("mallory", TOKEN)  # same address, same name
    await bridge.hook("http_connect", flow)
    assert_407(flow)
    assert flow.client_conn not in bridge.runtime.callers
    other = connect_as("alice", TOKEN)  # same address, another name
    await bridge.hook("http_connect", other)
    assert other.response is None and other.client_conn in bridge.runtime.callers


async def test_a_success_resets_the_failure_count_of_its_own_name(bridge):
    access = bridge.addon(ProxyAccess)
    for _ in range(access.failures.policy.per_user - 1):
        await bridge.hook("http_connect", connect_as("x", "guess"))
    await bridge.tunnel("api.openai.com")  # succeeds as "x", and forgets its failures
    await bridge.hook("http_connect", connect_as("x", "guess"))
    await bridge.tunnel("api.openai.com")  # one failure since: not blocked


async def test_the_failure_limits_come_from_the_config(make_bridge):
    bridge = make_bridge(BASE_CONFIG.replace(
        "[auth]\n", "[auth]\nmax_failures_per_user = 2\nfailure_window = 5\n"))
    await bridge.hook("http_connect", connect_as("x", "guess"))
    policy = bridge.addon(ProxyAccess).failures.policy
    assert (policy.per_user, policy.window) == (2, 5)
    await bridge.hook("http_connect", connect_as("x", "guess"))
    flow = connect_as("x", TOKEN)
    await bridge.hook("http_connect", flow)
    assert_407(flow)


def test_the_user_name_is_logged_only_as_a_hash():
    assert user_hint("") == "no user name"
    assert user_hint("alice-proxy-token").startswith("user #")
    assert "alice" not in user_hint("alice-proxy-token")


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


# -- revocation: a reload re-checks the callers of open connections ------------------------------

OTHER = "bob-proxy-token-4567"
WITH_BOB = ACTORS + f'[[actors]]\nid = "bob"\ntoken = "{OTHER}"\n'


def rewrite_actors(bridge, text: str | None) -> None:
    path = bridge.config.parent / "actors.toml"
    if text is None:
        path.unlink()
    else:
        path.write_text(text)


async def test_a_removed_token_is_refused_on_its_open_tunnel(bridge):
    rewrite_actors(bridge, WITH_BOB)
    assert bridge.addon(Configuration).reload()
    alice = await bridge.tunnel("api.openai.com")
    bob = await bridge.tunnel("api.openai.com", token=OTHER)
    rewrite_actors(bridge, WITH_BOB.replace(TOKEN, "alice-new-token"))
    assert bridge.addon(Configuration).reload()
    flow = provider_flow(alice, "api.openai.com", "/v1/models", method="GET")
    await bridge.hook("requestheaders", flow)
    assert flow.response is not None and flow.response.status_code == 407
    assert flow.response.headers["connection"] == "close"
    assert json_of(flow)["error"]["type"] == "authentication_error"
    access = bridge.addon(ProxyAccess)
    assert alice in access.revoked and alice not in bridge.runtime.callers
    kept = provider_flow(bob, "api.openai.com", "/v1/models", method="GET")
    bridge.addon(ProxyAccess).requestheaders(kept)
    assert kept.response is None and bridge.runtime.caller_of(kept).actor.id == "bob"
    again = connect_flow("api.openai.com")
    again.client_conn = alice  # a CONNECT on a revoked connection is refused too
    await bridge.hook("http_connect", again)
    assert_407(again)


async def test_a_reload_checks_callers_once_and_updates_changed_metadata(bridge):
    alice = await bridge.tunnel("api.openai.com")
    access = bridge.addon(ProxyAccess)
    assert access.refresh() == []  # nothing changed since the tunnel: no re-check
    rewrite_actors(bridge, ACTORS.replace('Team = "ml"', 'Team = "infra"'))
    assert bridge.addon(Configuration).reload()
    assert access.refresh() == []
    assert bridge.runtime.callers[alice].actor.metadata == {"Team": "infra"}
    assert alice not in access.revoked


async def test_a_removed_token_revokes_a_plain_http_connection(bridge):
    access = bridge.addon(ProxyAccess)
    first = plain_flow("example.com", headers={"proxy-authorization": basic(TOKEN)})
    access.requestheaders(first)
    assert first.response is None
    rewrite_actors(bridge, WITH_BOB.replace(TOKEN, "alice-new-token"))
    assert bridge.addon(Configuration).reload()
    assert access.refresh() == [first.client_conn]
    second = plain_flow("example.com", headers={"proxy-authorization": basic(TOKEN)},
                        client=first.client_conn)
    access.requestheaders(second)
    assert second.response is not None and second.response.status_code == 407


async def test_a_deleted_actors_file_keeps_the_actors_by_default(bridge):
    alice = await bridge.tunnel("api.openai.com")
    rewrite_actors(bridge, None)
    assert bridge.addon(Configuration).reload() is False
    assert bridge.addon(ProxyAccess).refresh() == []
    assert alice in bridge.runtime.callers
    await bridge.tunnel("api.openai.com")


async def test_a_deleted_actors_file_refuses_everyone_with_on_missing_deny(make_bridge, caplog):
    bridge = make_bridge(BASE_CONFIG.replace("[auth]\n", '[auth]\non_missing = "deny"\n'))
    alice = await bridge.tunnel("api.openai.com")
    rewrite_actors(bridge, None)
    assert bridge.addon(Configuration).reload() is True
    assert bridge.addon(ProxyAccess).refresh() == [alice]
    assert "is missing and [auth] on_missing = \"deny\"" in caplog.text
    flow = connect_flow("api.openai.com")
    await bridge.hook("http_connect", flow)
    assert_407(flow)
    assert any("every proxy request is refused" in line
               for line in bridge.runtime.settings.describe())
    rewrite_actors(bridge, ACTORS)
    assert bridge.addon(Configuration).reload() is True
    await bridge.tunnel("api.openai.com")


async def test_turning_auth_on_revokes_tunnels_opened_without_credentials(make_bridge):
    bridge = make_bridge("[auth]\nallow_open_proxy = true\n[recording]\nenabled = false\n")
    anyone = await bridge.tunnel("api.openai.com", token=None)
    bridge.config.write_text(BASE_CONFIG)
    assert bridge.addon(Configuration).reload()
    assert bridge.addon(ProxyAccess).refresh() == [anyone]
