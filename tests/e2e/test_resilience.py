"""Key failover, exhaustion, error conversion and the circuit breaker, end to end with the real
SDKs (reference §10.2 to §10.4 adapted) for chat, responses and messages, streaming and not."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.e2e.harness import ALICE_TOKEN, provider_config
from tests.fakeprovider import Reply

KEYS = ["sk-pool-key-0-aaaaaaaaaaaa", "sk-pool-key-1-bbbbbbbbbbbb", "sk-pool-key-2-cccccccccccc"]
ROUTES = ["chat", "responses", "messages"]
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT_COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                   "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "Hello from fake"}}]}


@pytest.fixture
def bridge3(fake, make_bridge):
    """A fresh bridge (fresh key states) with three central keys per provider."""
    bridge = make_bridge(provider_config(fake.url), env={
        "AIBRIDGE_OPENAI_KEYS": ",".join(KEYS), "AIBRIDGE_ANTHROPIC_KEYS": ",".join(KEYS)})
    yield bridge
    bridge.stop()


def keys_seen(fake) -> list[int]:
    seen = []
    for r in fake.requests:
        value = r.header("x-api-key") or (r.header("authorization") or "").removeprefix("Bearer ")
        seen.append(KEYS.index(value))
    return seen


def call(bridge, route: str, *, stream: bool, max_retries: int = 0) -> str:
    """One request through the real SDK; returns the text the model 'said'."""
    if route == "messages":
        client = bridge.anthropic(max_retries=max_retries)
        if stream:
            with client.messages.stream(model="claude-sonnet-5", max_tokens=8,
                                        messages=MESSAGES) as s:
                return s.get_final_message().content[0].text
        return client.messages.create(model="claude-sonnet-5", max_tokens=8,
                                      messages=MESSAGES).content[0].text
    client = bridge.openai(max_retries=max_retries)
    if route == "chat":
        if stream:
            chunks = client.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                    stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return client.chat.completions.create(model="gpt-4o",
                                              messages=MESSAGES).choices[0].message.content
    if stream:
        with client.responses.stream(model="gpt-5", input="hi") as s:
            return s.get_final_response().output_text
    return client.responses.create(model="gpt-5", input="hi").output_text


def path(route: str) -> str:
    return {"chat": "/v1/chat/completions", "responses": "/v1/responses",
            "messages": "/v1/messages"}[route]


def rate_limited(retry_after: str = "5") -> Reply:
    return Reply(status=429, headers=[("retry-after", retry_after),
                                      ("x-ratelimit-remaining-requests", "0")],
                 body={"error": {"message": "Rate limit reached", "type": "rate_limit_error",
                                 "param": None, "code": "rate_limit_exceeded"}})


def refused(status: int) -> Reply:
    return Reply(status=status, body={"error": {"message": "Incorrect API key provided",
                                                "type": "authentication_error",
                                                "param": None, "code": "invalid_api_key"}})


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("stream", [False, True])
def test_single_valid_key(bridge3, fake, route, stream):
    assert call(bridge3, route, stream=stream) == "Hello from fake"
    assert keys_seen(fake) == [0]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("reply", [rate_limited(), refused(401), refused(403)],
                         ids=["429", "401", "403"])
def test_blocking_failover_is_transparent(bridge3, fake, route, reply):
    fake.enqueue(reply)
    assert call(bridge3, route, stream=False) == "Hello from fake"
    assert keys_seen(fake) == [0, 1]
    # The refused key stays out of the way for the next request.
    assert call(bridge3, route, stream=False) == "Hello from fake"
    assert keys_seen(fake) == [0, 1, 1]
    bridge3.wait_for_log(r"credential=centralized:sk-p\.\.\.bbbb .* outcome=completed")


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("reply", [rate_limited(), refused(401)], ids=["429", "401"])
def test_streaming_failover_through_sdk_retries(bridge3, fake, route, reply):
    """A stream cannot be re-sent inside its flow: the SDK's own retry picks the next key."""
    fake.enqueue(reply)
    assert call(bridge3, route, stream=True, max_retries=2) == "Hello from fake"
    assert keys_seen(fake) == [0, 1]


@pytest.mark.parametrize("route", ROUTES)
def test_streaming_failover_without_retries_names_the_reason(bridge3, fake, route):
    fake.enqueue(rate_limited())
    error_type = anthropic.RateLimitError if route == "messages" else openai.RateLimitError
    with pytest.raises(error_type) as info:
        call(bridge3, route, stream=True, max_retries=0)
    response = info.value.response
    assert response.headers["x-should-retry"] == "true"
    assert response.headers["retry-after-ms"] == "1"
    assert "was rate-limited; a retry uses the next key" in str(info.value)
    assert keys_seen(fake) == [0]


@pytest.mark.parametrize("route", ROUTES)
def test_all_keys_rate_limited(bridge3, fake, route):
    for seconds in ("5", "3", "10"):
        fake.enqueue(rate_limited(seconds))
    error_type = anthropic.RateLimitError if route == "messages" else openai.RateLimitError
    with pytest.raises(error_type) as info:
        call(bridge3, route, stream=False)
    assert keys_seen(fake) == [0, 1, 2]
    assert info.value.response.status_code == 429
    assert info.value.response.headers["retry-after"] == "3"
    assert "all configured keys are rate-limited (retry after 3s)" in str(info.value)
    body = info.value.response.json()
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["code"] == "rate_limit_exceeded"
    # Now every key is cooling: the next request is answered without touching the provider.
    fake.clear()
    with pytest.raises(error_type):
        call(bridge3, route, stream=True)
    assert fake.requests == []


@pytest.mark.parametrize("route", ROUTES)
def test_all_keys_unauthorized(bridge3, fake, route):
    for _ in KEYS:
        fake.enqueue(refused(401))
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as info:
        call(bridge3, route, stream=False)
    assert info.value.response.status_code == 502
    body = info.value.response.json()
    assert body["error"]["message"] == "all configured keys failed authentication"
    assert (body["error"]["type"], body["error"]["code"]) == ("api_error", "server_error")
    assert keys_seen(fake) == [0, 1, 2]


@pytest.mark.parametrize("route", ROUTES)
def test_server_error_does_not_fail_over(bridge3, fake, route):
    fake.enqueue(Reply(status=500, body={"error": {"message": "boom", "type": "server_error",
                                                   "param": None, "code": None}}))
    with pytest.raises((openai.InternalServerError, anthropic.InternalServerError)):
        call(bridge3, route, stream=False)
    assert keys_seen(fake) == [0]
    assert call(bridge3, route, stream=False) == "Hello from fake"
    assert keys_seen(fake) == [0, 0]


def test_byok_never_fails_over(bridge3, fake):
    fake.enqueue(rate_limited("5"))
    client = bridge3.anthropic(api_key="sk-ant-own-key-0000111122223333")
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-sonnet-5", max_tokens=8, messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "5"
    assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(fake.requests) == 1
    assert fake.requests[0].header("authorization") == "Bearer sk-ant-own-key-0000111122223333"


def test_proactive_skip_when_remaining_reaches_zero(bridge3, fake):
    fake.enqueue(Reply(body=CHAT_COMPLETION, headers=[("x-ratelimit-remaining-requests", "0"),
                                                      ("x-ratelimit-reset-requests", "20s")]))
    call(bridge3, "chat", stream=False)
    call(bridge3, "chat", stream=False)
    assert keys_seen(fake) == [0, 1]  # k0 said it had no requests left: skipped before any 429


# -- error conversion ----------------------------------------------------------------------


def curl_error(bridge, host: str, path: str, body: dict, token: str = ALICE_TOKEN):
    result = bridge.curl("-s", "-D", "-", "--suppress-connect-headers", f"https://{host}{path}",
                         "-H",
                         "Content-Type: application/json", "-d", json.dumps(body), token=token)
    head, _, payload = result.stdout.partition("\n\n")  # text mode turned CRLF into LF
    status = int(head.split()[1])
    headers = {k.lower(): v for k, _, v in
               (line.partition(": ") for line in head.split("\n")[1:])}
    return status, headers, json.loads(payload)


@pytest.mark.parametrize(("status", "content_type", "body", "error_type"), [
    (502, "text/html", b"<html><head><title>502 Bad Gateway</title></head><body>cf</body></html>",
     "api_error"),
    (503, "text/plain", b"upstream connect error", "api_error"),
    (500, "text/plain", b"", "api_error"),
    (404, "text/html", b"<h1>Not Found</h1>", "not_found_error"),
])
def test_non_json_provider_errors_become_the_envelope(bridge, fake, status, content_type, body,
                                                      error_type):
    fake.enqueue(Reply(status=status, body=body, headers=[("content-type", content_type),
                                                          ("x-ratelimit-remaining-tokens", "9")]))
    got, headers, payload = curl_error(bridge, "api.openai.com", "/v1/chat/completions",
                                       {"model": "gpt-4o", "messages": MESSAGES})
    assert got == status
    assert headers["content-type"] == "application/json"
    assert headers["x-ratelimit-remaining-tokens"] == "9"
    assert headers["x-request-id"].startswith("req_fake")
    assert payload["error"]["type"] == error_type
    assert payload["error"]["message"].startswith(f"openai returned HTTP {status}")
    assert set(payload["error"]) == {"message", "type", "param", "code"}


def test_anthropic_overloaded_and_openai_json_errors_pass_intact(bridge, fake):
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake.enqueue(Reply(status=529, body=overloaded))
    with pytest.raises(anthropic.APIStatusError) as info:
        bridge.anthropic().messages.create(model="claude-sonnet-5", max_tokens=8,
                                           messages=MESSAGES)
    assert info.value.status_code == 529
    assert info.value.body == overloaded
    too_long = {"error": {"message": "This model's maximum context length is 128000 tokens",
                          "type": "invalid_request_error", "param": "messages",
                          "code": "context_length_exceeded"}}
    fake.enqueue(Reply(status=400, body=too_long))
    with pytest.raises(openai.BadRequestError) as info:
        bridge.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "messages")


def test_error_format_openai_normalises_provider_errors(fake, make_bridge):
    bridge = make_bridge(provider_config(fake.url,
                                         extra='[resilience]\nerror_format = "openai"\n'))
    fake.enqueue(Reply(status=529, body={"type": "error", "request_id": "req_1", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}))
    status, _, payload = curl_error(bridge, "api.anthropic.com", "/v1/messages",
                                    {"model": "claude-sonnet-5", "max_tokens": 8,
                                     "messages": MESSAGES})
    assert status == 529
    assert payload == {"type": "error", "error": {"message": "Overloaded",
                                                  "type": "overloaded_error", "param": None,
                                                  "code": None}}
    bridge.stop()


# -- circuit breaker -----------------------------------------------------------------------


def test_circuit_breaker_cycle(fake, make_bridge):
    import time

    extra = ("[resilience.circuit]\nfailures = 2\nwindow = 10\nopen_for = 1.5\n"
             "half_open_probes = 1\n")
    bridge = make_bridge(provider_config(fake.url, extra=extra))
    client = bridge.openai()
    for _ in range(2):
        fake.enqueue(Reply(status=503, body={"error": {"message": "down", "type": "api_error",
                                                       "param": None, "code": None}}))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-a", messages=MESSAGES)
    assert len(fake.requests) == 2
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-a", messages=MESSAGES)
    assert info.value.status_code == 503
    assert info.value.response.json()["error"]["message"] == "circuit breaker is open"
    assert info.value.response.headers["retry-after"] in ("1", "2")
    assert len(fake.requests) == 2  # rejected without touching the provider
    # Another model is unaffected.
    client.chat.completions.create(model="gpt-b", messages=MESSAGES)
    assert len(fake.requests) == 3
    # After open_for, one probe is admitted; its success closes the breaker.
    time.sleep(1.6)
    client.chat.completions.create(model="gpt-a", messages=MESSAGES)
    client.chat.completions.create(model="gpt-a", messages=MESSAGES)
    assert len(fake.requests) == 5
    bridge.stop()
