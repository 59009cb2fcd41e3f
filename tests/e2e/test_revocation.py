"""Revocation reaches open connections, and idle connections are closed.

An actor removed from the actors file (or given a new token) loses its kept-alive tunnels,
plain-HTTP connections and WebSocket sessions within the reload interval, not only its next
CONNECT. Deleting the actors file keeps the current actors, or refuses everyone with
`[auth] on_missing = "deny"`.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.harness import ACTORS_TOML, ALICE_TOKEN, BOB_TOKEN, BridgeProcess, provider_config
from tests.fakeprovider import Reply

CAROL_TOKEN = "carol-proxy-token-4242"
ACTORS = ACTORS_TOML + f'\n[[actors]]\nid = "carol"\ntoken = "{CAROL_TOKEN}"\n'
# Alice has a new token, Bob is gone, Carol is unchanged.
ACTORS_AFTER = f"""
[[actors]]
id = "alice"
token = "alice-new-token-9999"

[[actors]]
id = "carol"
token = "{CAROL_TOKEN}"
"""
# Reading closed or refused connections ends in one of these, depending on timing.
CLOSED = (ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)


class Tunnel(http.client.HTTPConnection):
    """HTTP/1.1 over one already-open socket that is never silently reopened."""

    auto_open = 0

    def __init__(self, sock: socket.socket, host: str) -> None:
        super().__init__(host, timeout=10)
        self.sock = sock

    def status(self, url: str = "/v1/models", headers: dict[str, str] | None = None) -> int:
        self.request("GET", url, headers=headers or {})
        response = self.getresponse()
        response.read()
        return response.status


def basic(token: str, user: str = "dev") -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def open_tunnel(bridge: BridgeProcess, token: str) -> Tunnel:
    sock, head = bridge.connect("api.openai.com", 443, token=token)
    assert head.startswith(b"HTTP/1.1 200"), head
    tls = bridge.ssl_context().wrap_socket(sock, server_hostname="api.openai.com")
    return Tunnel(tls, "api.openai.com")


def open_plain(bridge: BridgeProcess) -> Tunnel:
    return Tunnel(socket.create_connection(("127.0.0.1", bridge.port), timeout=10),
                  f"127.0.0.1:{bridge.port}")


def refused_or_closed(attempt: Callable[[], int], timeout: float = 20.0) -> str:
    """Repeat `attempt` (a request's status) until it is refused (407) or the connection is
    gone; fails when it still passes after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = attempt()
        except CLOSED as e:
            return f"closed: {type(e).__name__}"
        if status == 407:
            return "407"
        assert status == 200, status
        assert time.monotonic() < deadline, "still accepted after the actors changed"
        time.sleep(0.2)


def closed_by_proxy(sock: socket.socket, timeout: float = 20.0) -> bool:
    """True when the proxy closes `sock` (without us sending anything) within `timeout`."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except CLOSED:
        return True


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "actors.toml").write_text(ACTORS)
    return tmp_path


def start(fake, workdir, auth: str = "") -> BridgeProcess:
    config = provider_config(fake.url).replace(
        'actors_file = "actors.toml"\n', f'actors_file = "actors.toml"\n{auth}')
    return BridgeProcess(workdir, config).start()


@pytest.fixture
def bridge(fake, workdir):
    bridge = start(fake, workdir)
    yield bridge
    bridge.stop()


def test_removed_or_changed_tokens_lose_their_open_connections(bridge, fake):
    bob, alice, carol = (open_tunnel(bridge, t) for t in (BOB_TOKEN, ALICE_TOKEN, CAROL_TOKEN))
    plain = open_plain(bridge)
    plain_url = f"http://127.0.0.1:{fake.port}/v1/models"
    assert [t.status() for t in (bob, alice, carol)] == [200, 200, 200]
    assert plain.status(plain_url, {"Proxy-Authorization": basic(BOB_TOKEN)}) == 200

    (bridge.workdir / "actors.toml").write_text(ACTORS_AFTER)
    bridge.wait_for_log("configuration reloaded", timeout=15)
    refused_or_closed(bob.status)
    refused_or_closed(alice.status)
    refused_or_closed(lambda: plain.status(plain_url,
                                           {"Proxy-Authorization": basic(BOB_TOKEN)}))
    assert carol.status() == 200  # unchanged credentials keep their tunnel
    assert fake.requests[-1].header("X-AI-Bridge-Actor-ID") == "carol"
    bridge.wait_for_log(r"open connection\(s\) of alice, bob lost their proxy credentials")
    # New tunnels follow the new file.
    for token, status in ((BOB_TOKEN, b"407"), (ALICE_TOKEN, b"407"),
                          ("alice-new-token-9999", b"200")):
        sock, head = bridge.connect("api.openai.com", 443, token=token)
        sock.close()
        assert head.startswith(b"HTTP/1.1 " + status), (token, head)
    assert BOB_TOKEN not in bridge.log() and ALICE_TOKEN not in bridge.log()


def test_an_idle_tunnel_of_a_removed_actor_is_closed_without_a_request(bridge):
    bob = open_tunnel(bridge, BOB_TOKEN)
    assert bob.status() == 200
    (bridge.workdir / "actors.toml").write_text(ACTORS_AFTER)
    assert closed_by_proxy(bob.sock)


@pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_a_websocket_session_of_a_removed_actor_is_closed(bridge, fake):
    import openai

    client = openai.OpenAI(api_key="sk-user-placeholder", max_retries=0,
                           http_client=openai.DefaultHttpxClient(proxy=bridge.proxy_url(BOB_TOKEN),
                                                                 verify=bridge.ssl_context()))
    with client.responses.connect(websocket_connection_options={
            "ssl": bridge.ssl_context(), "proxy": bridge.proxy_url(BOB_TOKEN),
            "open_timeout": 10}) as conn:
        conn.response.create(model="gpt-5-codex", input="first")
        assert any(e.type == "response.completed" for e in _until_done(conn))
        (bridge.workdir / "actors.toml").write_text(ACTORS_AFTER)
        bridge.wait_for_log("lost their proxy credentials", timeout=15)
        deadline = time.monotonic() + 20
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:
                conn.response.create(model="gpt-5-codex", input="again")
                _until_done(conn)
                time.sleep(0.2)


def _until_done(conn) -> list:
    events = []
    for event in conn:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "error"):
            break
    return events


def test_deleted_actors_file_keeps_the_current_actors_by_default(bridge):
    alice = open_tunnel(bridge, ALICE_TOKEN)
    (bridge.workdir / "actors.toml").unlink()
    bridge.wait_for_log(r"reload rejected, keeping the current settings: cannot read actors file")
    assert alice.status() == 200
    sock, head = bridge.connect("api.openai.com", 443, token=ALICE_TOKEN)
    sock.close()
    assert head.startswith(b"HTTP/1.1 200"), head


def test_deleted_actors_file_refuses_everyone_with_on_missing_deny(fake, workdir):
    bridge = start(fake, workdir, 'on_missing = "deny"\n')
    try:
        alice = open_tunnel(bridge, ALICE_TOKEN)
        assert alice.status() == 200
        (workdir / "actors.toml").unlink()
        refused_or_closed(alice.status)
        bridge.wait_for_log(r'actors file .* is missing and \[auth\] on_missing = "deny"')
        sock, head = bridge.connect("api.openai.com", 443, token=ALICE_TOKEN)
        sock.close()
        assert head.startswith(b"HTTP/1.1 407"), head
        (workdir / "actors.toml").write_text(ACTORS)  # back: logins work again

        def alice_connects() -> bytes:
            sock, head = bridge.connect("api.openai.com", 443, token=ALICE_TOKEN)
            sock.close()
            return head
        deadline = time.monotonic() + 15
        while not (head := alice_connects()).startswith(b"HTTP/1.1 200"):
            assert time.monotonic() < deadline, head
            time.sleep(0.2)
    finally:
        bridge.stop()


def test_idle_connections_are_closed_but_a_slow_answer_is_not(fake, workdir):
    bridge = start(fake, workdir, "idle_timeout = 1\n")
    try:
        idle = open_tunnel(bridge, ALICE_TOKEN)
        assert idle.status() == 200
        assert closed_by_proxy(idle.sock)
        bridge.wait_for_log(r"closing the connection from 127\.0\.0\.1: idle for over 1s")
        # A request the upstream takes longer than the idle timeout to answer is not idle.
        fake.enqueue(Reply(delay=3, body={"object": "list", "data": []}), path="/v1/models")
        busy = open_tunnel(bridge, ALICE_TOKEN)
        assert busy.status() == 200
    finally:
        bridge.stop()
