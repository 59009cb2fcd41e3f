"""The bridge retries a provider upstream that refused a connection, so clients need not.

The provider's upstream is a loopback port with nothing listening; a relay to the fake provider
opens on it while a request is waiting. The client makes no retries of its own (max_retries=0),
so a completed answer proves the bridge waited and connected for it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import openai
import pytest

from tests.e2e.harness import provider_config
from tests.fakeprovider import TEXT

pytestmark = pytest.mark.timeout(120)
MESSAGES = [{"role": "user", "content": "hi"}]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """A TCP relay from 127.0.0.1:`port` to the fake provider, started on demand."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.server: socket.socket | None = None
        self.stopping = False

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.2)
        self.server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.server is not None
        while not self.stopping:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopping = True
        if self.server is not None:
            self.server.close()


def test_a_stream_waits_for_an_upstream_that_comes_back(fake, make_bridge):
    port = closed_port()
    relay = Relay(port, fake.port)
    bridge = make_bridge(provider_config(f"http://127.0.0.1:{port}",
                                         extra="[resilience]\nconnect_retry_window = 20\n"))
    client = bridge.openai()
    # The first request meets the refusal: nothing tells the bridge yet that this upstream is
    # down, so the client gets a 502 it may retry.
    with pytest.raises(openai.InternalServerError) as first:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "unreachable: connection refused" in first.value.message
    assert first.value.response.headers.get("x-should-retry") != "false"
    # The next one, a stream, is held by the bridge until the upstream answers.
    threading.Timer(1.5, relay.open).start()
    try:
        started = time.monotonic()
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        waited = time.monotonic() - started
    finally:
        relay.close()
    assert text == TEXT
    assert waited >= 1.0  # causality: it completed only after the relay opened
    assert len([r for r in fake.requests if r.path == "/v1/chat/completions"]) == 1


def test_an_upstream_that_stays_down_is_reported_once_the_bridge_gave_up(make_bridge):
    bridge = make_bridge(provider_config(f"http://127.0.0.1:{closed_port()}",
                                         extra="[resilience]\nconnect_retry_window = 2\n"))
    client = bridge.anthropic()
    with pytest.raises(anthropic_error()):
        client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES)
    with pytest.raises(anthropic_error()) as info:
        client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES)
    response = info.value.response
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    body = response.json()
    assert body["type"] == "error"  # Anthropic's envelope on an Anthropic route
    message = body["error"]["message"]
    assert message.startswith("upstream anthropic (api.anthropic.com) unreachable")
    assert "the bridge retried for 2 s" in message
    assert "127.0.0.1" not in message
    # Given up: the next request is answered after one quick attempt, without a new window.
    started = time.monotonic()
    with pytest.raises(anthropic_error()) as again:
        client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES)
    assert "the bridge retried" in again.value.response.json()["error"]["message"]
    print(f"answer after giving up: {time.monotonic() - started:.2f} s")


def anthropic_error() -> type[Exception]:
    import anthropic

    return anthropic.InternalServerError
