"""Rate limits through a real mitmdump with the real SDKs: rpm with a correct Retry-After,
tokens per minute charged when usage is known, concurrent requests, and WebSocket
`response.create` frames counted like requests. Each limit is scoped to its own model names,
so the tests do not count against each other."""

from __future__ import annotations

import asyncio
import threading
import time

import anthropic
import openai
import pytest

from tests.e2e.harness import BOB_TOKEN, provider_config
from tests.fakeprovider import Reply

pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

MESSAGES = [{"role": "user", "content": "hi"}]
LIMITS = """
[[limits]]
name = "alice-rpm"
match = { actor = "alice" }
model = "rpm-*"
rpm = 3

[[limits]]
name = "ml-tokens"
match = { team = "ml" }
model = "tpm-*"
tpm = 20

[[limits]]
name = "one-at-a-time"
match = { actor = "bob" }
model = "slow-*"
concurrent = 1

[[limits]]
name = "socket-rpm"
model = "ws-*"
rpm = 2
"""


@pytest.fixture(scope="module")
def limited(fake, make_bridge):
    return make_bridge(provider_config(fake.url, extra=LIMITS))


def chat_requests(fake, model: str) -> int:
    return len([r for r in fake.requests
                if r.path == "/v1/chat/completions" and r.json().get("model") == model])


def test_rpm_answers_429_with_the_seconds_until_the_window_admits(limited, fake):
    client = limited.openai()
    first = time.time()
    for _ in range(3):
        client.chat.completions.create(model="rpm-model", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="rpm-model", messages=MESSAGES)
    refused_at = time.time()
    e = refused.value
    assert e.status_code == 429
    assert e.body["code"] == "rate_limit_exceeded" and e.body["type"] == "rate_limit_error"
    assert 'rate limit "alice-rpm" (actor=alice, model=rpm-*) exceeded: 3 request(s) per ' \
           "minute" in e.message
    retry_after = int(e.response.headers["Retry-After"])
    # The first request leaves the window 60 s after the bridge admitted it (at or after
    # `first`): Retry-After is the time until then, rounded up to whole seconds.
    expected = 60 - (refused_at - first)
    assert expected - 1 <= retry_after <= expected + 2, (retry_after, expected)
    assert f"retry in {retry_after}s" in e.message
    assert chat_requests(fake, "rpm-model") == 3  # the refused one never reached it
    # Anthropic's SDK reads the same refusal in its own envelope.
    with pytest.raises(anthropic.RateLimitError) as native:
        limited.anthropic().messages.create(model="rpm-claude", max_tokens=16,
                                            messages=MESSAGES)
    assert native.value.body["type"] == "error"
    assert native.value.body["error"]["code"] == "rate_limit_exceeded"
    assert native.value.response.headers["Retry-After"]
    # Bob is not limited by alice's rule, nor alice on other models.
    bob = limited.openai(token=BOB_TOKEN)
    assert bob.chat.completions.create(model="rpm-model", messages=MESSAGES).choices
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
    limited.wait_for_log(r'rejected POST /v1/chat/completions from alice: 429 rate limit '
                         r'"alice-rpm"')


def test_tokens_per_minute_are_charged_when_usage_is_known(limited, fake):
    """Each fake chat answer uses 11 input + 7 output tokens: the first (18 < 20) lets a second
    in, after which the team's window holds 36 tokens and refuses."""
    client = limited.openai()
    client.chat.completions.create(model="tpm-model", messages=MESSAGES)
    client.chat.completions.create(model="tpm-model", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="tpm-model", messages=MESSAGES)
    assert "20 tokens per minute (36 used)" in refused.value.message
    assert 55 <= int(refused.value.response.headers["Retry-After"]) <= 60
    assert chat_requests(fake, "tpm-model") == 2
    # Bob is not in team ml.
    limited.openai(token=BOB_TOKEN).chat.completions.create(model="tpm-model",
                                                            messages=MESSAGES)


def test_concurrent_limit_refuses_while_one_is_in_flight(limited, fake):
    gate = threading.Event()
    chunk = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"slow-1",'
             '"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n')
    fake.enqueue(Reply(events=[chunk, chunk, "data: [DONE]\n\n"], gate=gate),
                 path="/v1/chat/completions")

    async def run():
        client = limited.async_openai(token=BOB_TOKEN)
        stream = await client.chat.completions.create(model="slow-1", messages=MESSAGES,
                                                      stream=True)
        first = await stream.__anext__()  # in flight, held at the gate
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="slow-2", messages=MESSAGES)
        gate.set()
        rest = [c async for c in stream]
        after = await client.chat.completions.create(model="slow-3", messages=MESSAGES)
        await client.close()
        return first, rest, refused.value, after

    first, rest, refused, after = asyncio.run(run())
    assert first.choices[0].delta.content == "hi" and len(rest) == 1
    assert refused.response.headers["Retry-After"] == "1"
    assert '"one-at-a-time"' in refused.message and "1 request(s) in flight at most" in \
        refused.message
    assert after.choices[0].message.content  # the slot came back when the stream ended
    assert not fake.gate_timed_out


def test_websocket_frames_count_like_requests(limited, fake):
    """Each `response.create` on a Responses WebSocket is admitted like a request: the third
    within a minute gets an error frame, and the socket stays usable."""
    client = limited.openai()
    with client.responses.connect(websocket_connection_options={
            "ssl": limited.ssl_context(), "proxy": limited.proxy_url(),
            "open_timeout": 10}) as conn:
        for _ in range(2):
            conn.response.create(model="ws-model", input="hi")
            assert until_done(conn)[-1].type == "response.completed"
        conn.response.create(model="ws-model", input="third")
        refused = until_done(conn)[-1]
        assert refused.type == "error"
        assert refused.error.code == "rate_limit_exceeded"
        assert 'rate limit "socket-rpm"' in refused.error.message
        conn.response.create(model="gpt-5-codex", input="other model")  # not limited
        assert until_done(conn)[-1].type == "response.completed"
    assert [f["input"] for f in fake.ws_frames] == ["hi", "hi", "other model"]


def until_done(conn) -> list:
    events = []
    for event in conn:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "error"):
            break
    return events


def test_a_reload_applies_a_new_limit_and_keeps_the_window(fake, make_bridge):
    config = provider_config(fake.url, extra=LIMITS)
    bridge = make_bridge(config)
    client = bridge.openai()
    for _ in range(3):
        client.chat.completions.create(model="rpm-model", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="rpm-model", messages=MESSAGES)
    bridge.config_path.write_text(config.replace("rpm = 3", "rpm = 5"))
    bridge.wait_for_log("configuration reloaded")
    admitted = 0
    for _ in range(4):
        try:
            client.chat.completions.create(model="rpm-model", messages=MESSAGES)
            admitted += 1
        except openai.RateLimitError as e:
            assert "5 request(s) per minute" in e.message
            break
    assert admitted == 2  # the 3 of before still count: the window carried over
