"""rewrite_for_upstream on real mitmproxy requests (reference §2.1, design "Data path")."""

from pathlib import Path

import pytest
from mitmproxy import http

from aibridge.admission.credential import resolve_credential
from aibridge.config import BridgeConfig
from aibridge.intercept import Actor
from aibridge.providers import Provider, build_registry
from aibridge.upstream.rewrite import rewrite_for_upstream

OPENAI_KEY = "sk-central-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-api03-central-0123456789"
ALICE = Actor("alice", {"Username": "alice", "Team": "ml"})
BODY = b'{"model":"gpt-4o","messages":[]}'


def provider(name: str = "openai", **overrides) -> Provider:
    config = BridgeConfig.model_validate(
        {"providers": {name: {"credentials": "centralized", **overrides}}}
    )
    reg = build_registry(
        config,
        Path("/nonexistent"),
        environ={"AIBRIDGE_OPENAI_KEYS": OPENAI_KEY, "AIBRIDGE_ANTHROPIC_KEYS": ANTHROPIC_KEY},
    )
    return next(p for p in reg.providers if p.name == name)


def request(
    fields: list[tuple[str, str]],
    url: str = "https://api.openai.com/v1/chat/completions",
    body: bytes = BODY,
    method: str = "POST",
) -> http.Request:
    req = http.Request.make(method, url, body)
    req.headers = http.Headers(fields=[(n.encode(), v.encode()) for n, v in fields])
    return req


def rewrite(req: http.Request, p: Provider, actor: Actor = ALICE) -> http.Request:
    rewrite_for_upstream(req, p, resolve_credential(p, req.headers, None), actor)
    return req


def pairs(req: http.Request) -> list[tuple[str, str]]:
    return [(n.decode(), v.decode()) for n, v in req.headers.fields]


def lower_names(req: http.Request) -> list[str]:
    return [n.decode().lower() for n, _ in req.headers.fields]


def actor_pairs(req: http.Request) -> list[tuple[str, str]]:
    return [(n, v) for n, v in pairs(req) if n.lower().startswith("x-ai-bridge-actor")]


# -- stripped client headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "X-Api-Key",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Connection",
        "Keep-Alive",
        "Te",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Port",
        "X-Forwarded-Anything",
        "Forwarded",
        "Anthropic-Workspace-Id",
        "X-Coder-Agent-Firewall-Session-Id",
    ],
)
@pytest.mark.parametrize("name_provider", ["openai", "anthropic"])
def test_client_only_headers_are_removed(name, name_provider):
    # Only the client's value is checked: the bridge may set its own under the same name.
    req = rewrite(request([(name, "client-value"), ("User-Agent", "ua")]), provider(name_provider))
    assert "client-value" not in [v for _, v in pairs(req)]


def test_client_credential_is_replaced_by_the_central_key():
    req = rewrite(
        request([("Authorization", "Bearer sk-user"), ("X-Api-Key", "sk-user")]), provider("openai")
    )
    assert req.headers.get_all("authorization") == [f"Bearer {OPENAI_KEY}"]
    assert "x-api-key" not in req.headers


def test_anthropic_central_key_goes_in_x_api_key():
    req = rewrite(
        request(
            [("X-Api-Key", "sk-user"), ("Authorization", "Bearer oat")],
            url="https://api.anthropic.com/v1/messages",
        ),
        provider("anthropic"),
    )
    assert req.headers.get_all("x-api-key") == [ANTHROPIC_KEY]
    assert "authorization" not in req.headers


def test_spoofed_actor_headers_are_replaced_by_trusted_ones():
    req = rewrite(
        request(
            [
                ("X-AI-Bridge-Actor-ID", "mallory"),
                ("x-ai-bridge-actor-metadata-team", "admins"),
                ("X-AI-Bridge-Actor-Anything", "x"),
            ]
        ),
        provider(),
    )
    assert actor_pairs(req) == [
        ("X-AI-Bridge-Actor-ID", "alice"),
        ("X-AI-Bridge-Actor-Metadata-Username", "alice"),
        ("X-AI-Bridge-Actor-Metadata-Team", "ml"),
    ]


def test_actor_without_metadata_gets_only_the_id_header():
    req = rewrite(request([]), provider(), Actor("bob"))
    assert actor_pairs(req) == [("X-AI-Bridge-Actor-ID", "bob")]


def test_send_actor_headers_false_sends_none_and_still_strips_spoofed_ones():
    req = rewrite(
        request(
            [("X-AI-Bridge-Actor-ID", "mallory"), ("X-AI-Bridge-Actor-Metadata-Team", "admins")]
        ),
        provider(send_actor_headers=False),
    )
    assert actor_pairs(req) == []
    assert req.headers.get_all("authorization") == [f"Bearer {OPENAI_KEY}"]


# -- workspace id --------------------------------------------------------------------------------


def test_workspace_id_is_set_on_anthropic_providers():
    req = rewrite(
        request(
            [("Anthropic-Workspace-Id", "wrkspc_client")],
            url="https://api.anthropic.com/v1/messages",
        ),
        provider("anthropic", workspace_id="wrkspc_config"),
    )
    assert req.headers.get_all("anthropic-workspace-id") == ["wrkspc_config"]


def test_workspace_id_is_not_set_on_openai_providers():
    req = rewrite(
        request([("Anthropic-Workspace-Id", "wrkspc_client")]),
        provider("openai", workspace_id="wrkspc_config"),
    )
    assert "anthropic-workspace-id" not in req.headers


def test_no_workspace_id_configured_means_none_sent():
    req = rewrite(
        request(
            [("Anthropic-Workspace-Id", "wrkspc_client")],
            url="https://api.anthropic.com/v1/messages",
        ),
        provider("anthropic"),
    )
    assert "anthropic-workspace-id" not in req.headers


# -- transport headers ---------------------------------------------------------------------------


def test_accept_encoding_of_the_client_is_kept():
    req = rewrite(
        request([("Accept-Encoding", "gzip, br"), ("Accept-Encoding", "zstd")]), provider()
    )
    assert req.headers.get_all("accept-encoding") == ["gzip, br", "zstd"]


def test_no_accept_encoding_when_the_client_sent_none():
    assert "accept-encoding" not in rewrite(request([]), provider()).headers


def test_content_length_matches_the_body():
    req = rewrite(request([("Content-Length", "9999")]), provider())
    assert req.headers.get_all("content-length") == [str(len(BODY))]


def test_content_length_replaces_transfer_encoding_chunked():
    req = rewrite(request([("Transfer-Encoding", "chunked")]), provider())
    assert "transfer-encoding" not in req.headers
    assert req.headers.get_all("content-length") == [str(len(BODY))]


def test_empty_post_gets_content_length_zero():
    req = rewrite(request([], body=b""), provider())
    assert req.headers.get_all("content-length") == ["0"]


def test_get_without_body_gets_no_content_length():
    req = rewrite(
        request([], url="https://api.openai.com/v1/models", body=b"", method="GET"), provider()
    )
    assert "content-length" not in req.headers


def test_gzip_body_keeps_content_encoding_and_raw_length():
    raw = b"\x1f\x8b" + b"\x00" * 30
    req = rewrite(request([("Content-Encoding", "gzip")], body=raw), provider())
    assert req.headers["content-encoding"] == "gzip"
    assert req.headers["content-length"] == str(len(raw))
    assert req.raw_content == raw


def test_websocket_upgrade_keeps_its_handshake_headers():
    req = rewrite(
        request(
            [
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
            url="https://api.openai.com/v1/responses",
            body=b"",
            method="GET",
        ),
        provider(),
    )
    assert req.headers["connection"] == "Upgrade"
    assert req.headers["upgrade"] == "websocket"
    assert req.headers["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="


# -- destination ---------------------------------------------------------------------------------


def test_destination_is_the_configured_upstream():
    req = rewrite(request([("Host", "api.openai.com")]), provider(upstream="http://127.0.0.1:8080"))
    assert (req.scheme, req.host, req.port) == ("http", "127.0.0.1", 8080)
    assert req.headers.get_all("host") == ["127.0.0.1:8080"]
    assert lower_names(req)[0] == "host"
    assert req.url == "http://127.0.0.1:8080/v1/chat/completions"


def test_default_upstream_keeps_host_without_port():
    req = rewrite(request([("Host", "API.OpenAI.com")]), provider())
    assert (req.scheme, req.host, req.port) == ("https", "api.openai.com", 443)
    assert req.headers.get_all("host") == ["api.openai.com"]


def test_spoofed_host_header_does_not_choose_the_destination():
    req = rewrite(request([("Host", "evil.example")]), provider())
    assert req.host == "api.openai.com"
    assert req.headers.get_all("host") == ["api.openai.com"]


def test_upstream_path_prefix_is_prepended_and_query_kept():
    req = rewrite(
        request([], url="https://api.openai.com/v1/chat/completions?x=1&y=2"),
        provider(upstream="https://egress.corp:8443/openai/"),
    )
    assert req.path == "/openai/v1/chat/completions?x=1&y=2"
    assert req.url == "https://egress.corp:8443/openai/v1/chat/completions?x=1&y=2"


def test_query_kept_without_prefix():
    req = rewrite(request([], url="https://api.openai.com/v1/responses?stream=true"), provider())
    assert req.path == "/v1/responses?stream=true"


def test_http2_request_gets_authority_of_the_upstream():
    req = request([], url="https://api.openai.com/v1/chat/completions")
    req.http_version = "HTTP/2.0"
    req.authority = "api.openai.com"
    rewrite(req, provider(upstream="http://127.0.0.1:8080"))
    assert req.authority == "127.0.0.1:8080"
    assert "host" not in req.headers


# -- what passes verbatim ------------------------------------------------------------------------


def test_client_headers_pass_verbatim_in_order_with_repeats():
    client = [
        ("User-Agent", "OpenAI/Python 1.99.0"),
        ("Content-Type", "application/json"),
        ("OpenAI-Organization", "org-123"),
        ("OpenAI-Project", "proj_9"),
        ("x-stainless-lang", "python"),
        ("X-Stainless-Retry-Count", "0"),
        ("X-Custom", "a"),
        ("session_id", "s-1"),
        ("X-Custom", "b"),
    ]
    req = rewrite(request(client), provider())
    kept = [
        (n, v)
        for n, v in pairs(req)
        if n.lower() not in ("authorization", "content-length")
        and not n.lower().startswith("x-ai-bridge-actor")
    ]
    assert kept == client
    assert req.headers.get_all("x-custom") == ["a", "b"]


def test_anthropic_headers_pass_verbatim():
    client = [
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
        ("anthropic-beta", "interleaved-thinking-2025-05-14"),
        ("User-Agent", "claude-cli/2.0.0 (external, cli)"),
        ("X-Claude-Code-Session-Id", "abc"),
    ]
    req = rewrite(
        request(client, url="https://api.anthropic.com/v1/messages"), provider("anthropic")
    )
    kept = [
        (n, v)
        for n, v in pairs(req)
        if n.lower() not in ("x-api-key", "content-length")
        and not n.lower().startswith("x-ai-bridge-actor")
    ]
    assert kept == client


def test_body_is_untouched():
    req = rewrite(request([("Content-Type", "application/json")]), provider())
    assert req.raw_content == BODY


def test_byok_credential_goes_upstream_unchanged():
    p = provider("anthropic", credentials="byok")
    req = request(
        [("Authorization", "Bearer sk-ant-oat01-user")], url="https://api.anthropic.com/v1/messages"
    )
    rewrite(req, p)
    assert req.headers.get_all("authorization") == ["Bearer sk-ant-oat01-user"]
    assert "x-api-key" not in req.headers
