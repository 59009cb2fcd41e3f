"""Sockets addon, in-process: after a bridged WebSocket handshake on /v1/responses, each client
`response.create` frame is one interception; with the circuit open the frame is dropped and an
error frame is injected towards the client.

`inject.websocket` is mitmproxy's Proxyserver command. The real Proxyserver addon is loaded here;
since no proxy is listening, the client connection's handler is a stand-in that records the event
Proxyserver hands it (the one thing a live connection would then write to the socket).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import http, websocket
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.events import MessageInjected
from mitmproxy.test import tutils
from wsproto.frame_protocol import Opcode

from tests.unit.conftest import OPENAI_KEY, provider_flow

UPGRADE = {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
           "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}
CREATE = {"type": "response.create", "model": "gpt-4o", "input": "hi"}
COMPLETED = {"type": "response.completed", "response": {
    "id": "resp_1", "model": "gpt-4o", "status": "completed", "output": [],
    "usage": {"input_tokens": 3, "output_tokens": 4}}}


class RecordingHandler:
    """Stands in for a live connection's handler in Proxyserver.connections."""

    def __init__(self) -> None:
        self.events: list[MessageInjected] = []

    async def server_event(self, event: MessageInjected) -> None:
        self.events.append(event)


@pytest.fixture
async def socket(make_bridge):
    """A bridge with the real Proxyserver, and a flow whose handshake came back 101."""
    proxyserver = Proxyserver()
    bridge = make_bridge(extra_addons=[proxyserver])
    client = await bridge.tunnel("api.openai.com")
    flow = await bridge.send(provider_flow(client, "api.openai.com", "/v1/responses",
                                           method="GET", headers=UPGRADE))
    assert flow.response is None
    flow.response = tutils.tresp(status_code=101, reason=b"Switching Protocols", content=b"",
                                 headers=http.Headers(connection="Upgrade", upgrade="websocket"))
    await bridge.hook("responseheaders", flow)
    await bridge.hook("response", flow)
    flow.websocket = websocket.WebSocketData()
    handler = proxyserver.connections[client.id] = RecordingHandler()
    return bridge, flow, handler


async def frame(bridge, flow, content: dict, from_client: bool = True):
    message = websocket.WebSocketMessage(Opcode.TEXT, from_client, json.dumps(content).encode())
    flow.websocket.messages.append(message)
    await bridge.hook("websocket_message", flow)
    await asyncio.sleep(0)  # let Proxyserver's injection task run
    return message


def interceptions(flow) -> list[dict]:
    return flow.metadata["aibridge"].get("interceptions", [])


async def test_the_handshake_opens_a_session_and_the_key_is_scrubbed(socket):
    bridge, flow, _ = socket
    assert flow in bridge.runtime.sockets
    assert OPENAI_KEY not in str(flow.request.headers)
    assert flow.request.headers["upgrade"] == "websocket"


async def test_a_response_create_frame_opens_an_interception(socket):
    bridge, flow, handler = socket
    message = await frame(bridge, flow, CREATE)
    assert not message.dropped and handler.events == []
    assert interceptions(flow) == []  # open: nothing finished yet
    [done] = bridge.runtime.sockets[flow].close("test ends it")
    assert (done.interception.model, done.interception.route) == ("gpt-4o", "/v1/responses")
    assert done.interception.actor.id == "alice"


async def test_the_terminal_server_frame_ends_the_interception(socket):
    bridge, flow, _ = socket
    await frame(bridge, flow, CREATE)
    await frame(bridge, flow, COMPLETED, from_client=False)
    [entry] = interceptions(flow)
    assert entry["outcome"] == "completed" and entry["model"] == "gpt-4o"
    await bridge.hook("websocket_end", flow)
    assert flow not in bridge.runtime.sockets
    assert flow.metadata["aibridge"]["outcome"] == "completed"


async def test_other_client_frames_open_nothing(socket):
    bridge, flow, _ = socket
    await frame(bridge, flow, {"type": "session.update"})
    assert bridge.runtime.sockets[flow].close(None) == []


async def test_with_the_circuit_open_the_frame_is_dropped_and_answered(socket):
    bridge, flow, handler = socket
    breakers = bridge.runtime.settings.breakers
    for _ in range(breakers.settings.failure_threshold):
        breakers.record(breakers.admit("openai", "/v1/responses", "gpt-4o"), failure=True)
    message = await frame(bridge, flow, CREATE)
    assert message.dropped
    [event] = handler.events
    assert event.flow is flow and not event.message.from_client and event.message.is_text
    error = json.loads(event.message.content)
    assert (error["type"], error["status"]) == ("error", 503)
    assert error["error"]["message"].startswith("circuit breaker is open")
    [entry] = interceptions(flow)
    assert entry["outcome"] == "rejected"
    assert bridge.runtime.sockets[flow].close(None) == []  # not left open


async def test_a_socket_that_ends_mid_response_fails_its_interception(socket):
    bridge, flow, _ = socket
    await frame(bridge, flow, CREATE)
    await bridge.hook("websocket_end", flow)
    [entry] = interceptions(flow)
    assert entry["outcome"] == "failed"
    assert flow.metadata["aibridge"]["outcome"] == "failed"
