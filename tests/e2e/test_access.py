"""Who may use the proxy, and what it decrypts."""

from __future__ import annotations

import contextlib
import ssl

import httpx2
import openai
import pytest

from tests.e2e.harness import BOB_TOKEN, OPENAI_KEY, provider_config
from tests.fakeprovider import FakeProvider, tls_context_for


@pytest.fixture(scope="module")
def tls_server():
    """A non-provider HTTPS server with its own CA, standing in for github.com & co."""
    server_ctx, ca_path = tls_context_for(["localhost", "127.0.0.1"])
    with FakeProvider(tls=server_ctx) as server:
        yield server, ca_path


def test_non_provider_host_is_tunnelled_with_its_own_certificate(bridge, tls_server):
    server, ca_path = tls_server
    sock, head = bridge.connect("localhost", server.port)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = ssl.create_default_context(cafile=ca_path)  # trusts only the server's own CA
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        issuer = dict(x[0] for x in tls.getpeercert()["issuer"])
        tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert "mitmproxy" not in str(issuer)
    assert reply.startswith(b"HTTP/1.1 200")
    # mitmproxy never saw the HTTP exchange: no key, no actor header, no flow.
    seen = server.requests[-1]
    assert seen.header("x-ai-bridge-actor-id") is None
    assert f"localhost:{server.port}/v1/models" not in bridge.log()  # no decrypted flow


def test_tunnel_needs_proxy_credentials(bridge, tls_server):
    server, _ = tls_server
    for token in (None, "wrong-token"):
        sock, head = bridge.connect("localhost", server.port, token=token)
        sock.close()
        assert head.startswith(b"HTTP/1.1 407"), head
        assert b'Proxy-Authenticate: Basic realm="AI Bridge"' in head


def test_provider_host_needs_proxy_credentials(bridge, fake):
    for token in (None, "wrong-token"):
        sock, head = bridge.connect("api.openai.com", 443, token=token)
        sock.close()
        assert head.startswith(b"HTTP/1.1 407"), head
    with pytest.raises(openai.APIConnectionError):
        bridge.openai(token="wrong-token").models.list()
    assert fake.requests == []


def test_hashed_token_authenticates_its_actor(bridge, fake):
    bridge.openai(token=BOB_TOKEN).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    seen = fake.requests[-1]
    assert seen.header("X-AI-Bridge-Actor-ID") == "bob"
    assert seen.header("X-AI-Bridge-Actor-Metadata-Username") == "bob"


def test_plain_http_request_that_claims_a_provider_host_gets_no_key(bridge, fake):
    """A plaintext request with `Host: api.openai.com` is not decrypted traffic: no key."""
    result = bridge.curl("-s", "-o", "/dev/null", "-w", "%{http_code}",
                         f"http://127.0.0.1:{fake.port}/v1/models",
                         "-H", "Host: api.openai.com")
    assert result.stdout == "200"
    seen = fake.requests[-1]
    assert OPENAI_KEY not in str(seen.headers)
    assert seen.header("x-ai-bridge-actor-id") is None


def test_plain_http_proxy_request_needs_credentials(bridge, fake):
    result = bridge.curl("-s", "-o", "/dev/null", "-w", "%{http_code}",
                         f"http://127.0.0.1:{fake.port}/v1/models", token=None)
    assert result.stdout == "407"


def test_without_actors_file_no_auth_and_local_user(fake, make_bridge):
    import getpass

    bridge = make_bridge(provider_config(fake.url, actors=False), actors=None)
    assert "proxy authentication is off" in bridge.log()
    client = bridge.openai(token=None)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert fake.requests[-1].header("X-AI-Bridge-Actor-ID") == getpass.getuser()
    assert fake.requests[-1].header("Authorization") == f"Bearer {OPENAI_KEY}"


def test_bad_config_refuses_to_start(tmp_path):
    from tests.e2e.harness import BridgeProcess

    bridge = BridgeProcess(tmp_path, '[providers.openai]\ncredentials = "centralised"\n')
    with contextlib.suppress(RuntimeError):  # it may exit before its listening line
        bridge.start()
    assert bridge.proc is not None and bridge.proc.wait(15) != 0
    bridge.stop()
    assert "providers.openai.credentials: Input should be 'centralized', 'byok' or 'auto'" \
        in bridge.log()


def test_httpx_client_through_tunnel_sees_real_server(bridge, tls_server):
    server, ca_path = tls_server
    ctx = ssl.create_default_context(cafile=ca_path)
    with httpx2.Client(proxy=bridge.proxy_url(), verify=ctx) as client:
        assert client.get(f"https://localhost:{server.port}/v1/models").status_code == 200


def test_starts_from_the_project_root_with_a_relative_script_path(fake, make_bridge):
    from tests.e2e.harness import ROOT

    bridge = make_bridge(provider_config(fake.url), script="addon/bridge.py", cwd=ROOT)
    bridge.openai().chat.completions.create(model="gpt-4o",
                                            messages=[{"role": "user", "content": "x"}])
    assert fake.requests[-1].header("Authorization") == f"Bearer {OPENAI_KEY}"


def test_clients_cannot_reach_internal_addresses_but_providers_still_work(fake, make_bridge,
                                                                          tls_server):
    server, _ = tls_server
    bridge = make_bridge(provider_config(fake.url, egress_allow=()))
    for host in ("127.0.0.1", "localhost", f"{fake.port}.invalid"):
        sock, head = bridge.connect(host, server.port)
        sock.close()
        assert head.startswith(b"HTTP/1.1 403"), (host, head)
    # The provider's upstream (here on loopback, set by the operator) is not a CONNECT target:
    sock, head = bridge.connect("127.0.0.1", fake.port)
    sock.close()
    assert head.startswith(b"HTTP/1.1 403")
    result = bridge.curl("-s", "-o", "/dev/null", "-w", "%{http_code}",
                         f"http://127.0.0.1:{fake.port}/v1/models")
    assert result.stdout == "403"
    # ... but provider traffic still goes there.
    reply = bridge.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "Hello from fake"
    assert "internal address" in bridge.log()


# -- failed logins, slow and idle clients, connections per address ------------------------------

def connect_as(bridge, user: str, token: str, host: str = "api.openai.com") -> bytes:
    """A raw CONNECT as `user`:`token`; returns the status line."""
    import base64
    import socket

    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n"
                     f"Proxy-Authorization: Basic {basic}\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
    return data.partition(b"\r\n")[0]


def with_auth(fake, settings: str) -> str:
    return provider_config(fake.url).replace('actors_file = "actors.toml"\n',
                                             f'actors_file = "actors.toml"\n{settings}')


def test_failed_logins_lock_out_one_user_name_not_the_whole_address(fake, make_bridge):
    from tests.e2e.harness import ALICE_TOKEN

    bridge = make_bridge(with_auth(fake, "max_failures_per_user = 5\n"
                                         "max_failures_per_address = 12\n"))
    for i in range(5):
        assert connect_as(bridge, "mallory", f"guess-{i}").startswith(b"HTTP/1.1 407")
    # Mallory's name is locked out from this address, even with a right token ...
    assert connect_as(bridge, "mallory", ALICE_TOKEN).startswith(b"HTTP/1.1 407")
    bridge.wait_for_log(r"127\.0\.0\.1 as user #\w+ failed proxy authentication 5 times")
    # ... but the next person behind the same address is not.
    assert connect_as(bridge, "alice", ALICE_TOKEN).startswith(b"HTTP/1.1 200")
    # A correct login does not reset another name's count.
    assert connect_as(bridge, "mallory", ALICE_TOKEN).startswith(b"HTTP/1.1 407")
    # Guessing under ever new names is bounded per address; names that logged in before from
    # this address keep working.
    for i in range(7):
        assert connect_as(bridge, f"name-{i}", "guess").startswith(b"HTTP/1.1 407")
    assert connect_as(bridge, "newcomer", ALICE_TOKEN).startswith(b"HTTP/1.1 407")
    assert connect_as(bridge, "alice", ALICE_TOKEN).startswith(b"HTTP/1.1 200")
    bridge.wait_for_log(r"127\.0\.0\.1 failed proxy authentication 12 times across user names")
    assert "mallory" not in bridge.log() and "guess-" not in bridge.log()


def test_a_client_that_never_authenticates_is_closed(fake, make_bridge):
    import socket
    import time

    from tests.e2e.harness import ALICE_TOKEN

    bridge = make_bridge(with_auth(fake, "login_timeout = 1\n"))
    sock, head = bridge.connect("api.openai.com", 443, token=ALICE_TOKEN)
    assert head.startswith(b"HTTP/1.1 200"), head
    authenticated = bridge.ssl_context().wrap_socket(sock, server_hostname="api.openai.com")
    silent = socket.create_connection(("127.0.0.1", bridge.port), timeout=20)
    slow = socket.create_connection(("127.0.0.1", bridge.port), timeout=0.2)
    refused, head = bridge.connect("api.openai.com", 443, token="wrong-token")
    assert head.startswith(b"HTTP/1.1 407"), head
    # `slow` sends a request head one byte at a time and never finishes it.
    trickle = b"CONNECT api.openai.com:443 HTTP/1.1\r\nX-Slow: " + b"a" * 1000
    deadline, sent, slow_closed = time.monotonic() + 20, 0, False
    while not slow_closed and time.monotonic() < deadline:
        try:
            slow.sendall(trickle[sent:sent + 1])
            sent += 1
            slow_closed = slow.recv(1) == b""
        except TimeoutError:
            continue
        except OSError:
            slow_closed = True
    assert slow_closed, "a client trickling its request head was never closed"
    assert silent.recv(1) == b""
    refused.settimeout(20)
    while refused.recv(4096):  # the rest of the 407's body, then the close
        pass
    bridge.wait_for_log(r"closing the connection from 127\.0\.0\.1: no request with valid "
                        r"proxy credentials within 1s")
    # The authenticated tunnel outlived the login timeout.
    authenticated.sendall(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
    assert authenticated.recv(4096).startswith(b"HTTP/1.1 200")
    for s in (authenticated, silent, slow, refused):
        s.close()


def raw_connect(bridge) -> bytes:
    """A CONNECT with valid credentials; the proxy's answer head, or b"" when it closed."""
    try:
        sock, head = bridge.connect("api.openai.com", 443)
    except ConnectionError:
        return b""
    sock.close()
    return head


def test_connections_per_address_are_capped(fake, make_bridge):
    import time

    bridge = make_bridge(with_auth(fake, "max_connections_per_address = 3\n"))
    held = []
    for _ in range(3):
        sock, head = bridge.connect("api.openai.com", 443)
        assert head.startswith(b"HTTP/1.1 200"), head  # accepted and counted
        held.append(sock)
    assert raw_connect(bridge) == b""  # closed before any answer
    bridge.wait_for_log(r"refused a connection from 127\.0\.0\.1: 3 connections from that "
                        r"address are open \(\[auth\] max_connections_per_address\)")
    held.pop().close()
    deadline = time.monotonic() + 15
    while not (head := raw_connect(bridge)).startswith(b"HTTP/1.1 200"):
        assert time.monotonic() < deadline, head  # the freed slot is taken again once the
        time.sleep(0.1)  # proxy has seen the close
    for sock in held:
        sock.close()
