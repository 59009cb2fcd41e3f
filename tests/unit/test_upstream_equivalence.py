"""The one-pass header rebuild equals the plain Headers-API composition it replaced.

`reference_*` below are the straightforward implementations (BuildUpstreamHeaders semantics
spelled out with mitmproxy's `Headers` methods); the fast versions must give the same fields,
in the same order and spelling, and aim the request at the same place, on random header sets.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mitmproxy import http

from aibridge.admission.credential import UpstreamCredential, resolve_credential
from aibridge.config import BridgeConfig
from aibridge.intercept import (
    STRIPPED_CLIENT_HEADERS,
    Actor,
    actor_headers,
    build_upstream_headers,
    is_actor_header,
    is_websocket_upgrade,
    prepare_client_headers,
)
from aibridge.providers import Provider, build_registry
from aibridge.upstream.rewrite import retarget, rewrite_for_upstream

# -- the reference ----------------------------------------------------------------------------


def _ref_tokens(headers: http.Headers) -> frozenset[str]:
    return frozenset(t.strip().lower() for v in headers.get_all("connection")
                     for t in v.split(",") if t.strip())


def reference_prepare(headers: http.Headers | None) -> http.Headers:
    if headers is None:
        return http.Headers()
    nominated = _ref_tokens(headers)

    def client_only(name: str) -> bool:
        lower = name.lower()
        return (lower in STRIPPED_CLIENT_HEADERS or lower in nominated
                or lower.startswith("x-forwarded-") or is_actor_header(lower))

    return http.Headers(fields=[(n, v) for n, v in headers.fields
                                if not client_only(n.decode("latin-1"))])


def reference_build(sdk: http.Headers | None, client: http.Headers | None,
                    auth_name: str) -> http.Headers:
    auth = auth_name.lower()
    fields = [(n, v) for n, v in reference_prepare(client).fields
              if n.decode("latin-1").lower() != auth]
    if sdk is not None:
        for n, v in sdk.fields:
            name = n.decode("latin-1").lower()
            if (auth and name == auth and v.strip()) or is_actor_header(name):
                fields.append((n, v))
    return http.Headers(fields=fields)


def reference_retarget(request: http.Request, provider: Provider) -> None:
    up = provider.upstream
    request.scheme = up.scheme
    request.host = up.host
    request.port = up.port
    if up.path:
        request.path = up.path + request.path


def reference_rewrite(request: http.Request, provider: Provider,
                      credential: UpstreamCredential, actor: Actor) -> None:
    trusted = http.Headers([(credential.header.encode(),
                              credential.value.encode("utf-8", "surrogateescape"))])
    if provider.send_actor_headers:
        for name, value in actor_headers(actor):
            trusted.add(name, value)
    headers = reference_build(trusted, request.headers, credential.header)
    if provider.workspace_id and provider.type == "anthropic":
        headers["Anthropic-Workspace-Id"] = provider.workspace_id
    for value in request.headers.get_all("accept-encoding"):
        headers.add("Accept-Encoding", value)
    if is_websocket_upgrade(request.method, request.headers):
        headers.add("Connection", "Upgrade")
        headers.add("Upgrade", request.headers["upgrade"])
    body = request.raw_content or b""
    if body or "content-length" in request.headers or request.method in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(len(body))
    if "host" in request.headers:
        headers.insert(0, "Host", request.headers["host"])
    request.headers = headers
    reference_retarget(request, provider)


# -- random inputs ----------------------------------------------------------------------------

NAMES = [
    "Host", "host", "HOST", "User-Agent", "Accept", "Content-Type", "content-length",
    "Content-Length", "Accept-Encoding", "accept-encoding", "Authorization", "authorization",
    "X-Api-Key", "x-api-key", "Api-Key", "Connection", "connection", "Upgrade", "upgrade",
    "Keep-Alive", "TE", "Trailer", "Transfer-Encoding", "Proxy-Authorization", "Proxy-Connection",
    "X-Forwarded-For", "x-forwarded-anything", "Forwarded", "X-AI-Bridge-Actor-ID",
    "x-ai-bridge-actor-metadata-team", "X-AI-Bridge-Request-ID", "Anthropic-Workspace-Id",
    "anthropic-version", "X-Coder-Agent-Firewall-Session-Id", "X-Hop", "x-hop", "X-Custom",
    "Sec-WebSocket-Key", "\u00c0-Latin", "Kelvin-\u212a", "",
]
VALUES = ["", " ", "v", "gzip, br", "keep-alive", "keep-alive, X-Hop", "Upgrade", "upgrade, x-hop",
          "websocket", "WebSocket, h2c", "Bearer sk-client-123", "sk-ant-client-456",
          "api.openai.com", "caf\u00e9", "\udcff\udcfe"]


def random_fields(rng: random.Random) -> list[tuple[bytes, bytes]]:
    fields = [(rng.choice(NAMES).encode(), rng.choice(VALUES).encode("utf-8", "surrogateescape"))
              for _ in range(rng.randrange(0, 14))]
    if rng.random() < 0.3:  # a WebSocket handshake, or most of one
        for field in ((b"Connection", b"keep-alive, Upgrade"), (b"upgrade", b"websocket")):
            if rng.random() < 0.9:
                fields.insert(rng.randrange(len(fields) + 1), field)
    return fields


def providers() -> list[Provider]:
    config = BridgeConfig.model_validate({"providers": {
        "openai": {"credentials": "centralized"},
        "anthropic": {"credentials": "auto", "workspace_id": "wrkspc_1"},
        "groq": {"type": "openai", "hosts": ["api.groq.com"], "credentials": "byok",
                 "upstream": "http://127.0.0.1:8443/openai", "send_actor_headers": False},
    }})
    reg = build_registry(config, Path("/nonexistent"), environ={
        "AIBRIDGE_OPENAI_KEYS": "sk-central-openai-0123456789",
        "AIBRIDGE_ANTHROPIC_KEYS": "sk-ant-api03-central-0123456789"})
    return list(reg.providers)


ACTORS = [Actor("alice", {"Username": "alice", "Team": "ml"}), Actor("root")]


def make_request(rng: random.Random, fields: list[tuple[bytes, bytes]]) -> http.Request:
    method = rng.choice(["POST", "GET", "get", "PUT", "DELETE"])
    body = rng.choice([b"", b'{"model":"gpt-4o"}'])
    url = rng.choice(["https://api.openai.com/v1/chat/completions?x=1",
                      "https://api.anthropic.com:443/v1/messages", "http://api.groq.com:8080/v1/x"])
    req = http.Request.make(method, url, body)
    req.headers = http.Headers(fields=fields)
    if rng.random() < 0.3:
        req.authority = "api.example.com:443"
    return req


def state(req: http.Request) -> tuple:
    return (req.headers.fields, req.scheme, req.host, req.port, req.authority, req.path,
            req.url)


# -- the comparisons --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_prepare_and_build_match_the_reference(seed):
    rng = random.Random(seed)
    for _ in range(50):
        client = http.Headers(fields=random_fields(rng))
        sdk = http.Headers(fields=random_fields(rng))
        auth = rng.choice(["Authorization", "x-api-key", "Api-Key", "X-Custom"])
        assert prepare_client_headers(client).fields == reference_prepare(client).fields
        assert build_upstream_headers(sdk, client, auth).fields == \
            reference_build(sdk, client, auth).fields
        assert build_upstream_headers(None, client, auth).fields == \
            reference_build(None, client, auth).fields
        assert build_upstream_headers(sdk, None, auth).fields == \
            reference_build(sdk, None, auth).fields


@pytest.mark.parametrize("seed", range(40))
def test_rewrite_and_retarget_match_the_reference(seed):
    rng = random.Random(1000 + seed)
    provs = providers()
    for _ in range(40):
        fields = random_fields(rng)
        provider = rng.choice(provs)
        actor = rng.choice(ACTORS)
        fast, ref = make_request(rng, fields), None
        ref = http.Request.from_state(fast.get_state())
        try:
            credential = resolve_credential(provider, fast.headers, None)
        except Exception:  # byok without a client key: nothing to rewrite
            continue
        reference_rewrite(ref, provider, credential, actor)
        rewrite_for_upstream(fast, provider, credential, actor)
        assert state(fast) == state(ref)

        fast, ref = make_request(rng, fields), None
        ref = http.Request.from_state(fast.get_state())
        retarget(fast, provider)
        reference_retarget(ref, provider)
        assert state(fast) == state(ref)


@pytest.mark.parametrize("seed", range(10))
def test_websocket_upgrade_matches_the_reference(seed):
    rng = random.Random(5000 + seed)
    for _ in range(200):
        headers = http.Headers(fields=random_fields(rng))
        method = rng.choice(["GET", "get", "POST"])
        upgrade = {t.strip().lower() for v in headers.get_all("upgrade") for t in v.split(",")}
        expected = method.upper() == "GET" and "upgrade" in _ref_tokens(headers) \
            and "websocket" in upgrade
        assert is_websocket_upgrade(method, headers) is expected


@pytest.mark.parametrize("seed", range(10))
def test_get_header_is_headers_get(seed):
    from aibridge.intercept import get_header

    rng = random.Random(9000 + seed)
    for _ in range(100):
        headers = http.Headers(fields=random_fields(rng))
        for name in ("host", "Content-Length", "UPGRADE", "x-custom", "absent", "kelvin-\u212a"):
            assert get_header(headers, name) == headers.get(name)
            assert get_header(headers, name, "d") == headers.get(name, "d")
