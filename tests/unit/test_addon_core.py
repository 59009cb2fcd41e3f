"""BridgeCore addon, in-process: a bridged request gets the central key and the configured
upstream; bad requests get JSON errors in the provider's shape; after the response the key in
the flow is only its masked hint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mitmproxy.test import tflow, tutils

from aibridge.addons.core import BridgeCore
from aibridge.intercept import mask_secret
from tests.unit.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    TOKEN,
    basic,
    json_of,
    plain_flow,
    provider_flow,
)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
ROUTES = {  # host: (path, body, auth header, central key)
    "api.openai.com": ("/v1/chat/completions", CHAT, "authorization", OPENAI_KEY),
    "api.anthropic.com": ("/v1/messages", MESSAGES, "x-api-key", ANTHROPIC_KEY),
}


async def bridged(bridge, host="api.openai.com", **kwargs):
    path, body, _, _ = ROUTES[host]
    client = await bridge.tunnel(host)
    kwargs.setdefault("body", body)
    until = kwargs.pop("until", "request")
    flow = provider_flow(client, host, kwargs.pop("path", path), **kwargs)
    return await bridge.send(flow, until)


def ok(flow, content=b'{"id":"x","model":"gpt-4o","choices":[]}'):
    flow.response = tutils.tresp(status_code=200, content=content)
    flow.response.headers["content-type"] = "application/json"
    return flow


async def test_a_bridged_post_gets_the_central_key_and_the_configured_upstream(bridge):
    flow = await bridged(bridge, headers={"authorization": "Bearer sk-user-own-key-123456"})
    assert flow.response is None
    request = flow.request
    assert (request.scheme, request.host, request.port) == ("http", "127.0.0.1", 9)
    assert request.path == "/v1/chat/completions"
    assert request.headers.get_all("authorization") == [f"Bearer {OPENAI_KEY}"]
    assert request.headers["x-ai-bridge-actor-id"] == "alice"
    assert flow.metadata["aibridge"]["interception"]["model"] == "gpt-4o"


async def test_the_anthropic_key_goes_in_x_api_key(bridge):
    flow = await bridged(bridge, "api.anthropic.com", headers={"x-api-key": TOKEN})
    assert flow.response is None
    assert flow.request.headers.get_all("x-api-key") == [ANTHROPIC_KEY]
    assert "authorization" not in flow.request.headers


@pytest.mark.parametrize(("host", "anthropic_shape"), [("api.openai.com", False),
                                                       ("api.anthropic.com", True)])
async def test_an_unknown_path_gets_a_json_404_in_the_providers_shape(bridge, host,
                                                                        anthropic_shape):
    flow = await bridged(bridge, host, path="/v2/unknown", method="GET", body=None,
                         until="requestheaders")
    assert flow.response is not None and flow.response.status_code == 404
    body = json_of(flow)
    assert body["error"]["code"] == "route_not_supported"
    assert "GET /v2/unknown" in body["error"]["message"]
    assert (body.get("type") == "error") is anthropic_shape
    assert flow.request.host == host  # never aimed anywhere, never given a key
    assert OPENAI_KEY not in str(flow.request.headers)


@pytest.mark.parametrize(("content_type", "content", "status"), [
    ("text/plain", b"hello", 415),
    ("application/json", b"{not json", 400),
    ("application/json", b"[1, 2]", 400),
])
async def test_a_body_that_is_not_a_json_object_is_refused(bridge, content_type, content,
                                                           status):
    flow = await bridged(bridge, headers={"content-type": content_type}, content=content)
    assert flow.response is not None and flow.response.status_code == status
    assert "error" in json_of(flow)
    assert flow.request.host == "api.openai.com"
    assert OPENAI_KEY not in str(flow.request.headers)


async def test_an_open_circuit_answers_at_once_with_the_circuit_open_error(bridge):
    breakers = bridge.runtime.settings.breakers
    for _ in range(breakers.settings.failure_threshold):
        breakers.record(breakers.admit("openai", "/v1/chat/completions", "gpt-4o"), failure=True)
    ended = []
    bridge.runtime.reporter.ended = lambda interception, **kw: ended.append((interception, kw))
    flow = await bridged(bridge)
    assert flow.response is not None and flow.response.status_code == 503
    error = json_of(flow)["error"]
    assert error["code"] == "service_unavailable"
    assert error["message"].startswith("circuit breaker is open: the provider failed repeatedly")
    assert "retry-after" not in flow.response.headers
    assert flow.response.headers["x-should-retry"] == "false"  # a long wait: say so now
    assert flow.request.host == "api.openai.com"
    assert flow.metadata["aibridge"]["outcome"] == "rejected"
    assert flow not in bridge.runtime.exchanges  # ended
    ((interception, kw),) = ended  # recorded once, as refused by the open circuit
    assert kw["outcome"] == "rejected" and kw["error_type"] == "server_error"
    assert interception.model == "gpt-4o"


@pytest.mark.parametrize("host", list(ROUTES))
async def test_after_the_response_the_key_is_scrubbed_to_its_hint(bridge, host):
    _, _, header, key = ROUTES[host]
    flow = await bridged(bridge, host)
    assert key in str(flow.request.headers)  # on the wire with the real key
    await bridge.hook("responseheaders", ok(flow))
    await bridge.hook("response", flow)
    assert key not in str(flow.request.headers)
    assert all(key not in value for _, value in flow.request.headers.items(multi=True))
    assert mask_secret(key) in flow.request.headers[header]
    assert flow.metadata["aibridge"]["outcome"] == "completed"


async def test_an_answer_that_needs_no_failover_builds_no_resend_client(bridge):
    """The client for re-sends (an HTTP client with its own connection pool) is built the
    first time a key is refused, not on every bridge's first answer."""
    flow = await bridged(bridge)
    await bridge.hook("responseheaders", ok(flow))
    await bridge.hook("response", flow)
    assert flow.metadata["aibridge"]["outcome"] == "completed"
    assert not bridge.runtime.has_resend_client


async def test_the_key_is_scrubbed_already_when_the_response_headers_arrive(bridge):
    flow = await bridged(bridge)
    await bridge.hook("responseheaders", ok(flow))
    assert flow.request.headers["authorization"] == f"Bearer {mask_secret(OPENAI_KEY)}"


async def test_a_plaintext_request_claiming_a_provider_host_is_not_bridged(bridge):
    flow = plain_flow("api.openai.com", "/v1/chat/completions",
                      headers={"proxy-authorization": basic(TOKEN)})
    flow.request.method, flow.request.content = "POST", json.dumps(CHAT).encode()
    await bridge.hook("requestheaders", flow)
    assert bridge.runtime.caller_of(flow).actor.id == "alice"  # authenticated, yet:
    await bridge.addon(BridgeCore).request(flow)  # (Egress would resolve the name)
    assert flow.response is None and flow not in bridge.runtime.exchanges
    assert OPENAI_KEY not in str(flow.request.headers)


@pytest.mark.parametrize(("sni", "ignored"), [("api.openai.com", False), ("example.com", True),
                                              ("evilapi.openai.com", True)])
async def test_only_provider_hosts_are_decrypted(bridge, sni, ignored):
    data = SimpleNamespace(client_hello=SimpleNamespace(sni=sni, alpn_protocols=[b"h2"]),
                           context=SimpleNamespace(client=tflow.tclient_conn()),
                           ignore_connection=False)
    bridge.addon(BridgeCore).tls_clienthello(data)
    assert data.ignore_connection is ignored
