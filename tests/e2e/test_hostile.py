"""Hostile input against a real mitmdump: malformed HTTP the SDKs never send, spoken over raw
sockets (CONNECT, then TLS trusting the bridge CA). Each case gets a clean rejection or is
handled, the proxy keeps serving others, and no real key reaches the log or the saved flows.

Every test using `hostile` is followed by a normal SDK request and a grep of the whole log for
the real keys; the last test stops the bridge and greps the saved flows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from mitmproxy import io

from tests.e2e.harness import ALICE_TOKEN, ANTHROPIC_KEY, OPENAI_KEY, BridgeProcess, provider_config
from tests.fakeprovider import FakeProvider, Reply, tls_context_for

KEYS = (OPENAI_KEY, ANTHROPIC_KEY)
CHAT = b"/v1/chat/completions"
CHAT_BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}'
MESSAGES_BODY = b'{"model":"claude-sonnet-5","max_tokens":8,"messages":[]}'
IO_TIMEOUT = 15.0  # any single socket read or write


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(fake: FakeProvider, make_bridge) -> BridgeProcess:
    """One bridge for the module; flow_detail=2 prints every request's headers in the log, so
    the key grep also covers what mitmdump itself shows."""
    return make_bridge(provider_config(fake.url), args=["--set", "flow_detail=2"])


@dataclass
class LogMark:
    """The part of the bridge log written since the test started."""

    bridge: BridgeProcess
    start: int = field(init=False)

    def __post_init__(self) -> None:
        self.start = len(self.bridge.log())

    def text(self) -> str:
        return self.bridge.log()[self.start:]

    def assert_no_addon_error(self, settle: float = 0.3) -> None:
        time.sleep(settle)  # hooks that run after the client got its answer (save, log)
        text = self.text()
        assert "Addon error" not in text and "Traceback" not in text, text[-3000:]


@pytest.fixture(autouse=True)
def _still_serving_without_leaks(request: pytest.FixtureRequest) -> Iterator[LogMark | None]:
    if "hostile" not in request.fixturenames:
        yield None
        return
    bridge: BridgeProcess = request.getfixturevalue("hostile")
    mark = LogMark(bridge)
    yield mark
    if bridge.proc is None or bridge.proc.poll() is not None:
        return  # the flows test stopped it on purpose
    reply = bridge.openai(timeout=10).chat.completions.create(
        model="gpt-after-hostile", messages=[{"role": "user", "content": "still there?"}])
    assert reply.choices[0].message.content == "Hello from fake"
    log = bridge.log()
    for key in KEYS:
        assert key not in log, f"real key {key[:6]}... in the log"


@pytest.fixture
def mark(_still_serving_without_leaks: LogMark) -> LogMark:
    return _still_serving_without_leaks


# -- raw HTTP over the bridge --------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None  # None: the connection ended before a response head
    headers: list[tuple[str, str]]
    body: bytes
    closed: bool  # the proxy closed the connection (EOF seen)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self):
        return json.loads(self.body)


def open_tls(bridge: BridgeProcess, host: str = "api.openai.com",
             token: str | None = ALICE_TOKEN) -> ssl.SSLSocket:
    sock, head = bridge.connect(host, 443, token=token)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = bridge.ssl_context()
    ctx.set_alpn_protocols(["http/1.1"])
    tls = ctx.wrap_socket(sock, server_hostname=host)
    tls.settimeout(IO_TIMEOUT)
    return tls


class Reader:
    """Reads one HTTP/1.1 response off a socket: head, then Content-Length, chunked or EOF."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _more(self) -> bool:
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def head(self) -> tuple[int | None, list[tuple[str, str]]]:
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                return None, []
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])]
        return int(lines[0].split(" ")[1]), headers

    def chunks(self) -> Iterator[bytes]:
        """The decoded pieces of a chunked body as they arrive; ends at the last chunk."""
        while True:
            while b"\r\n" not in self.buf:
                if not self._more():
                    raise ConnectionError("chunked body cut before its last chunk")
            line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                if not self._more():
                    raise ConnectionError("chunked body cut inside a chunk")
            data, self.buf = self.buf[:size], self.buf[size + 2:]
            if size == 0:
                return
            yield data

    def response(self) -> Answer:
        status, headers = self.head()
        if status is None:
            return Answer(None, [], self.buf, True)
        names = {k.lower(): v for k, v in headers}
        if "chunked" in names.get("transfer-encoding", "").lower():
            body = b"".join(self.chunks())
        elif "content-length" in names:
            n = int(names["content-length"])
            while len(self.buf) < n and self._more():
                pass
            body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while self._more():
                pass
            body, self.buf = self.buf, b""
        return Answer(status, headers, body, self.eof)

    def closes(self, within: float = 3.0) -> bool:
        """Whether the peer closes the connection within `within` seconds."""
        if self.eof:
            return True
        self.sock.settimeout(within)
        try:
            return not self._more()
        except TimeoutError:
            return False


def request_bytes(headers: list[bytes], body: bytes = CHAT_BODY, *, path: bytes = CHAT,
                  host: bytes = b"api.openai.com", method: bytes = b"POST",
                  length: bool = True) -> bytes:
    head = [method + b" " + path + b" HTTP/1.1", b"Host: " + host,
            b"Content-Type: application/json", *headers]
    if length:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def exchange(bridge: BridgeProcess, payload: bytes, host: str = "api.openai.com") -> Answer:
    with open_tls(bridge, host) as tls:
        tls.sendall(payload)
        answer = Reader(tls).response()
    for key in KEYS:  # no answer, error or echo ever hands a real key to the client
        assert key not in repr(answer.headers) and key.encode() not in answer.body
    return answer


def memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f)
                if k in ("VmRSS", "VmHWM")}


# -- CR, LF and NUL in header values ------------------------------------------------------------

INJECTED = "X-AI-Bridge-Actor-ID: mallory"
# A CR, NUL or obs-fold inside a value is refused (HTTP/1.1 allows refusing each; the bridge
# refuses CR, LF and NUL in values). A bare LF is a line end to mitmproxy (HTTP/1.1 lets a
# recipient read it as one), so mallory's line arrives as a header of its own: the bridge strips
# it like any client-sent actor header and forwards the request.
SEPARATORS = [
    pytest.param(b"\r\n ", 400, id="crlf-obs-fold"),
    pytest.param(b"\r", 400, id="bare-cr"),
    pytest.param(b"\x00", 400, id="nul"),
    pytest.param(b"\n", 200, id="bare-lf"),
]


@pytest.mark.parametrize(("sep", "status"), SEPARATORS)
def test_header_injection_never_reaches_the_provider_as_a_header(hostile, fake, mark, sep,
                                                                 status):
    """`X-Foo: a<sep>X-AI-Bridge-Actor-ID: mallory`: a JSON 400 before the provider, or a forward
    in which the provider sees only the bridge's actor header and no CR/LF/NUL in any value."""
    payload = request_bytes([b"X-Foo: a" + sep + INJECTED.encode(),
                             b"Authorization: Bearer sk-user-placeholder"])
    answer = exchange(hostile, payload)
    assert answer.status == status, answer
    if status == 400:
        assert answer.json()["error"]["message"]
        assert fake.requests == []
    else:
        (seen,) = fake.requests
        actor_ids = [v for k, v in seen.headers if k.strip().lower() == "x-ai-bridge-actor-id"]
        assert actor_ids == ["alice"], seen.headers
        assert not [(k, v) for k, v in seen.headers if set(k + v) & {"\r", "\n", "\0"}]
        assert [v for k, v in seen.headers if k.strip().lower() == "authorization"] == [
            f"Bearer {OPENAI_KEY}"]
    mark.assert_no_addon_error()


# -- oversized heads -----------------------------------------------------------------------------

OVERSIZED = {
    "one-200KiB-header": [b"X-Big: " + b"a" * (200 << 10)],
    "10k-headers": [b"X-H%d: v" % i for i in range(10_000)],
    "one-4MiB-header": [b"X-Big: " + b"a" * (4 << 20)],
}


@pytest.mark.parametrize("name", OVERSIZED)
def test_oversized_head_gets_an_error_and_the_proxy_keeps_serving(hostile, fake, mark, name):
    answer = exchange(hostile, request_bytes(OVERSIZED[name]))
    assert answer.status == 431, answer
    assert answer.json()["error"]["message"]  # a JSON error, not a cut connection
    assert fake.requests == []
    mark.assert_no_addon_error()


@pytest.mark.parametrize("name", OVERSIZED)
def test_oversized_head_is_refused_by_the_bridge_with_431(hostile, fake, name):
    before = fake.connections_opened
    answer = exchange(hostile, request_bytes(OVERSIZED[name]))
    assert answer.status == 431, answer
    assert fake.connections_opened == before  # refused before any upstream connection


def test_endless_request_head_is_cut_off(hostile, mark):
    before = memory_kib(hostile.proc.pid)["VmRSS"]
    with open_tls(hostile) as tls:
        cut = False
        try:
            tls.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Big: ")
            for _ in range(32):
                tls.sendall(b"a" * (1 << 20))
        except (ConnectionError, ssl.SSLError, TimeoutError):
            cut = True
        reader = Reader(tls)
        if not cut:
            tls.settimeout(3)
            try:
                status, _ = reader.head()
            except TimeoutError:
                status = None
            cut = status == 431 or reader.eof
    grown = memory_kib(hostile.proc.pid)["VmRSS"] - before
    assert cut, f"32 MiB of request head accepted without an answer; RSS grew {grown} KiB"


def test_an_unfinished_head_past_the_limit_gets_a_json_431_and_the_proxy_keeps_serving(
        hostile, fake, mark):
    """Past 128 KiB without the end of the head: the client reads why (the OpenAI error shape
    on api.openai.com); the rest of its head is read and dropped, and once it ends the
    connection closes; nothing goes upstream, the proxy serves on."""
    before = fake.connections_opened
    with open_tls(hostile) as tls:
        tls.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Big: "
                    + b"a" * (200 << 10))
        reader = Reader(tls)
        answer = reader.response()
        assert answer.status == 431, answer
        assert "request head larger than 128 KiB" in answer.json()["error"]["message"]
        tls.sendall(b"a" * (1 << 20) + b"\r\n\r\n")
        assert reader.closes()
    assert fake.connections_opened == before
    assert exchange(hostile, request_bytes([])).status == 200
    mark.assert_no_addon_error()


def test_a_large_body_sent_with_its_head_is_not_taken_for_a_long_head(hostile, fake, mark):
    """The head's end arrives with 1 MiB of body in the same writes: a body, not a head."""
    content = b"x" * (1 << 20)
    body = json.dumps({"model": "gpt-4o", "messages": [
        {"role": "user", "content": content.decode()}]}).encode()
    answer = exchange(hostile, request_bytes([], body))
    assert answer.status == 200, answer
    assert fake.requests[-1].body == body
    mark.assert_no_addon_error()


# -- request smuggling: framing headers that disagree --------------------------------------------

SMUGGLED = b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"
CHUNKED = b"%x\r\n%b\r\n0\r\n\r\n" % (len(CHAT_BODY), CHAT_BODY)
FRAMINGS = {
    "cl-then-te": [b"Content-Length: %d" % len(CHAT_BODY), b"Transfer-Encoding: chunked"],
    "te-then-cl": [b"Transfer-Encoding: chunked", b"Content-Length: 4"],
    "two-different-cl": [b"Content-Length: %d" % len(CHUNKED), b"Content-Length: 5"],
    "cl-list": [b"Content-Length: %d, 5" % len(CHUNKED)],
    "two-te": [b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"],
    "te-space-before-colon": [b"Transfer-Encoding : chunked", b"Content-Length: 4"],
    "cl-plus-sign": [b"Content-Length: +%d" % len(CHUNKED)],
    "te-unknown-coding": [b"Transfer-Encoding: xchunked"],
}


@pytest.mark.parametrize("name", FRAMINGS)
def test_conflicting_framing_is_refused_and_nothing_is_smuggled(hostile, fake, mark, name):
    payload = request_bytes(FRAMINGS[name], CHUNKED + SMUGGLED, length=False)
    with open_tls(hostile) as tls:
        tls.sendall(payload)
        reader = Reader(tls)
        answer = reader.response()
        assert answer.status == 400, answer
        assert reader.closes(), "the connection must not carry the smuggled request"
    time.sleep(0.3)
    assert fake.requests == []  # neither the request nor a smuggled second one went upstream
    mark.assert_no_addon_error()


# -- invalid UTF-8 and other non-text bytes ------------------------------------------------------


def test_invalid_utf8_in_a_header_value_is_forwarded_as_bytes(hostile, fake, mark):
    answer = exchange(hostile, request_bytes([b"X-Foo: \xff\xfe\xc3\x28 end"]))
    assert answer.status == 200, answer
    assert fake.requests[-1].header("X-Foo") == "\xff\xfe\xc3\x28 end"  # latin-1 view
    mark.assert_no_addon_error()


def test_invalid_utf8_in_a_header_name_is_a_json_400(hostile, fake, mark):
    answer = exchange(hostile, request_bytes([b"X-\xff\xfe: v"]))
    assert answer.status == 400
    assert "invalid header name" in answer.json()["error"]["message"]
    assert fake.requests == []
    mark.assert_no_addon_error()


@pytest.mark.parametrize("host, path, body, shape", [
    ("api.openai.com", CHAT, b'{"model":"gpt-4o\xff\xfe","messages":[]}', "openai"),
    ("api.anthropic.com", b"/v1/messages", b'{"model":"claude\xc3\x28","max_tokens":5}',
     "anthropic"),
], ids=["chat", "messages"])
def test_invalid_utf8_in_a_json_body_is_a_json_400(hostile, fake, mark, host, path, body, shape):
    answer = exchange(hostile, request_bytes([], body, path=path, host=host.encode()), host)
    assert answer.status == 400, answer
    error = answer.json()
    if shape == "anthropic":
        assert error["type"] == "error"
        error = error["error"]
    else:
        error = error["error"]
        assert error["code"] == "invalid_json"
    assert "not valid JSON" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert fake.requests == []
    mark.assert_no_addon_error()





@pytest.mark.parametrize(("body", "status"), [
    pytest.param(b'{"model":"gpt-\\ud800x","messages":[]}', 200, id="model-escape"),
    pytest.param(b'{"model":"gpt-\xed\xa0\x80","messages":[]}', 400, id="model-utf8-bytes"),
    pytest.param(b'{"model":"gpt-4o","messages":[{"role":"user","content":"\xed\xa0\x80"}]}',
                 400, id="content-utf8-bytes"),
])
def test_lone_surrogates_in_the_body_are_handled(hostile, fake, mark, body, status):
    """An escaped lone surrogate is valid JSON syntax: forwarded as sent, the provider judges
    the text. A surrogate as raw bytes is not UTF-8, so the body is not JSON text: the same 400
    as in test_invalid_utf8_in_a_json_body_is_a_json_400."""
    answer = exchange(hostile, request_bytes([], body))
    assert answer.status == status, answer
    if status == 200:
        assert fake.requests[-1].body == body
    else:
        assert answer.json()["error"]["code"] == "invalid_json"
        assert fake.requests == []
    mark.assert_no_addon_error(settle=0.5)


def test_control_characters_in_the_model_never_reach_the_log_raw(hostile, fake, mark):
    forged = "[00:00:00.000] aibridge: forged-line actor=root"
    model = f"gpt-4o\n{forged}\u001b[2J"
    answer = exchange(hostile, request_bytes([], json.dumps(
        {"model": model, "messages": []}).encode()))
    assert answer.status == 200, answer
    hostile.wait_for_log(r"aibridge: [0-9a-f-]{36} actor=alice provider=openai model=gpt-4o")
    text = mark.text()
    assert not any(line.startswith(forged) for line in text.splitlines()), text[-2000:]
    assert "\x1b" not in text


@pytest.mark.parametrize(("name", "value"), [
    (b"X-Api-Key", b"sk-ant-\xff\xfe-own-key-abcdefgh"),
    (b"Authorization", b"Bearer \xff\xfe\xfd-own-abcdefgh"),
], ids=["x-api-key", "bearer"])
def test_invalid_utf8_in_the_callers_key_is_handled(hostile, fake, mark, name, value):
    """Bytes above 0x7F are allowed in a header value, and a key that is not the caller's proxy
    token is the caller's own in `auto` mode: a BYOK forward, byte for byte; the provider judges
    the key."""
    answer = exchange(hostile, request_bytes([name + b": " + value], MESSAGES_BODY,
                                             path=b"/v1/messages", host=b"api.anthropic.com"),
                      "api.anthropic.com")
    assert answer.status == 200, answer
    seen = fake.requests[-1]
    assert seen.header(name.decode()) == value.decode("latin-1")  # the fake's view of the bytes
    assert seen.header("X-AI-Bridge-Actor-ID") == "alice"
    mark.assert_no_addon_error()


@pytest.fixture(scope="module")
def tls_site() -> Iterator[FakeProvider]:
    """A non-provider HTTPS host (tunnelled, never decrypted)."""
    server_ctx, _ = tls_context_for(["localhost"])
    with FakeProvider(tls=server_ctx) as server:
        yield server


def test_non_ascii_proxy_authorization_on_connect_is_407(hostile, tls_site):
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n"
                     b"Proxy-Authorization: Basic \xff\xfe\r\n\r\n"
                     % (tls_site.port, tls_site.port))
        status, _ = Reader(sock).head()
    assert status == 407


def test_non_ascii_proxy_authorization_on_plain_http_is_407(hostile, fake):
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"GET http://127.0.0.1:%d/v1/models HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     b"Proxy-Authorization: Basic \xff\r\nConnection: close\r\n\r\n"
                     % (fake.port, fake.port))
        answer = Reader(sock).response()
    assert answer.status == 407, answer
    assert fake.requests == []


def test_undecodable_proxy_credentials_are_407(hostile, fake, mark):
    """Valid base64 of bytes that are not UTF-8, or of a bare separator: plain 407s."""
    for creds in (b"dev:\xff\xfe", b"\xff", b":"):
        basic = b"Basic " + base64.b64encode(creds)
        with socket.create_connection(("127.0.0.1", hostile.port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
                         b"Proxy-Authorization: " + basic + b"\r\n\r\n")
            status, _ = Reader(sock).head()
        assert status == 407, creds
    mark.assert_no_addon_error()


# -- an SSE line of several MiB --------------------------------------------------------------


def big_line_events(size: int) -> tuple[bytes, list[bytes]]:
    """A chat stream whose first event is one `data:` line of `size` bytes, split in two halves
    (the fake pauses between them), then the normal events with usage. Returns (first half,
    every event)."""
    head = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-big",'
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":"')
    tail = b'"},"finish_reason":null}]}\n\n'
    line = head + b"x" * (size - len(head) - len(tail)) + tail
    rest = [
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-big",'
        b'"choices":[{"index":0,"delta":{"content":" rest"},"finish_reason":"stop"}]}\n\n',
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-big",'
        b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n',
        b"data: [DONE]\n\n",
    ]
    half = len(line) // 2
    return line[:half], [line[:half], line[half:], *rest]


# 8 MiB is below the tap's SSE line cap (16 MiB), 20 MiB above it (the tap drops that line).
@pytest.mark.parametrize("mib", [8, 20])
def test_sse_line_of_several_mib_passes_unchanged_and_unbuffered(hostile, fake, mark, mib):
    first, events = big_line_events(mib << 20)
    sent = b"".join(events)
    gate = threading.Event()
    fake.enqueue(Reply(events=events, gate=gate, gate_timeout=10))
    pid = hostile.proc.pid
    before = memory_kib(pid)["VmRSS"]
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM, so it shows this stream's peak
    model = f"gpt-big-{mib}"
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    with open_tls(hostile) as tls:
        tls.sendall(request_bytes([], body))
        reader = Reader(tls)
        status, _ = reader.head()
        assert status == 200
        got = hashlib.sha256()
        count = 0
        for piece in reader.chunks():
            got.update(piece)
            count += len(piece)
            if count >= len(first):
                # The whole first half of the line arrived while the provider is still
                # holding the second half: the tap did not wait for the line to end.
                gate.set()
    assert not fake.gate_timed_out
    assert count == len(sent)
    assert got.hexdigest() == hashlib.sha256(sent).hexdigest()
    hostile.wait_for_log(rf"model={model} stream=True status=200 .* in 5 out 2 "
                         r"outcome=completed")
    after = memory_kib(pid)
    # Generous: a few copies of the line at most, nothing like buffering the whole stream
    # several times over.
    assert after["VmHWM"] - before < 6 * (mib << 10) + (64 << 10), (before, after)
    assert after["VmRSS"] - before < 2 * (mib << 10) + (64 << 10), (before, after)
    mark.assert_no_addon_error()


# -- slow clients ----------------------------------------------------------------------------


def trickle(bridge: BridgeProcess, what: str, results: dict[str, object]) -> None:
    """One byte a second for the last six bytes of the CONNECT head, the request head or the
    body; then read the answer. Stores the Answer (or the exception) under `what`."""
    try:
        payload = request_bytes([b"X-Slow: " + what.encode()],
                                json.dumps({"model": f"gpt-slow-{what}",
                                            "messages": []}).encode())
        if what == "connect":
            basic = base64.b64encode(f"dev:{ALICE_TOKEN}".encode())
            head = (b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
                    b"Proxy-Authorization: Basic " + basic + b"\r\n\r\n")
            sock = socket.create_connection(("127.0.0.1", bridge.port), timeout=IO_TIMEOUT)
            sock.sendall(head[:-6])
            for byte in head[-6:]:
                time.sleep(1)
                sock.sendall(bytes([byte]))
            status, _ = Reader(sock).head()
            assert status == 200, status
            ctx = bridge.ssl_context()
            ctx.set_alpn_protocols(["http/1.1"])
            conn = ctx.wrap_socket(sock, server_hostname="api.openai.com")
            conn.sendall(payload)
        else:
            conn = open_tls(bridge)
            split = payload.index(b"\r\n\r\n") + 4 if what == "head" else len(payload)
            conn.sendall(payload[:split - 6])
            for byte in payload[split - 6:split]:
                time.sleep(1)
                conn.sendall(bytes([byte]))
            conn.sendall(payload[split:])
        with conn:
            results[what] = Reader(conn).response()
    except Exception as e:  # reported by the test
        results[what] = e


def test_slow_clients_do_not_stop_others(hostile, fake, mark):
    results: dict[str, object] = {}
    slow = [threading.Thread(target=trickle, args=(hostile, what, results), daemon=True)
            for what in ("connect", "head", "body")]
    for thread in slow:
        thread.start()
    time.sleep(1)
    client = hostile.openai(timeout=5)
    for i in range(3):
        reply = client.chat.completions.create(
            model=f"gpt-fast-{i}", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "Hello from fake"
    # The fast ones were served while the slow ones were still trickling.
    assert all(thread.is_alive() for thread in slow)
    for thread in slow:
        thread.join(30)
    assert not any(thread.is_alive() for thread in slow), "a slow client hangs"
    # Six seconds for a head or body is slow, not abusive: far inside every timeout, so each
    # is served (a 408 or a cut would be a timeout that is too eager).
    for what in ("connect", "head", "body"):
        answer = results[what]
        assert isinstance(answer, Answer), (what, answer)
        assert answer.status == 200, (what, answer)
    completed = {r.json()["model"] for r in fake.requests if r.header("X-Slow")}
    assert completed == {"gpt-slow-connect", "gpt-slow-head", "gpt-slow-body"}
    mark.assert_no_addon_error()


# -- connection handling -------------------------------------------------------------------


def test_connection_close_from_the_client_is_honoured(hostile, fake):
    with open_tls(hostile) as tls:
        tls.sendall(request_bytes([b"Connection: close"]))
        reader = Reader(tls)
        answer = reader.response()
        assert answer.status == 200
        assert reader.closes(within=3)


# -- last: the saved flows --------------------------------------------------------------------


def test_zz_saved_flows_hold_no_key(hostile, fake):
    """Runs last in this module: stops the bridge, then greps and parses the saved flows."""
    hostile.stop()
    saved = hostile.flows_path.read_bytes()
    log = hostile.log()
    for key in KEYS:
        assert key.encode() not in saved, f"real key {key[:6]}... in the saved flows"
        assert key not in log
    with hostile.flows_path.open("rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if fl.type == "http"]
    bridged = [fl for fl in flows if fl.metadata.get("aibridge", {}).get("credential")]
    assert bridged, "no bridged flow was saved: the grep above would prove nothing"
    for fl in bridged:
        assert OPENAI_KEY not in str(fl.request.headers)
