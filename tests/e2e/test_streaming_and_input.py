"""Streaming is unbuffered (proved by causality), compressed streams are tapped, and bad
input gets JSON errors while the proxy keeps serving."""

from __future__ import annotations

import json
import threading

import pytest

from tests.fakeprovider import Reply

CHAT_EVENTS = [
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    '"choices":[{"index":0,"delta":{"role":"assistant","content":"first"},'
    '"finish_reason":null}]}\n\n',
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    '"choices":[{"index":0,"delta":{"content":" rest"},"finish_reason":"stop"}]}\n\n',
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    '"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n',
    "data: [DONE]\n\n",
]


def test_first_event_arrives_before_the_provider_sends_the_rest(bridge, fake):
    """The fake sends one event, then waits until the client has it before sending more: a
    buffering proxy would deadlock until the gate times out."""
    gate = threading.Event()
    fake.enqueue(Reply(events=CHAT_EVENTS, gate=gate, gate_timeout=10))
    stream = bridge.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True)
    it = iter(stream)
    first = next(it)
    gate.set()  # only now may the provider send the rest
    rest = list(it)
    assert first.choices[0].delta.content == "first"
    assert rest[0].choices[0].delta.content == " rest"
    assert not fake.gate_timed_out
    bridge.wait_for_log(r"in 5 out 2 outcome=completed")


# zstd is covered by the tap's unit tests: the SDKs do not ask for it (httpx2 cannot decode it
# on this Python without an extra package), so a provider would not send it to them.
@pytest.mark.parametrize("encoding", ["gzip", "br", None])
def test_compressed_and_identity_streams_are_tapped(bridge, fake, encoding):
    gate = threading.Event()
    fake.enqueue(Reply(events=CHAT_EVENTS, gate=gate, encoding=encoding))
    stream = bridge.openai().chat.completions.create(
        model=f"gpt-enc-{encoding}", messages=[{"role": "user", "content": "x"}], stream=True)
    it = iter(stream)
    assert next(it).choices[0].delta.content == "first"
    gate.set()
    assert [c.choices[0].delta.content for c in it if c.choices] == [" rest"]
    assert not fake.gate_timed_out
    bridge.wait_for_log(rf"model=gpt-enc-{encoding} stream=True status=200 .* in 5 out 2 "
                        r"outcome=completed")


def curl_json(bridge, path: str, *args: str, host: str = "api.openai.com"):
    result = bridge.curl("-s", "-w", "\n%{http_code}", f"https://{host}{path}", *args)
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body) if body else None


def test_bad_input_gets_json_errors_and_the_proxy_keeps_serving(bridge, fake, tmp_path):
    cases = [
        (["-H", "Content-Type: application/json", "-d", "{not json"], 400, "not valid JSON"),
        (["-H", "Content-Type: application/json", "-d", "[1, 2]"], 400, "JSON object"),
        (["-H", "Content-Type: text/plain", "-d", "{}"], 415, "content type"),
    ]
    for args, status, text in cases:
        got, body = curl_json(bridge, "/v1/chat/completions", *args)
        assert got == status, (args, body)
        assert text in body["error"]["message"]
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["param"] is None

    got, body = curl_json(bridge, "/v2/nothing-here", "-X", "POST")
    assert got == 404
    assert body["error"]["message"] == "route not supported: POST /v2/nothing-here"

    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.write(b'{"model": "gpt-4o", "pad": "' + b"x" * (32 << 20) + b'"}')
    got, body = curl_json(bridge, "/v1/chat/completions", "-H",
                          "Content-Type: application/json", "--data-binary", f"@{big}")
    assert got == 413
    assert "32MiB" in body["error"]["message"]

    got, body = curl_json(bridge, "/v1/messages", "-H", "Content-Type: application/json",
                          "-d", "{oops", host="api.anthropic.com")
    assert got == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert fake.requests == []  # none of it reached the provider

    # Garbage where a TLS handshake should be, then a request that is fine.
    sock, head = bridge.connect("api.openai.com", 443)
    assert head.startswith(b"HTTP/1.1 200")
    sock.sendall(b"\x00\xffthis is not TLS\r\n\r\n" * 10)
    sock.close()
    result = bridge.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "still there?"}])
    assert result.choices[0].message.content == "Hello from fake"


def test_no_usable_credential_is_a_json_401(fake, make_bridge):
    from tests.e2e.harness import provider_config

    config = provider_config(fake.url).replace('credentials = "auto"', 'credentials = "byok"')
    bridge = make_bridge(config)
    body = json.dumps({"model": "claude-sonnet-5", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "x"}]})
    got, error = curl_json(bridge, "/v1/messages", "-H", "Content-Type: application/json",
                           "-d", body, host="api.anthropic.com")
    assert got == 401
    assert error["type"] == "error"
    assert error["error"]["type"] == "authentication_error"
    assert "needs your own API key" in error["error"]["message"]
    assert fake.requests == []
    # BYOK: the caller's own key goes upstream; X-Api-Key wins over a bearer token.
    user_key = "sk-ant-user-own-key-000111222"
    bridge.anthropic(api_key=None, auth_token="sk-ant-oat01-subscription").messages.create(
        model="claude-sonnet-5", max_tokens=8, messages=[{"role": "user", "content": "x"}],
        extra_headers={"X-Api-Key": user_key})
    seen = fake.requests[-1]
    assert seen.header("X-Api-Key") == user_key
    assert seen.header("Authorization") is None
