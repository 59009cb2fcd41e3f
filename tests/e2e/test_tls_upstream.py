"""A provider upstream that speaks HTTPS with its own CA, the way a regional endpoint or an
egress gateway with a private CA does.

The fake provider serves TLS with a trustme CA and a certificate for 127.0.0.1; the bridge's
`upstream` is `https://127.0.0.1:PORT` and mitmdump trusts that CA through
`ssl_verify_upstream_trusted_ca` (never `ssl_insecure`). Both legs to the provider have to
verify it: mitmproxy's own connection, and the addon's HTTP client that re-sends a request with
the next key after a 429. Without the CA the client must get the bridge's JSON 502.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import openai
import pytest

from tests.e2e.harness import OPENAI_KEY, BridgeProcess, provider_config
from tests.fakeprovider import TEXT, FakeProvider, Reply, tls_context_for

MESSAGES = [{"role": "user", "content": "hi"}]
KEYS = ["sk-tls-central-k1-aaaaaaaaaaaa", "sk-tls-central-k2-bbbbbbbbbbbb"]
CLIENT_KEY = "sk-user-placeholder"  # what the SDK sends; the bridge must replace it
TIMEOUT = 15.0  # SDK timeout: a hang fails the test instead of stalling it


@pytest.fixture(scope="module")
def upstream_tls() -> tuple[ssl.SSLContext, str]:
    """The fake's server context and the PEM file of the CA that issued its certificate."""
    return tls_context_for(["127.0.0.1"])


@pytest.fixture(scope="module")
def fake(upstream_tls: tuple[ssl.SSLContext, str]) -> Iterator[FakeProvider]:
    # Overrides conftest's plain-HTTP fake for this module (its autouse clear() still applies).
    with FakeProvider(tls=upstream_tls[0]) as provider:
        assert provider.url.startswith("https://127.0.0.1:")
        yield provider


def trusting(upstream_tls: tuple[ssl.SSLContext, str]) -> list[str]:
    return ["--set", f"ssl_verify_upstream_trusted_ca={upstream_tls[1]}"]


@pytest.fixture(scope="module")
def bridge(fake: FakeProvider, upstream_tls: tuple[ssl.SSLContext, str],
           make_bridge: Callable[..., BridgeProcess]) -> BridgeProcess:
    return make_bridge(provider_config(fake.url), args=trusting(upstream_tls))


def bearer(fake: FakeProvider) -> list[str | None]:
    return [r.header("authorization") for r in fake.requests]


def test_non_streaming_request_over_verified_tls(bridge: BridgeProcess,
                                                 fake: FakeProvider) -> None:
    reply = bridge.openai(timeout=TIMEOUT).chat.completions.create(model="gpt-4o",
                                                                   messages=MESSAGES)
    assert reply.choices[0].message.content == TEXT
    assert bearer(fake) == [f"Bearer {OPENAI_KEY}"]


def test_streaming_request_over_verified_tls(bridge: BridgeProcess, fake: FakeProvider) -> None:
    chunks = bridge.openai(timeout=TIMEOUT).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert bearer(fake) == [f"Bearer {OPENAI_KEY}"]
    assert fake.requests[0].json()["stream"] is True


def test_failover_resend_verifies_the_upstream_with_the_trusted_ca(
        fake: FakeProvider, upstream_tls: tuple[ssl.SSLContext, str],
        make_bridge: Callable[..., BridgeProcess]) -> None:
    """k1 gets a 429; the addon re-sends with k2 through its own HTTP client, on a connection of
    its own, which only succeeds if that client trusts the same CA as mitmproxy."""
    bridge = make_bridge(provider_config(fake.url), args=trusting(upstream_tls),
                         env={"AIBRIDGE_OPENAI_KEYS": ",".join(KEYS)})
    fake.enqueue(Reply(status=429, headers=[("retry-after", "5")],
                       body={"error": {"message": "Rate limit reached",
                                       "type": "rate_limit_error", "param": None,
                                       "code": "rate_limit_exceeded"}}))
    response = bridge.openai(timeout=TIMEOUT).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES)
    assert response.status_code == 200
    assert response.parse().choices[0].message.content == TEXT
    assert bearer(fake) == [f"Bearer {KEYS[0]}", f"Bearer {KEYS[1]}"]
    first, resent = fake.requests
    assert resent.conn != first.conn
    assert CLIENT_KEY not in str(first.headers) + str(resent.headers)


def test_untrusted_upstream_certificate_is_a_json_502(
        fake: FakeProvider, make_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = make_bridge(provider_config(fake.url))  # mitmproxy's default trust store only
    with pytest.raises(openai.APIStatusError) as info:
        bridge.openai(timeout=TIMEOUT).chat.completions.create(model="gpt-4o",
                                                               messages=MESSAGES)
    response = info.value.response
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["type"] == "api_error"
    # The provider and the host the client asked for; the upstream's address stays in the log.
    assert error["message"] == ("upstream openai (api.openai.com) unreachable: "
                                "TLS certificate verification failed")
    bridge.wait_for_log(rf"aibridge: openai: upstream 127\.0\.0\.1:{fake.port}: .*certificate")
    assert fake.requests == []  # the handshake failed: no request was sent over it
