"""The fake provider itself, driven directly (no proxy) with httpx2, raw sockets and the real SDKs.

The e2e suite trusts the fake's shapes and failure modes, so they are pinned down here: the real
SDKs must parse every default reply, and each scripted behaviour must do exactly what it says.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx2
import openai
import pytest
import zstandard

from tests.fakeprovider import FakeProvider, Reply, tls_context_for

pytestmark = pytest.mark.timeout(30)

TIMEOUT = httpx2.Timeout(5.0)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as f:
        yield f


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=fake.url, timeout=TIMEOUT) as c:
        yield c


def oai(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0, timeout=5.0)


def ant(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0, timeout=5.0)


def raw_exchange(fake: FakeProvider, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


# --- defaults, parsed by the real SDKs ----------------------------------------------------------


def test_chat_json_default(fake: FakeProvider) -> None:
    r = oai(fake).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.id == "chatcmpl-fake1"
    assert r.model == "gpt-test"
    assert r.choices[0].message.content == "Hello from fake"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (11, 7, 18)
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 3
    seen = fake.requests[0]
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.json()["model"] == "gpt-test"
    assert seen.header("AUTHORIZATION") == "Bearer x"


def test_chat_stream_default(fake: FakeProvider) -> None:
    stream = oai(fake).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from fake"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert all(c.model == "gpt-test" and c.id == "chatcmpl-fake1" for c in chunks)


def test_chat_stream_without_usage_option(client: httpx2.Client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "m", "stream": True})
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert len(events) == 6  # role, 3 deltas, finish, [DONE]: no usage chunk
    assert '"usage"' not in r.text


def test_responses_json_default(fake: FakeProvider) -> None:
    r = oai(fake).responses.create(model="gpt-test", input="hi")
    assert r.id == "resp_fake1"
    assert r.status == "completed"
    assert r.model == "gpt-test"
    assert r.output_text == "Hello from fake"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (11, 7, 18)
    assert r.usage.input_tokens_details.cached_tokens == 3
    assert r.usage.output_tokens_details.reasoning_tokens == 2


def test_responses_stream_default(fake: FakeProvider) -> None:
    events = list(oai(fake).responses.create(model="gpt-test", input="hi", stream=True))
    assert [e.type for e in events] == [
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
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == "Hello from fake"
    assert completed.usage is not None and completed.usage.output_tokens == 7

    with oai(fake).responses.stream(model="gpt-test", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello from fake"


def test_messages_json_default(fake: FakeProvider) -> None:
    m = ant(fake).messages.create(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert m.id == "msg_fake1"
    assert m.model == "claude-test"
    assert m.content[0].type == "text" and m.content[0].text == "Hello from fake"
    assert m.stop_reason == "end_turn"
    u = m.usage
    assert (u.input_tokens, u.output_tokens) == (11, 7)
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (3, 2)
    assert fake.requests[0].header("anthropic-version")


def test_messages_stream_default(fake: FakeProvider) -> None:
    with ant(fake).messages.stream(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["Hello", " from", " fake"]
    assert final.content[0].type == "text" and final.content[0].text == "Hello from fake"
    assert final.stop_reason == "end_turn"
    u = final.usage
    assert (u.input_tokens, u.output_tokens) == (11, 7)
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (3, 2)

    raw = list(
        ant(fake).messages.create(
            model="claude-test",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    )
    assert [e.type for e in raw] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops the ping


def test_count_tokens_and_models(fake: FakeProvider) -> None:
    a = ant(fake)
    count = a.messages.count_tokens(
        model="claude-test", messages=[{"role": "user", "content": "x"}]
    )
    assert count.input_tokens == 11
    assert [m.id for m in a.models.list()] == ["gpt-4o", "claude-sonnet-4-5"]
    assert [m.id for m in oai(fake).models.list()] == ["gpt-4o", "claude-sonnet-4-5"]


def test_unknown_path_is_404(client: httpx2.Client) -> None:
    r = client.post("/v1/completions?x=1", json={})
    assert r.status_code == 404
    assert r.json() == {
        "error": {"message": "not found: /v1/completions", "type": "not_found_error"}
    }


def test_reply_headers(client: httpx2.Client) -> None:
    r = client.post("/v1/messages", json={"model": "m"})
    assert r.headers["request-id"] == r.headers["x-request-id"] == "req_fake1"
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    r = client.post("/v1/messages", json={"model": "m", "stream": True})
    assert r.headers["request-id"] == "req_fake2"
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers


def test_seen_headers_keep_wire_order_and_spelling(
    fake: FakeProvider, client: httpx2.Client
) -> None:
    client.get(
        "/v1/models?limit=2",
        headers=[("X-Multi", "a"), ("x-MULTI", "b"), ("X-Other", "c")],
    )
    seen = fake.requests[0]
    assert seen.path == "/v1/models?limit=2"
    names = [k for k, _ in seen.headers]
    assert names.index("X-Multi") < names.index("x-MULTI") < names.index("X-Other")
    assert seen.header("x-multi") == "a"
    assert seen.header_all("X-MULTI") == ["a", "b"]
    assert seen.header("absent") is None
    assert seen.body == b""


def test_bench_routes(client: httpx2.Client) -> None:
    r = client.get("/bench/sse?events=50&size=64")
    events = [e for e in r.text.split("\n\n") if e]
    assert len(events) == 50
    assert all(len(e) + 2 == 64 for e in events)
    assert client.post("/bench/small").json() == {"ok": True, "bench": 1}


# --- scripting ----------------------------------------------------------------------------------


def test_enqueue_fifo_and_per_path(fake: FakeProvider, client: httpx2.Client) -> None:
    fake.enqueue(Reply(status=429, body={"n": 1}, headers=[("retry-after", "3")]))
    fake.enqueue(Reply(body="only-messages"), path="/v1/messages")
    fake.enqueue(Reply(status=500, body=b"second"))

    r = client.post("/v1/chat/completions", json={})
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (429, {"n": 1}, "3")
    r = client.post("/v1/chat/completions", json={})  # skips the /v1/messages entry
    assert (r.status_code, r.content) == (500, b"second")
    r = client.post("/v1/chat/completions", json={})  # queue holds nothing for this path
    assert r.json()["object"] == "chat.completion"
    r = client.post("/v1/messages?beta=true", json={})  # query is ignored for matching
    assert r.text == "only-messages"
    assert client.post("/v1/messages", json={}).json()["type"] == "message"

    fake.enqueue(Reply(status=418))
    fake.clear()
    assert fake.requests == []
    assert client.post("/bench/small").status_code == 200


def test_reply_headers_override_defaults(client: httpx2.Client, fake: FakeProvider) -> None:
    fake.enqueue(Reply(body="<html/>", headers=[("Content-Type", "text/html"), ("x-a", "1")]))
    r = client.get("/anything")
    assert r.headers.get_list("content-type") == ["text/html"]
    assert r.headers["x-a"] == "1"
    assert r.headers["request-id"].startswith("req_fake")


def test_gate_holds_rest_of_stream(fake: FakeProvider, client: httpx2.Client) -> None:
    gate = threading.Event()
    fake.enqueue(Reply(events=["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"], gate=gate))
    with client.stream("POST", "/v1/chat/completions", json={}) as r:
        lines = r.iter_lines()
        assert next(lines) == "data: 1"  # arrives while the fake waits on the gate
        assert len(fake.requests) == 1
        gate.set()
        rest = [line for line in lines if line]
    assert rest == ["data: 2", "data: 3"]
    assert fake.gate_timed_out is False


def test_gate_timeout_is_recorded(fake: FakeProvider, client: httpx2.Client) -> None:
    fake.enqueue(
        Reply(events=["data: 1\n\n", "data: 2\n\n"], gate=threading.Event(), gate_timeout=0.05)
    )
    r = client.post("/v1/chat/completions", json={})
    assert r.text == "data: 1\n\ndata: 2\n\n"
    assert fake.gate_timed_out is True
    fake.clear()
    assert fake.gate_timed_out is False


def test_delay(fake: FakeProvider, client: httpx2.Client) -> None:
    fake.enqueue(Reply(body={}, delay=0.2))
    start = time.monotonic()
    client.get("/x")
    assert time.monotonic() - start >= 0.2


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_encoded_json_and_sse(fake: FakeProvider, client: httpx2.Client, encoding: str) -> None:
    fake.enqueue(Reply(body={"a": "b" * 1000}, encoding=encoding))
    r = client.get("/x")
    assert r.headers["content-encoding"] == encoding
    assert r.json() == {"a": "b" * 1000}

    # Each event must be decodable on arrival: the gate holds the rest until the first is seen.
    gate = threading.Event()
    events = [f"data: {i}\n\n" for i in range(3)]
    fake.enqueue(Reply(events=events, gate=gate, encoding=encoding))
    with client.stream("POST", "/v1/chat/completions") as r:
        assert r.headers["content-encoding"] == encoding
        text = ""
        chunks = r.iter_text()
        while "\n\n" not in text:
            text += next(chunks)
        assert text == events[0]
        gate.set()
        text += "".join(chunks)
    assert text == "".join(events)
    assert fake.gate_timed_out is False


def test_zstd_json_and_sse(fake: FakeProvider, client: httpx2.Client) -> None:
    # httpx2 decodes zstd only with backports.zstd (Python < 3.14), so decode by hand here.
    fake.enqueue(Reply(body={"a": 1}, encoding="zstd"))
    r = client.get("/x")
    assert r.headers["content-encoding"] == "zstd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(r.content) == b'{"a":1}'

    gate = threading.Event()
    events = [f"data: {i}\n\n".encode() for i in range(3)]
    fake.enqueue(Reply(events=list(events), gate=gate, encoding="zstd"))
    dec = zstandard.ZstdDecompressor().decompressobj()
    with client.stream("POST", "/v1/chat/completions") as r:
        data = b""
        chunks = r.iter_raw()
        while b"\n\n" not in data:
            data += dec.decompress(next(chunks))
        assert data == events[0]
        gate.set()
        for chunk in chunks:
            data += dec.decompress(chunk)
    assert data == b"".join(events)


def test_bad_encoding_rejected_early() -> None:
    with pytest.raises(ValueError, match="unsupported encoding"):
        Reply(encoding="compress")


def test_close_after_events_breaks_stream(fake: FakeProvider, client: httpx2.Client) -> None:
    fake.enqueue(Reply(events=["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"], close_after_events=2))
    got: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.stream("POST", "/v1/chat/completions") as r,
    ):
        got.extend(line for line in r.iter_lines() if line)
    assert got == ["data: 1", "data: 2"]
    # The fake itself is unharmed.
    assert client.get("/bench/small").status_code == 200


def test_never_respond_client_times_out(fake: FakeProvider, client: httpx2.Client) -> None:
    fake.enqueue(Reply(never_respond=True))
    with pytest.raises(httpx2.ReadTimeout):
        client.post("/v1/messages", json={"model": "m"}, timeout=0.3)
    assert fake.requests[0].json() == {"model": "m"}
    assert client.get("/bench/small").status_code == 200


def test_stop_with_pending_exchanges_is_prompt_and_idempotent() -> None:
    fake = FakeProvider().start()
    fake.enqueue(Reply(never_respond=True))
    fake.enqueue(Reply(events=["data: 1\n\n", "data: 2\n\n"], gate=threading.Event()))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx2.post(fake.url + "/x", timeout=5.0)
        except httpx2.HTTPError as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(fake.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    fake.stop()
    fake.stop()
    assert time.monotonic() - start < 2
    for t in threads:
        t.join(5)
    assert len(errors) == 2  # both clients see the connection die, neither hangs


# --- HTTP handling ------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(fake: FakeProvider, client: httpx2.Client) -> None:
    for _ in range(10):
        assert client.post("/v1/messages", json={"model": "m"}).status_code == 200
    assert fake.connections_opened == 1
    assert {s.conn for s in fake.requests} == {1}
    assert [s.path for s in fake.requests] == ["/v1/messages"] * 10


def test_chunked_body_expect_continue_and_connection_close(fake: FakeProvider) -> None:
    out = raw_exchange(
        fake,
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        b'7;ext=1\r\n{"model\r\n8\r\n":"m-1"}\r\n0\r\nX-Trailer: t\r\n\r\n',
    )
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in out
    assert b'"model":"m-1"' in out
    assert fake.requests[0].body == b'{"model":"m-1"}'


def test_pipelined_requests_and_http10(fake: FakeProvider) -> None:
    out = raw_exchange(
        fake,
        b"GET /bench/small HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /bench/small HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /bench/sse?events=2&size=20 HTTP/1.0\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 200 OK") == 3
    sse = out.split(b"\r\n\r\n", 3)[-1]
    assert sse.count(b"data: ") == 2 and b"0\r\n\r\n" not in sse  # close-delimited for 1.0
    assert fake.connections_opened == 1


def test_malformed_request_gets_400(fake: FakeProvider, client: httpx2.Client) -> None:
    out = raw_exchange(fake, b"NONSENSE\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert client.get("/bench/small").status_code == 200


def test_client_disconnect_mid_stream_is_harmless(fake: FakeProvider) -> None:
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(b"GET /bench/sse?events=20000&size=200 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    with httpx2.Client(base_url=fake.url, timeout=TIMEOUT) as c:
        assert c.get("/bench/small").status_code == 200


def test_record_false_keeps_no_requests() -> None:
    with FakeProvider(record=False) as fake:
        assert httpx2.get(fake.url + "/bench/small", timeout=TIMEOUT).status_code == 200
        assert fake.requests == []


def test_tls() -> None:
    ctx, ca_path = tls_context_for(["127.0.0.1", "localhost"])
    with FakeProvider(tls=ctx) as fake:
        assert fake.url.startswith("https://127.0.0.1:")
        verify = ssl.create_default_context(cafile=ca_path)
        with httpx2.Client(base_url=fake.url, verify=verify, timeout=TIMEOUT) as c:
            assert c.get("/v1/models").json()["object"] == "list"
            r = c.post("/v1/chat/completions", json={"stream": True})
            assert r.text.endswith("data: [DONE]\n\n")
        with pytest.raises(httpx2.ConnectError):  # the CA is not in the default trust store
            httpx2.get(fake.url + "/v1/models", timeout=TIMEOUT)
        assert fake.connections_opened == 1  # a failed handshake never reaches HTTP
