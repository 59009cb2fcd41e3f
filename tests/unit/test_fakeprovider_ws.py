"""The fake's Responses-over-WebSocket endpoint, driven directly (no proxy).

Mostly through the real openai SDK (``client.responses.connect()``, built on
``websockets.sync.client``), plus the plain ``websockets`` client so the fake does not depend on
the SDK's behaviour. Everything talks to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai.types.responses.responses_server_event import ResponsesServerEvent
from websockets.exceptions import ConnectionClosedError, InvalidProxyStatus, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.fakeprovider import FakeProvider, Reply, WsReply, tls_context_for, ws_error

pytestmark = [
    pytest.mark.timeout(30),
    # websockets 17.1 deprecates the SDK's (and one test's) use of connect() without `with`.
    pytest.mark.filterwarnings(
        "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
    ),
]

DEFAULT_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(autouse=True)
def _no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # websockets routes through HTTPS_PROXY & co. by default (127.0.0.1 is not exempt).
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as f:
        yield f


def oai(fake: FakeProvider, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="x", base_url=fake.url + "/v1", max_retries=0, timeout=5.0, **kwargs
    )


def until_completed(conn: Any) -> list[ResponsesServerEvent]:
    """Events of one response, up to and including response.completed (or an error)."""
    events: list[ResponsesServerEvent] = []
    for event in conn:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "error"):
            break
    return events


def recv_json(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=5))


def normalised(obj: Any) -> str:
    """JSON with the per-request parts (ids, timestamps) blanked, to compare transports."""
    text = json.dumps(obj, sort_keys=True)
    return re.sub(r'"created_at": \d+', '"created_at": 0', re.sub(r"fake\d+", "fakeN", text))


# --- the real openai SDK ------------------------------------------------------------------------


def test_sdk_default_response(fake: FakeProvider) -> None:
    with oai(fake).responses.connect() as conn:
        conn.response.create(model="gpt-test", input="hi")
        events = until_completed(conn)
    assert [e.type for e in events] == DEFAULT_TYPES
    assert [e.sequence_number for e in events] == list(range(len(events)))  # type: ignore[union-attr]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from fake"
    completed = events[-1]
    assert completed.type == "response.completed"
    r = completed.response
    assert r.output_text == "Hello from fake"
    assert r.model == "gpt-test"
    assert r.id.startswith("resp_fake")
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (11, 7, 18)
    assert r.usage.input_tokens_details.cached_tokens == 3
    assert r.usage.output_tokens_details.reasoning_tokens == 2

    assert fake.ws_frames == [{"type": "response.create", "model": "gpt-test", "input": "hi"}]
    assert fake.ws_connections_opened == 1
    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("GET", "/v1/responses")
    assert seen.header("authorization") == "Bearer x"
    assert seen.header("upgrade") == "websocket"
    assert seen.header("sec-websocket-key")
    assert (seen.header("user-agent") or "").startswith("OpenAI/Python")
    # The SDK turns permessage-deflate off by default (max_size=None => compression=None).
    assert seen.header("sec-websocket-extensions") is None


def test_sdk_two_responses_on_one_socket(fake: FakeProvider) -> None:
    with oai(fake).responses.connect() as conn:
        conn.response.create(model="gpt-a", input="one")
        first = until_completed(conn)[-1]
        assert first.type == "response.completed"
        conn.response.create(model="gpt-b", input="two", previous_response_id=first.response.id)
        second = until_completed(conn)[-1]
    assert second.type == "response.completed"
    assert second.response.model == "gpt-b"
    assert second.response.previous_response_id == first.response.id
    assert second.response.id != first.response.id
    assert [f["input"] for f in fake.ws_frames] == ["one", "two"]
    assert fake.ws_frames[1]["previous_response_id"] == first.response.id
    assert (fake.connections_opened, fake.ws_connections_opened, len(fake.requests)) == (1, 1, 1)


def test_sdk_codex_path_and_extra_headers(fake: FakeProvider) -> None:
    client = oai(fake, websocket_base_url=fake.url.replace("http", "ws") + "/backend-api/codex")
    with client.responses.connect(extra_headers={"chatgpt-account-id": "acct-1"}) as conn:
        conn.response.create(model="gpt-5-codex", input="hi")
        assert until_completed(conn)[-1].type == "response.completed"
    seen = fake.requests[0]
    assert seen.path == "/backend-api/codex/responses"
    assert seen.header("chatgpt-account-id") == "acct-1"
    assert seen.header("authorization") == "Bearer x"


def test_sdk_compression_when_asked(fake: FakeProvider) -> None:
    with oai(fake).responses.connect(
        websocket_connection_options={"compression": "deflate"}
    ) as conn:
        conn.response.create(model="gpt-test", input="hi")
        events = until_completed(conn)
    assert events[-1].type == "response.completed"
    assert "permessage-deflate" in (fake.requests[0].header("sec-websocket-extensions") or "")


def test_sdk_error_frame(fake: FakeProvider) -> None:
    fake.enqueue_ws(WsReply(events=[ws_error("bad model", code="model_not_found", param="model")]))
    with oai(fake).responses.connect() as conn:
        conn.response.create(model="nope", input="hi")
        (event,) = until_completed(conn)
        # Iterating yields the error as an event; nothing is raised.
        assert event.type == "error"
        assert (event.status, event.error.code, event.error.message) == (
            400,
            "model_not_found",
            "bad model",
        )
        assert event.error.type == "invalid_request_error"
        # The socket stays usable, and dispatch_events() is where the SDK raises.
        fake.enqueue_ws(WsReply(events=[ws_error("again")]))
        conn.response.create(model="nope", input="hi")
        with pytest.raises(openai.OpenAIError, match="WebSocket error"):
            conn.dispatch_events()


def test_sdk_response_failed_event(fake: FakeProvider) -> None:
    failed = {
        "type": "response.failed",
        "sequence_number": 0,
        "response": {
            "id": "resp_x",
            "object": "response",
            "created_at": 0,
            "status": "failed",
            "error": {"code": "server_error", "message": "boom"},
            "model": "gpt-test",
            "output": [],
        },
    }
    fake.enqueue_ws(WsReply(events=[failed]))
    with oai(fake).responses.connect() as conn:
        conn.response.create(model="gpt-test", input="hi")
        (event,) = until_completed(conn)
    assert event.type == "response.failed"
    assert event.response.error is not None and event.response.error.message == "boom"


def test_sdk_rejected_upgrade(fake: FakeProvider) -> None:
    body = {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}
    fake.enqueue_ws(
        WsReply(reject_status=429, reject_body=body, reject_headers=[("retry-after", "7")])
    )
    # The SDK does not wrap handshake failures: websockets' InvalidStatus comes through.
    with pytest.raises(InvalidStatus) as info, oai(fake).responses.connect():
        pass
    response = info.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert json.loads(response.body or b"") == body
    assert "HTTP 429" in str(info.value)
    assert fake.ws_connections_opened == 0
    assert fake.requests[0].header("authorization") == "Bearer x"

    # The refusal was used up: the next upgrade succeeds.
    with oai(fake).responses.connect() as conn:
        conn.response.create(model="gpt-test", input="hi")
        assert until_completed(conn)[-1].type == "response.completed"
    assert fake.ws_connections_opened == 1


def test_sdk_close_after_breaks_socket(fake: FakeProvider) -> None:
    fake.enqueue_ws(WsReply(close_after=3))
    got: list[str] = []
    with oai(fake).responses.connect() as conn:
        conn.response.create(model="gpt-test", input="hi")
        with pytest.raises(ConnectionClosedError) as info:
            got.extend(e.type for e in conn)
    assert got == DEFAULT_TYPES[:3]
    assert info.value.rcvd is None  # no close frame: an abnormal closure (1006)
    # The fake itself is unharmed.
    with oai(fake).responses.connect() as conn:
        conn.response.create(model="gpt-test", input="hi")
        assert until_completed(conn)[-1].type == "response.completed"


def test_sdk_tls_needs_its_own_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    server_ctx, ca_path = tls_context_for(["127.0.0.1"])
    with FakeProvider(tls=server_ctx) as fake:
        # The SDK's http client settings do not apply to the socket: without a context that
        # trusts the CA, the handshake fails...
        with pytest.raises(ssl.SSLCertVerificationError), oai(fake).responses.connect():
            pass
        # ...with one passed through websocket_connection_options it works...
        options: Any = {"ssl": ssl.create_default_context(cafile=ca_path)}
        with oai(fake).responses.connect(websocket_connection_options=options) as conn:
            conn.response.create(model="gpt-test", input="hi")
            assert until_completed(conn)[-1].type == "response.completed"
        # ...and so does SSL_CERT_FILE, read by ssl.create_default_context() at connect time.
        monkeypatch.setenv("SSL_CERT_FILE", ca_path)
        with oai(fake).responses.connect() as conn:
            conn.response.create(model="gpt-test", input="hi")
            assert until_completed(conn)[-1].type == "response.completed"
        assert fake.ws_connections_opened == 2


def test_sdk_honours_proxy_environment(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    # websockets picks the proxy from the environment (ws: WS_PROXY, SOCKS, HTTPS_PROXY,
    # HTTP_PROXY). The fake is no proxy: it answers the CONNECT with 404.
    monkeypatch.setenv("HTTPS_PROXY", fake.url)
    with pytest.raises(InvalidProxyStatus), oai(fake).responses.connect():
        pass
    seen = fake.requests[0]
    assert (seen.method, seen.path) == ("CONNECT", f"127.0.0.1:{fake.port}")
    assert seen.header("authorization") is None  # credentials only go inside the tunnel

    # "proxy": None in websocket_connection_options goes direct.
    options: Any = {"proxy": None}
    with oai(fake).responses.connect(websocket_connection_options=options) as conn:
        conn.response.create(model="gpt-test", input="hi")
        assert until_completed(conn)[-1].type == "response.completed"


# --- the plain websockets client ----------------------------------------------------------------


def test_plain_client_with_deflate_matches_sse(fake: FakeProvider) -> None:
    url = fake.url.replace("http", "ws") + "/backend-api/codex/responses"
    with ws_connect(url, additional_headers={"Authorization": "Bearer k"}, open_timeout=5) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in (ws.response.headers.get("sec-websocket-extensions") or "")
        assert ws.response.headers["x-request-id"].startswith("req_fake")
        ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
        frames = [recv_json(ws) for _ in DEFAULT_TYPES]
    assert [f["type"] for f in frames] == DEFAULT_TYPES
    assert frames[-1]["response"]["usage"]["input_tokens_details"] == {"cached_tokens": 3}

    # The same JSON objects as the SSE transport's data lines.
    with httpx2.Client(base_url=fake.url, timeout=5.0) as c:
        sse = c.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True}).text
    data = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: ")]
    assert [normalised(d) for d in data] == [normalised(f) for f in frames]


def test_plain_client_scripted_events_and_odd_frames(fake: FakeProvider) -> None:
    fake.enqueue_ws(WsReply(events=[{"type": "a"}, '{"type":"raw"}', b"\x00bin"]))
    with ws_connect(fake.url.replace("http", "ws") + "/v1/responses", open_timeout=5) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "m"}))
        assert recv_json(ws) == {"type": "a"}
        assert ws.recv(timeout=5) == '{"type":"raw"}'
        assert ws.recv(timeout=5) == b"\x00bin"
        # Other event types are recorded and not answered; a fragmented message is reassembled.
        ws.send(['{"type":"response.steer",', '"input":"x"}'])
        ws.ping().wait(5)
        # Not JSON: recorded as the raw text and answered with an error event.
        ws.send("not json")
        error = recv_json(ws)
        assert (error["type"], error["error"]["code"]) == ("error", "invalid_json")
        # Binary messages are ignored.
        ws.send(b"\x01\x02")
        ws.ping().wait(5)
    assert fake.ws_frames == [
        {"type": "response.create", "model": "m"},
        {"type": "response.steer", "input": "x"},
        "not json",
    ]


def test_plain_client_gate(fake: FakeProvider) -> None:
    gate = threading.Event()
    fake.enqueue_ws(WsReply(gate=gate))
    with ws_connect(fake.url.replace("http", "ws") + "/v1/responses", open_timeout=5) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "m"}))
        assert recv_json(ws)["type"] == "response.created"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)  # held by the gate
        gate.set()
        assert [recv_json(ws)["type"] for _ in DEFAULT_TYPES[1:]] == DEFAULT_TYPES[1:]
    assert fake.gate_timed_out is False


def test_close_after_zero_and_gate_timeout(fake: FakeProvider) -> None:
    fake.enqueue_ws(WsReply(close_after=0))
    url = fake.url.replace("http", "ws") + "/v1/responses"
    with ws_connect(url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "response.create"}))
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=5)
    fake.enqueue_ws(
        WsReply(events=[{"type": "1"}, {"type": "2"}], gate=threading.Event(), gate_timeout=0.05)
    )
    with ws_connect(url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "response.create"}))
        assert [recv_json(ws)["type"] for _ in range(2)] == ["1", "2"]
    assert fake.gate_timed_out is True


def test_upgrade_edge_cases(fake: FakeProvider) -> None:
    base = fake.url.replace("http", "ws")
    # Upgrade on a path that has no WebSocket endpoint: the ordinary 404.
    with pytest.raises(InvalidStatus) as info, ws_connect(base + "/v1/chat/completions"):
        pass
    assert info.value.response.status_code == 404
    # A GET without the upgrade headers is plain HTTP.
    with httpx2.Client(base_url=fake.url, timeout=5.0) as c:
        assert c.get("/v1/responses").status_code == 404
    # An invalid handshake (no key) is refused by the WebSocket layer.
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(
            b"GET /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
            b"Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    assert fake.ws_connections_opened == 0
    assert len(fake.requests) == 3


def test_queues_are_separate_and_cleared(fake: FakeProvider) -> None:
    fake.enqueue(Reply(status=500, body={"http": True}))
    fake.enqueue_ws(WsReply(events=[{"type": "scripted"}]))
    fake.enqueue_ws(WsReply(reject_status=403))
    url = fake.url.replace("http", "ws") + "/v1/responses"
    with pytest.raises(InvalidStatus) as info, ws_connect(url, open_timeout=5):
        pass  # the reject comes first though it was queued second
    assert info.value.response.status_code == 403
    assert json.loads(info.value.response.body or b"")["error"]["message"]
    with ws_connect(url, open_timeout=5) as ws:  # the HTTP reply is not taken by the upgrade
        ws.send(json.dumps({"type": "response.create"}))
        assert recv_json(ws) == {"type": "scripted"}
    with httpx2.Client(base_url=fake.url, timeout=5.0) as c:
        assert c.post("/v1/responses", json={}).json() == {"http": True}

    fake.enqueue_ws(WsReply(events=[{"type": "dropped"}]))
    fake.enqueue_ws(WsReply(reject_status=500))
    fake.clear()
    assert fake.ws_frames == [] and fake.requests == []
    with ws_connect(url, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "response.create"}))
        assert recv_json(ws)["type"] == "response.created"


def test_record_false_keeps_no_frames() -> None:
    with (
        FakeProvider(record=False) as fake,
        ws_connect(fake.url.replace("http", "ws") + "/v1/responses", open_timeout=5) as ws,
    ):
        ws.send(json.dumps({"type": "response.create"}))
        assert recv_json(ws)["type"] == "response.created"
        assert fake.ws_frames == [] and fake.ws_connections_opened == 1


def test_ws_reply_validation() -> None:
    with pytest.raises(ValueError, match="reject_status"):
        WsReply(reject_status=429, events=[])
    with pytest.raises(ValueError, match="final status"):
        WsReply(reject_status=101)


def test_stop_with_open_socket_is_prompt() -> None:
    fake = FakeProvider().start()
    fake.enqueue_ws(WsReply(gate=threading.Event()))
    ws = ws_connect(fake.url.replace("http", "ws") + "/v1/responses", open_timeout=5)
    try:
        ws.send(json.dumps({"type": "response.create"}))
        assert recv_json(ws)["type"] == "response.created"
        start = time.monotonic()
        fake.stop()
        assert time.monotonic() - start < 2
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=5)
    finally:
        ws.close()
