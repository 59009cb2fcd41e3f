"""No credential in any saved flow, whatever way the flow ends: a response, an upstream error, a
refusal by the bridge or by mitmproxy, a 407, a flow still in flight when mitmdump stops, and
an upstream error body that echoes the key. Each test runs a real mitmdump writing flows with
`save_stream_file` (what `-w` sets), reads the file back with mitmproxy's `io.FlowReader` and
greps its raw bytes and the whole log for every secret it sent."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest
from mitmproxy import http, io

from tests.e2e.harness import (
    ALICE_TOKEN,
    ANTHROPIC_KEY,
    OPENAI_KEY,
    BridgeProcess,
    provider_config,
)
from tests.fakeprovider import FakeProvider, Reply

IO_TIMEOUT = 15.0
CHAT_BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}'
MESSAGES_BODY = b'{"model":"claude-sonnet-5","max_tokens":8,"messages":[]}'
# Credentials a client may send on its own; each test sends one per request, so a leak names
# the path that leaked it.
OWN = {name: f"sk-own-{name}-0123456789abcdefXYZ" for name in (
    "unknown-route", "bad-json", "media-type", "declared-size", "nul-header", "bad-name",
    "goog", "azure", "query", "oauth", "in-flight", "echo", "wrong-proxy", "health", "abort",
    "timeout")}


# -- reading what was saved ----------------------------------------------------------------------


def saved_flows(bridge: BridgeProcess) -> list[http.HTTPFlow]:
    with bridge.flows_path.open("rb") as f:
        return [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow)]


def forms(secret: str) -> list[bytes]:
    """The secret, and the forms a client sends it in (Basic proxy credentials)."""
    return [secret.encode(), base64.b64encode(f"dev:{secret}".encode()),
            base64.b64encode(f"dev:{secret}".encode()).rstrip(b"=")]


def assert_nowhere(bridge: BridgeProcess, *secrets: str) -> None:
    raw = bridge.flows_path.read_bytes()
    log = bridge.log().encode()
    for secret in secrets:
        for form in forms(secret):
            assert form not in raw, f"{secret!r} in the saved flows"
            assert form not in log, f"{secret!r} in the log"
    for flow in saved_flows(bridge):  # parsed too: headers, URL, bodies, metadata
        text = repr(flow.get_state())
        for secret in secrets:
            assert secret not in text, f"{secret!r} in flow {flow.request.path}"


def by_path(flows: list[http.HTTPFlow], path: str) -> http.HTTPFlow:
    matches = [f for f in flows if f.request.path.startswith(path)]
    assert len(matches) == 1, [f.request.path for f in flows]
    return matches[0]


# -- raw HTTP over the bridge --------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None
    body: bytes


def open_tls(bridge: BridgeProcess, host: str) -> ssl.SSLSocket:
    sock, head = bridge.connect(host, 443, token=ALICE_TOKEN)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = bridge.ssl_context()
    ctx.set_alpn_protocols(["http/1.1"])
    tls = ctx.wrap_socket(sock, server_hostname=host)
    tls.settimeout(IO_TIMEOUT)
    return tls


def send_raw(bridge: BridgeProcess, host: str, head: list[bytes], body: bytes = b"") -> Answer:
    """One request with `Connection: close`; the answer is read to EOF."""
    payload = b"\r\n".join([*head, b"Host: " + host.encode(), b"Connection: close"])
    payload += b"\r\n\r\n" + body
    data = b""
    with open_tls(bridge, host) as tls:
        tls.sendall(payload)
        while True:
            try:
                chunk = tls.recv(1 << 16)
            except (ConnectionError, ssl.SSLError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ")[1]) if head_bytes.startswith(b"HTTP/1.1 ") else None
    return Answer(status, rest)


def wait_until(what: str, check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- tests ---------------------------------------------------------------------------------------


def test_refused_requests_keep_no_client_credential(fake: FakeProvider, make_bridge) -> None:
    """Every refusal, by the bridge or by mitmproxy, before anything went upstream."""
    bridge = make_bridge("max_body_bytes = 4096\n" + provider_config(fake.url),
                         args=["--set", "flow_detail=4"])
    post = b"POST /v1/chat/completions HTTP/1.1"
    json_type = b"Content-Type: application/json"

    def length(body: bytes) -> bytes:
        return b"Content-Length: %d" % len(body)

    cases = [
        # (host, head, body, status)
        ("api.openai.com", [b"GET /nowhere HTTP/1.1",
                            b"Authorization: Bearer " + OWN["unknown-route"].encode()], b"", 404),
        ("api.openai.com", [post, json_type, length(b"{oops"),
                            b"Authorization: Bearer " + OWN["bad-json"].encode()], b"{oops", 400),
        ("api.anthropic.com", [b"POST /v1/messages HTTP/1.1", b"Content-Type: text/plain",
                               length(MESSAGES_BODY), b"x-api-key: " + OWN["media-type"].encode()],
         MESSAGES_BODY, 415),
        ("api.openai.com", [post, json_type, length(b"x" * 5000),
                            b"Authorization: Bearer " + OWN["declared-size"].encode()],
         b"x" * 5000, 413),
        ("api.anthropic.com", [b"POST /v1/messages HTTP/1.1", json_type, length(MESSAGES_BODY),
                               b"X-Trace: a\x00b", b"x-api-key: " + OWN["nul-header"].encode()],
         MESSAGES_BODY, 400),
        # mitmproxy itself refuses a header name that is not a token (request smuggling guard).
        ("api.openai.com", [post, json_type, length(CHAT_BODY), b"X(y): z",
                            b"Authorization: Bearer " + OWN["bad-name"].encode()], CHAT_BODY, 400),
        ("api.openai.com", [b"GET /elsewhere HTTP/1.1",
                            b"x-goog-api-key: " + OWN["goog"].encode()], b"", 404),
        ("api.openai.com", [b"GET /also-elsewhere HTTP/1.1",
                            b"api-key: " + OWN["azure"].encode()], b"", 404),
        ("api.openai.com", [b"GET /gemini?alt=sse&key=" + OWN["query"].encode() + b" HTTP/1.1"],
         b"", 404),
        ("api.anthropic.com", [b"GET /oauth-nowhere HTTP/1.1",
                               b"Authorization: Bearer " + OWN["oauth"].encode()], b"", 404),
    ]
    for host, head, body, status in cases:
        answer = send_raw(bridge, host, head, body)
        assert answer.status == status, (head, answer)
    assert fake.requests == []  # all refused before the provider
    bridge.stop()

    flows = saved_flows(bridge)
    assert len(flows) == len(cases)  # all of them were saved: the test is not vacuous
    assert_nowhere(bridge, *OWN.values(), OPENAI_KEY, ANTHROPIC_KEY)
    # What is kept instead: the masked hint, scheme included.
    assert by_path(flows, "/nowhere").request.headers["Authorization"] == "Bearer sk-o...fXYZ"
    assert by_path(flows, "/elsewhere").request.headers["x-goog-api-key"] == "sk-o...fXYZ"
    assert by_path(flows, "/gemini").request.query["key"] == "sk-o...fXYZ"
    assert by_path(flows, "/gemini").request.query["alt"] == "sse"


def test_proxy_credentials_of_refused_plain_http_requests(fake: FakeProvider,
                                                          make_bridge) -> None:
    """A 407 on a plain-HTTP proxy request, the health probe (answered before proxy
    authentication), and a CONNECT with wrong credentials."""
    bridge = make_bridge(provider_config(fake.url), args=["--set", "flow_detail=4"])
    wrong = bridge.curl("http://example.invalid/", token=OWN["wrong-proxy"])
    assert wrong.stdout.startswith("Proxy Authentication Required"), wrong
    health = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--proxy", f"http://127.0.0.1:{bridge.port}",
         "--proxy-user", f"dev:{OWN['health']}", "http://aibridge.health/healthz"],
        capture_output=True, text=True, timeout=15)
    assert json.loads(health.stdout)["ready"] is True
    sock, head = bridge.connect("api.openai.com", 443, token=OWN["wrong-proxy"] + "-connect")
    sock.close()
    assert head.startswith(b"HTTP/1.1 407"), head
    bridge.stop()

    flows = saved_flows(bridge)
    # (mitmproxy's save addon does not write CONNECT flows; the grep below would catch it.)
    assert {f.request.host for f in flows} >= {"example.invalid", "aibridge.health"}
    assert_nowhere(bridge, OWN["wrong-proxy"], OWN["wrong-proxy"] + "-connect", OWN["health"],
                   ALICE_TOKEN)


def test_flows_in_flight_at_shutdown_hold_no_key(fake: FakeProvider, make_bridge) -> None:
    """A request still waiting for its answer when mitmdump stops (after shutdown_grace) is
    written by the save addon when it shuts down: with the hint, never the key it was sent
    with (a central key, or the caller's own)."""
    bridge = make_bridge("shutdown_grace = 0.2\n" + provider_config(fake.url))
    fake.enqueue(Reply(never_respond=True), "/v1/chat/completions")
    fake.enqueue(Reply(never_respond=True), "/v1/messages")
    curl = ["curl", "-sS", "--max-time", "60", "--proxy", f"http://127.0.0.1:{bridge.port}",
            "--proxy-user", f"dev:{ALICE_TOKEN}", "--cacert", bridge.ca,
            "-H", "content-type: application/json"]
    clients = [
        subprocess.Popen([*curl, "-H", "authorization: Bearer sk-user-placeholder",
                          "-d", CHAT_BODY.decode(), "https://api.openai.com/v1/chat/completions"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([*curl, "-H", f"x-api-key: {OWN['in-flight']}",
                          "-H", "anthropic-version: 2023-06-01",
                          "-d", MESSAGES_BODY.decode(), "https://api.anthropic.com/v1/messages"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_until("both requests at the provider", lambda: len(fake.requests) == 2)
        sent = {r.path: r.header("authorization") or r.header("x-api-key")
                for r in fake.requests}
        assert sent == {"/v1/chat/completions": f"Bearer {OPENAI_KEY}",
                        "/v1/messages": OWN["in-flight"]}
        bridge.stop()
    finally:
        for client in clients:
            client.kill()
            client.wait(10)

    flows = saved_flows(bridge)
    chat = by_path(flows, "/v1/chat/completions")
    assert chat.response is None  # it was in flight
    assert chat.request.headers["authorization"] == "Bearer sk-c...cdef"
    assert by_path(flows, "/v1/messages").request.headers["x-api-key"] == "sk-o...fXYZ"
    assert_nowhere(bridge, OPENAI_KEY, ANTHROPIC_KEY, OWN["in-flight"], ALICE_TOKEN)


def echo(key: str, *, anthropic: bool = False, status: int = 401) -> Reply:
    """What some providers do: name the rejected key in the error message."""
    message = f"Incorrect API key provided: {key}. You can find your API key in the console."
    if anthropic:
        return Reply(status=status, body={"type": "error", "error": {
            "type": "authentication_error", "message": message}})
    return Reply(status=status, body={"error": {"message": message, "type": "invalid_request_error",
                                                "param": None, "code": "invalid_api_key"}})


OTHER_KEY = "sk-central-openai-second-key-9876543210"


def test_upstream_errors_that_echo_the_key_are_scrubbed(fake: FakeProvider, make_bridge) -> None:
    """Before the client, the flow and the log see it: the caller's own key, a central key that
    does not fail over (400), and the key a failover re-send used."""
    bridge = make_bridge(provider_config(fake.url), args=["--set", "flow_detail=4"],
                         env={"AIBRIDGE_OPENAI_KEYS": f"{OPENAI_KEY},{OTHER_KEY}"})
    bodies = []
    fake.enqueue(echo(OWN["echo"], anthropic=True))
    answer = send_raw(bridge, "api.anthropic.com", [
        b"POST /v1/messages HTTP/1.1", b"Content-Type: application/json",
        b"Content-Length: %d" % len(MESSAGES_BODY), b"x-api-key: " + OWN["echo"].encode()],
        MESSAGES_BODY)
    assert answer.status == 401
    bodies.append(answer.body)
    fake.enqueue(echo(OPENAI_KEY, status=400))
    answer = send_raw(bridge, "api.openai.com", [
        b"POST /v1/chat/completions HTTP/1.1", b"Content-Type: application/json",
        b"Content-Length: %d" % len(CHAT_BODY)], CHAT_BODY)
    assert answer.status == 400
    bodies.append(answer.body)
    # The first central key is rate-limited; the re-send with the second gets the echo.
    fake.enqueue(Reply(status=429, headers=[("retry-after", "30")], body={"error": {
        "message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}))
    fake.enqueue(echo(OTHER_KEY, status=400))
    answer = send_raw(bridge, "api.openai.com", [
        b"POST /v1/chat/completions HTTP/1.1", b"Content-Type: application/json",
        b"Content-Length: %d" % len(CHAT_BODY)], CHAT_BODY)
    assert answer.status == 400
    bodies.append(answer.body)
    sent = [r.header("x-api-key") or r.header("authorization") for r in fake.requests]
    assert sent == [OWN["echo"], f"Bearer {OPENAI_KEY}", f"Bearer {OPENAI_KEY}",
                    f"Bearer {OTHER_KEY}"]
    bridge.stop()

    for body, hint in zip(bodies, ["sk-o...fXYZ", "sk-c...cdef", "sk-c...3210"], strict=True):
        for secret in (OWN["echo"], OPENAI_KEY, OTHER_KEY):
            assert secret.encode() not in body, body
        assert hint in json.loads(body)["error"]["message"], body
    assert_nowhere(bridge, OWN["echo"], OPENAI_KEY, OTHER_KEY, ANTHROPIC_KEY)
    assert len(saved_flows(bridge)) == 3


def test_failed_exchanges_keep_no_key(fake: FakeProvider, make_bridge) -> None:
    """The error paths: the provider hangs up without an answer, breaks a stream after its
    headers, or outlives the upstream timeout (the bridge closes the connection)."""
    bridge = make_bridge(provider_config(fake.url, extra="[resilience]\nupstream_timeout = 1\n"),
                         args=["--set", "flow_detail=4"])
    messages = [b"POST /v1/messages HTTP/1.1", b"Content-Type: application/json",
                b"Content-Length: %d" % len(MESSAGES_BODY), b"anthropic-version: 2023-06-01"]
    fake.enqueue(Reply(abort=True))
    answer = send_raw(bridge, "api.anthropic.com",
                      [*messages, b"x-api-key: " + OWN["abort"].encode()], MESSAGES_BODY)
    assert answer.status == 502
    fake.enqueue(Reply(never_respond=True))
    answer = send_raw(bridge, "api.anthropic.com",
                      [*messages, b"x-api-key: " + OWN["timeout"].encode()], MESSAGES_BODY)
    assert answer.status == 504
    stream = CHAT_BODY[:-1] + b',"stream":true}'
    fake.enqueue(Reply(events=['data: {"id":"c","object":"chat.completion.chunk","choices":[]}'
                               '\n\n'] * 3, close_after_events=1))
    answer = send_raw(bridge, "api.openai.com", [
        b"POST /v1/chat/completions HTTP/1.1", b"Content-Type: application/json",
        b"Content-Length: %d" % len(stream)], stream)
    assert answer.status == 200
    sent = [r.header("x-api-key") or r.header("authorization") for r in fake.requests]
    assert sent == [OWN["abort"], OWN["timeout"], f"Bearer {OPENAI_KEY}"]
    bridge.stop()

    flows = saved_flows(bridge)
    assert len(flows) == 3 and all(f.error is not None for f in flows)
    assert_nowhere(bridge, OWN["abort"], OWN["timeout"], OPENAI_KEY, ANTHROPIC_KEY)



# -- mitmweb's live view -------------------------------------------------------------------------


class Updates:
    """mitmweb's `/updates` WebSocket, as its browser page reads it: every flow as it is added
    (request headers) and updated (after each hook), collected by a thread until closed."""

    def __init__(self, mitmweb) -> None:
        self.url = f"ws://127.0.0.1:{mitmweb.web_port}/updates"
        self.auth = {"Authorization": f"Bearer {mitmweb.password}"}
        self.messages: list[str] = []
        self.ws = None
        self.failed: BaseException | None = None
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.opened.wait(IO_TIMEOUT) and self.failed is None, self.failed

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        try:
            with connect(self.url, additional_headers=self.auth, open_timeout=IO_TIMEOUT,
                         proxy=None) as ws:
                self.ws = ws
                self.opened.set()
                for message in ws:
                    self.messages.append(message if isinstance(message, str)
                                         else message.decode())
        except ConnectionClosed:
            pass
        except Exception as e:  # the test reads it: never a silent empty list
            self.failed = e
        finally:
            self.opened.set()

    def flows(self, kind: str) -> list[dict]:
        found = []
        for text in list(self.messages):
            message = json.loads(text)
            if message.get("type") == kind:
                found.append(message["payload"]["flow"])
        return found

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.thread.join(IO_TIMEOUT)
        assert self.failed is None, self.failed


def test_mitmweb_never_shows_a_credential_live(fake: FakeProvider,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """mitmweb shows a flow as soon as its request headers arrive, and again at its end: both
    pushes, and the REST API afterwards, carry hints only, while the provider got the real
    credentials."""
    from tests.e2e.harness import ACTORS_TOML
    from tests.e2e.test_mitmweb import MitmwebProcess

    workdir = tmp_path_factory.mktemp("mitmweb-live")
    (workdir / "actors.toml").write_text(ACTORS_TOML)
    mitmweb = MitmwebProcess(workdir, provider_config(fake.url))
    mitmweb.start()
    try:
        updates = Updates(mitmweb)
        try:
            refused = send_raw(mitmweb, "api.openai.com", [
                b"GET /nowhere HTTP/1.1",
                b"Authorization: Bearer " + OWN["unknown-route"].encode()])
            assert refused.status == 404
            own = send_raw(mitmweb, "api.anthropic.com", [
                b"POST /v1/messages HTTP/1.1", b"Content-Type: application/json",
                b"Content-Length: %d" % len(MESSAGES_BODY), b"x-api-key: " + OWN["echo"].encode(),
                b"anthropic-version: 2023-06-01"], MESSAGES_BODY)
            assert own.status == 200
            central = send_raw(mitmweb, "api.openai.com", [
                b"POST /v1/chat/completions HTTP/1.1", b"Content-Type: application/json",
                b"Content-Length: %d" % len(CHAT_BODY),
                b"Authorization: Bearer " + ALICE_TOKEN.encode()], CHAT_BODY)
            assert central.status == 200
            wait_until("mitmweb pushed the end of all three flows",
                       lambda: len([f for f in updates.flows("flows/update")
                                    if f.get("response")]) >= 3)
        finally:
            updates.close()
        listing = mitmweb.rest("/flows")
        dump = mitmweb.rest("/flows/dump")
    finally:
        mitmweb.stop()
    log = mitmweb.log()

    sent = [r.header("x-api-key") or r.header("authorization") for r in fake.requests]
    assert sent == [OWN["echo"], f"Bearer {OPENAI_KEY}"]  # forwarded as the client sent it
    added = updates.flows("flows/add")
    assert len(added) == 3
    headers = {f["request"]["path"]: dict((k.lower(), v) for k, v in f["request"]["headers"])
               for f in added}
    assert headers["/nowhere"]["authorization"] == "Bearer sk-o...fXYZ"
    assert headers["/v1/messages"]["x-api-key"] == "sk-o...fXYZ"
    for secret in (OWN["unknown-route"], OWN["echo"], OPENAI_KEY, ANTHROPIC_KEY, ALICE_TOKEN):
        for message in updates.messages:
            assert secret not in message, f"{secret!r} pushed live: {message}"
        assert secret.encode() not in listing and secret.encode() not in dump
        assert secret not in log
