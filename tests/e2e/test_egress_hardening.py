"""A provider's host name is no way around the egress check.

Provider traffic the bridge decrypts always goes to the operator's configured upstream. But a
CONNECT that names a provider host and is then *not* decrypted (the TLS SNI names another host,
there is no TLS at all) is tunnelled by mitmproxy to the CONNECT target, and a provider host on
an odd port is a plain destination: both must be checked like any other. Here a provider claims
`localhost`, so its host name resolves to loopback, which this bridge refuses to reach
(`egress_allow=()`); `internal` stands for any service on the company network.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from tests.e2e.harness import provider_config

MESSAGES = [{"role": "user", "content": "x"}]


class Sink:
    """A TCP service on loopback that records what each connection sends. It answers a plain
    HTTP request with 200 and says nothing to anything else, so a tunnel that reaches it
    stays open."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            with conn:
                self.received.append(b"")
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    self.received[-1] += chunk
                    if self.received[-1].startswith(b"GET ") and b"\r\n\r\n" in chunk:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


@pytest.fixture(scope="module")
def internal() -> Iterator[Sink]:
    sink = Sink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Sink]:
    """Where the `localhost` provider's configured upstream points."""
    sink = Sink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def strict(fake, make_bridge, gateway):
    extra = f"""
[providers.gateway]
type = "openai"
hosts = ["localhost"]
upstream = "http://localhost:{gateway.port}"
credentials = "byok"
"""
    return make_bridge(provider_config(fake.url, extra=extra, egress_allow=()))


def client_hello(sni: str) -> bytes:
    """The first flight of a TLS client for `sni`, as bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """What the proxy sends before it closes the tunnel; raises TimeoutError when it keeps the
    tunnel open (it reached something that does not answer)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_provider_host_on_another_port_is_checked_like_any_host(strict, internal):
    sock, head = strict.connect("localhost", internal.port)
    sock.close()
    assert head.startswith(b"HTTP/1.1 403"), head
    strict.wait_for_log(rf"refused CONNECT from alice: localhost:{internal.port} resolves to "
                        r"\S+, an internal address")
    assert internal.received == []


@pytest.mark.parametrize("first_bytes", [client_hello("evil.example"), b"SSH-2.0-OpenSSH_9.6\r\n"],
                         ids=["tls-with-another-sni", "not-tls"])
def test_an_undecrypted_tunnel_to_a_provider_host_is_checked(strict, gateway, first_bytes):
    """CONNECT localhost:<the provider's own port> passes at CONNECT time (it may be
    decrypted); sent as a plain tunnel instead, it is checked when mitmproxy opens it."""
    before = len(gateway.received)
    sock, head = strict.connect("localhost", gateway.port)
    assert head.startswith(b"HTTP/1.1 200"), head
    with sock:
        sock.sendall(first_bytes)
        assert read_until_closed(sock) == b""  # refused: the tunnel is closed
    strict.wait_for_log(r"refused a connection for alice .*an internal address")
    assert len(gateway.received) == before  # nothing reached it


def test_an_ip_address_with_a_provider_sni_is_checked(strict, fake):
    sock, head = strict.connect("127.0.0.1", fake.port)
    sock.close()
    assert head.startswith(b"HTTP/1.1 403"), head


def test_decrypted_provider_traffic_still_reaches_its_loopback_upstream(strict, fake,
                                                                        gateway):
    reply = strict.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello from fake"
    # The `localhost` provider's upstream is on loopback too: decrypted, its traffic gets there.
    result = strict.curl("-s", "-H", "Authorization: Bearer sk-own-key-0123456789",
                         f"https://localhost:{gateway.port}/v1/models")
    assert result.stdout == "{}", result.stderr
    assert gateway.received[-1].startswith(b"GET /v1/models HTTP/1.1")
