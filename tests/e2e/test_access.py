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
