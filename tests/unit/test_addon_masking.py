"""Masking addon, in-process with the whole chain: hints in the flow from the request headers
on, the real credentials only on their way upstream, hints again at every end (answer,
refusal, kill, shutdown), echoes redacted."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons import view
from mitmproxy.test import tutils

from aibridge.addons.masking import Masking
from tests.unit.conftest import (
    BASE_CONFIG,
    OPENAI_KEY,
    TOKEN,
    basic,
    plain_flow,
    provider_flow,
)

OWN_KEY = "sk-ant-api03-personal-key-abcdefgh"  # sk-a...efgh
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def answer(flow: http.HTTPFlow, status: int = 200, content: bytes = b'{"id":"x"}'
           ) -> http.HTTPFlow:
    flow.response = tutils.tresp(status_code=status, content=content)
    flow.response.headers["content-type"] = "application/json"
    return flow


async def own_key_request(bridge) -> http.HTTPFlow:
    client = await bridge.tunnel("api.anthropic.com")
    return provider_flow(client, "api.anthropic.com", "/v1/messages", body=MESSAGES,
                         headers={"x-api-key": OWN_KEY, "anthropic-version": "2023-06-01"})


def held(masking: Masking, flow: http.HTTPFlow) -> bool:
    """Whether the masking addon stops mitmproxy's announcement of the flow (mitmweb)."""
    try:
        masking.update([flow])
    except exceptions.AddonHalt:
        return True
    return False


async def test_hints_until_forwarded_then_the_real_key_goes_upstream(make_bridge):
    # [providers.anthropic]; mitmweb's (or the console's) live view lists flows in flight.
    bridge = make_bridge(BASE_CONFIG + 'credentials = "auto"\n', extra_addons=[view.View()])
    masking = bridge.addon(Masking)
    flow = await own_key_request(bridge)
    await bridge.hook("requestheaders", flow)
    assert flow.request.headers["x-api-key"] == "sk-a...efgh"  # what mitmweb lists
    assert not held(masking, flow)
    await bridge.hook("request", flow)
    assert flow.response is None
    assert flow.request.headers["x-api-key"] == OWN_KEY  # forwarded as the client sent it
    assert flow.metadata["aibridge"]["credential"]["kind"] == "byok"
    assert held(masking, flow)  # mitmweb is not told while it holds the key
    await bridge.hook("responseheaders", answer(flow))
    assert flow.request.headers["x-api-key"] == "sk-a...efgh"
    assert not held(masking, flow)
    await bridge.hook("response", flow)
    assert OWN_KEY not in repr(flow.get_state())
    assert not bridge.runtime.hidden


async def test_other_plain_http_requests_are_hidden_and_revealed_by_the_addon(make_bridge):
    bridge = make_bridge(BASE_CONFIG + '[egress]\nallow = ["127.0.0.0/8"]\n',
                         extra_addons=[view.View()])
    flow = plain_flow("127.0.0.1", "/x?key=AIzaSy-query-key-0123456789",
                      headers={"proxy-authorization": basic(TOKEN),
                               "authorization": "Bearer site-token-0123456789"})
    await bridge.hook("requestheaders", flow)
    assert flow.request.headers["authorization"] == "Bearer site...6789"
    assert flow.request.query["key"] == "AIza...6789"
    await bridge.hook("request", flow)
    assert flow.response is None  # forwarded
    assert flow.request.headers["authorization"] == "Bearer site-token-0123456789"
    assert flow.request.query["key"] == "AIzaSy-query-key-0123456789"
    # The site echoes the token: redacted with the rest once the answer is whole.
    answer(flow, 401, b"bad token site-token-0123456789")
    await bridge.hook("responseheaders", flow)
    await bridge.hook("response", flow)
    assert flow.response.content == b"bad token site...6789"
    state = repr(flow.get_state())
    assert "site-token-0123456789" not in state and "AIzaSy-query-key-0123456789" not in state
    assert TOKEN not in state


async def test_without_a_live_view_nothing_is_hidden_in_flight_and_every_end_is_masked(
        make_bridge):
    """mitmdump: no view lists flows in flight, so the request keeps its credentials from
    its headers to the wire (nothing to hide and put back); its end is masked as always."""
    bridge = make_bridge(BASE_CONFIG + 'credentials = "auto"\n')
    masking = bridge.addon(Masking)
    flow = await own_key_request(bridge)
    await bridge.hook("requestheaders", flow)
    assert masking.live_view is False
    assert flow.request.headers["x-api-key"] == OWN_KEY and not bridge.runtime.hidden
    await bridge.hook("request", flow)
    assert flow.response is None and flow.request.headers["x-api-key"] == OWN_KEY
    assert held(masking, flow)  # any other update consumer is still not told
    await bridge.hook("responseheaders", answer(flow, 401, f"bad key {OWN_KEY}".encode()))
    assert flow.request.headers["x-api-key"] == "sk-a...efgh"
    await bridge.hook("response", flow)
    assert OWN_KEY not in repr(flow.get_state())


async def test_a_request_refused_at_its_headers_is_masked_at_once(bridge):
    client = await bridge.tunnel("api.openai.com")
    flow = provider_flow(client, "api.openai.com", "/nowhere", method="GET",
                         headers={"authorization": "Bearer sk-own-key-0123456789abcd"})
    await bridge.hook("requestheaders", flow)
    assert flow.response is not None and flow.response.status_code == 404
    assert flow.request.headers["authorization"] == "Bearer sk-o...abcd"
    assert flow not in bridge.runtime.hidden


@pytest.mark.parametrize(("content_type", "status"), [("text/plain", 415),
                                                      ("application/json", 400)])
async def test_a_request_refused_with_its_body_keeps_no_credential(bridge, content_type,
                                                                   status):
    client = await bridge.tunnel("api.openai.com")
    flow = provider_flow(client, "api.openai.com", "/v1/chat/completions", content=b"{oops",
                         headers={"content-type": content_type,
                                  "authorization": "Bearer sk-own-key-0123456789abcd"})
    await bridge.send(flow)
    assert flow.response is not None and flow.response.status_code == status
    assert flow.request.headers["authorization"] == "Bearer sk-o...abcd"


async def central_request(bridge) -> http.HTTPFlow:
    client = await bridge.tunnel("api.openai.com")
    flow = provider_flow(client, "api.openai.com", "/v1/chat/completions", body=CHAT,
                         headers={"authorization": "Bearer sk-user-placeholder"})
    await bridge.send(flow)
    assert flow.request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    return flow


async def test_a_flow_paused_by_mitmwebs_intercept_stays_visible(bridge):
    flow = await central_request(bridge)
    masking = bridge.addon(Masking)
    assert held(masking, flow)
    flow.intercept()
    assert not held(masking, flow)  # else nobody could see it to resume it
    flow.resume()
    assert held(masking, flow)


async def test_shutdown_masks_what_is_still_in_flight(bridge):
    flow = await central_request(bridge)
    bridge.addon(Masking).done()
    assert flow.request.headers["authorization"] == "Bearer sk-p...6789"


async def test_a_kill_from_mitmweb_masks_the_flow(bridge):
    flow = await central_request(bridge)
    flow.kill()
    assert not held(bridge.addon(Masking), flow)
    assert OPENAI_KEY not in repr(flow.get_state())


async def test_an_answer_echoing_the_central_key_is_redacted_before_anyone_reads_it(bridge):
    flow = await central_request(bridge)
    echo = (b'{"error":{"message":"Incorrect API key provided: ' + OPENAI_KEY.encode()
            + b'","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}')
    await bridge.hook("responseheaders", answer(flow, 400, echo))
    await bridge.hook("response", flow)
    assert flow.response.status_code == 400
    assert b"Incorrect API key provided: sk-p...6789" in flow.response.content
    assert OPENAI_KEY not in repr(flow.get_state())
