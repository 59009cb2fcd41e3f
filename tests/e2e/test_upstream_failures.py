"""Failures below HTTP become JSON the SDKs parse, not mitmproxy's HTML page or a cut stream."""

from __future__ import annotations

import socket

import anthropic
import openai
import pytest

from tests.e2e.harness import ALICE_TOKEN, provider_config
from tests.fakeprovider import FakeProvider, Reply, tls_context_for

CHAT_EVENTS = [
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    '"choices":[{"index":0,"delta":{"role":"assistant","content":"partial"},'
    '"finish_reason":null}]}\n\n',
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    '"choices":[{"index":0,"delta":{"content":" never"},"finish_reason":null}]}\n\n',
]
MESSAGE_EVENTS = [
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":'
    '"message","role":"assistant","model":"claude-sonnet-5","content":[],"stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}\n\n',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"text","text":""}}\n\n',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"partial"}}\n\n',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":" never"}}\n\n',
]
MESSAGES = [{"role": "user", "content": "hi"}]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def failing(fake, untrusted, make_bridge):
    extra = f"""
[resilience]
upstream_timeout = 1.5

[providers.refused]
type = "openai"
hosts = ["refused.example"]
upstream = "http://127.0.0.1:{closed_port()}"
credentials = "byok"

[providers.nodns]
type = "anthropic"
hosts = ["nodns.example"]
upstream = "https://no-such-host.invalid"
credentials = "byok"

[providers.untrusted]
type = "openai"
hosts = ["untrusted.example"]
upstream = "https://127.0.0.1:{untrusted.port}"
credentials = "byok"

[providers.silenttls]
type = "openai"
hosts = ["silenttls.example"]
upstream = "https://127.0.0.1:{fake.port}"  # plain HTTP: the TLS handshake never completes
credentials = "byok"
"""
    return make_bridge(provider_config(fake.url, extra=extra))


@pytest.fixture(scope="module")
def untrusted():
    """An HTTPS upstream whose certificate mitmproxy does not trust."""
    server_ctx, _ = tls_context_for(["127.0.0.1"])
    with FakeProvider(tls=server_ctx) as server:
        yield server


def test_connection_refused_is_a_json_502(failing):
    client = failing.openai(base_url="https://refused.example/v1")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_unreachable"
    # Named by provider and the host the client asked for; the upstream's address is the
    # operator's business (logged), not the client's.
    assert "upstream refused (refused.example) unreachable: connection refused" \
        in info.value.message
    assert "127.0.0.1" not in info.value.message
    assert info.value.response.headers["content-type"] == "application/json"


def test_dns_failure_is_a_json_502_on_anthropic_routes(failing):
    client = failing.anthropic(base_url="https://nodns.example", api_key="sk-ant-own-key-123")
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "api_error"
    assert "upstream nodns (nodns.example) unreachable: name resolution failed" \
        in str(info.value)
    assert "no-such-host.invalid" not in str(info.value)


def test_tls_failure_is_a_json_502(failing, untrusted):
    client = failing.openai(base_url="https://untrusted.example/v1")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502
    assert "upstream untrusted (untrusted.example) unreachable:" in info.value.message
    assert "certificate" in info.value.message.lower()
    assert untrusted.requests == []


def test_upstream_stuck_in_the_tls_handshake_is_a_json_504(failing):
    client = failing.openai(base_url="https://silenttls.example/v1")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 504


def test_upstream_that_never_answers_is_a_json_504(failing, fake):
    fake.enqueue(Reply(never_respond=True))
    with pytest.raises(openai.APIStatusError) as info:
        failing.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"
    assert "sent no response within 1.5s" in info.value.message
    # The proxy still serves the next request normally.
    ok = failing.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert ok.choices[0].message.content == "Hello from fake"


def test_chat_stream_cut_midway_ends_with_an_error_event(failing, fake):
    fake.enqueue(Reply(events=CHAT_EVENTS, close_after_events=1))
    stream = failing.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                      stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["partial"]
    assert "openai: stream interrupted" in info.value.message
    failing.wait_for_log(r"outcome=failed reason='openai: stream interrupted|outcome=failed")


def test_messages_stream_cut_midway_ends_with_an_error_event(failing, fake):
    fake.enqueue(Reply(events=MESSAGE_EVENTS, close_after_events=3))
    client = failing.anthropic(api_key=ALICE_TOKEN)
    with (pytest.raises(anthropic.APIStatusError) as info,
          client.messages.stream(model="claude-sonnet-5", max_tokens=8,
                                 messages=MESSAGES) as stream):
        for _ in stream.text_stream:
            pass
    assert "anthropic: stream interrupted" in str(info.value)
