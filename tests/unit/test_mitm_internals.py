"""The shim over mitmproxy's private HTTP/1 error path must fail loudly when mitmproxy changes."""

import json

from aibridge.addons import mitm_shim as mitm_internals
from aibridge.errors import proxy_failures as failures


def test_the_mitmproxy_internals_we_wrap_are_still_there():
    assert mitm_internals.problems() == []


def test_chat_tail_is_a_data_error_then_done():
    tail = mitm_internals.sse_error_tail("chat", {"error": {"message": "cut"}})
    assert tail == b'data: {"error":{"message":"cut"}}\n\ndata: [DONE]\n\n'


def test_messages_and_responses_tails_are_error_events():
    body = {"type": "error", "error": {"type": "api_error", "message": "cut"}}
    for route in ("messages", "responses"):
        tail = mitm_internals.sse_error_tail(route, body)
        event, data = tail.decode().strip().split("\n")
        assert event == "event: error"
        assert json.loads(data.removeprefix("data: ")) == body


def test_generic_error_is_json_both_sdks_parse():
    response = failures.generic(502, "Cannot connect")
    body = json.loads(response.content)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"] == "proxy: Cannot connect"


def test_client_cancel_is_not_a_failure():
    assert failures.is_client_cancel("Client disconnected.")
    assert not failures.is_client_cancel("server closed connection")
