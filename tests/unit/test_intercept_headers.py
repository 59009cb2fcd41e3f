"""Upstream header building (reference §2.1, §10.1 items 1-13, 16, 17)."""

import pytest
from mitmproxy.http import Headers

from aibridge.intercept import (
    Actor,
    actor_headers,
    build_upstream_headers,
    parse_bearer,
    prepare_client_headers,
)
from aibridge.intercept.headers import without_actor_headers


def make(*pairs: tuple[str, str]) -> Headers:
    return Headers(fields=[(n.encode(), v.encode()) for n, v in pairs])


def pairs(headers: Headers) -> list[tuple[str, str]]:
    return [(n.decode(), v.decode()) for n, v in headers.fields]


def names(headers: Headers) -> set[str]:
    return {n.decode().lower() for n, _ in headers.fields}


def test_none_gives_empty_headers():
    assert pairs(prepare_client_headers(None)) == []
    assert pairs(build_upstream_headers(None, None, "Authorization")) == []


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Te",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Accept-Encoding",
        "Content-Length",
        "Authorization",
        "X-Api-Key",
        "Anthropic-Workspace-Id",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Port",
        "X-Forwarded-Client-Cert",
        "Forwarded",
        "X-Coder-Agent-Firewall-Session-Id",
        "X-Coder-Agent-Firewall-Sequence-Number",
        "X-AI-Bridge-Actor-ID",
        "X-AI-Bridge-Actor-Metadata-Email",
        "X-AI-Bridge-Actor-Metadata-Role",
    ],
)
@pytest.mark.parametrize("spelling", [str, str.lower, str.upper])
def test_client_only_headers_are_removed(name, spelling):
    client = make((spelling(name), "v"), ("X-Custom", "kept"))
    assert pairs(prepare_client_headers(client)) == [("X-Custom", "kept")]


def test_everything_else_passes_verbatim_in_order():
    client = make(
        ("User-Agent", "claude-code/1.0"),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("Anthropic-Beta", "prompt-caching-2024-07-31"),
        ("OpenAI-Organization", "org-1"),
        ("x-stainless-lang", "python"),
        ("X-Claude-Code-Session-Id", "s-1"),
        ("X-AI-Bridge-Request-ID", "not-an-actor-header"),
    )
    assert pairs(prepare_client_headers(client)) == pairs(client)


def test_multi_values_kept_in_order_and_spelling():
    client = make(
        ("X-Custom", "a"),
        ("Host", "api.openai.com"),
        ("x-custom", "b"),
        ("Accept", "text/html"),
        ("X-CUSTOM", "c"),
    )
    assert pairs(prepare_client_headers(client)) == [
        ("X-Custom", "a"),
        ("x-custom", "b"),
        ("Accept", "text/html"),
        ("X-CUSTOM", "c"),
    ]


def test_headers_named_by_connection_are_removed():
    client = make(
        ("Connection", "keep-alive, X-Hop-Secret"),
        ("Connection", " x-other-hop "),
        ("X-Hop-Secret", "1"),
        ("X-Other-Hop", "2"),
        ("X-Custom", "kept"),
    )
    assert pairs(prepare_client_headers(client)) == [("X-Custom", "kept")]


def test_inputs_are_never_mutated():
    client = make(
        ("Authorization", "Bearer coder-session-token"),
        ("X-AI-Bridge-Actor-ID", "spoofed"),
        ("Host", "api.openai.com"),
        ("X-Custom", "a"),
        ("X-Custom", "b"),
    )
    sdk = make(
        ("Authorization", "Bearer sk-provider-key"),
        ("X-AI-Bridge-Actor-ID", "user-123"),
        ("User-Agent", "OpenAI/Python"),
    )
    client_before, sdk_before = client.fields, sdk.fields

    prepared = prepare_client_headers(client)
    result = build_upstream_headers(sdk, client, "Authorization")

    assert client.fields == client_before
    assert sdk.fields == sdk_before
    assert prepared is not client
    assert result is not client and result is not sdk
    # Editing the results leaves the inputs alone as well.
    result["X-Custom"] = "changed"
    prepared["X-Custom"] = "changed"
    assert client.fields == client_before


def test_sdk_bearer_replaces_client_token():
    client = make(
        ("Authorization", "Bearer coder-session-token"), ("User-Agent", "claude-code/1.0")
    )
    sdk = make(("Authorization", "Bearer sk-provider-key"), ("User-Agent", "OpenAI/Python 3"))
    assert pairs(build_upstream_headers(sdk, client, "Authorization")) == [
        ("User-Agent", "claude-code/1.0"),
        ("Authorization", "Bearer sk-provider-key"),
    ]


def test_sdk_api_key_kept_and_client_authorization_dropped():
    client = make(
        ("Authorization", "Bearer coder-session-token"),
        ("Anthropic-Beta", "prompt-caching-2024-07-31"),
    )
    sdk = make(("X-Api-Key", "sk-ant-provider"), ("anthropic-version", "2023-06-01"))
    assert pairs(build_upstream_headers(sdk, client, "x-api-key")) == [
        ("Anthropic-Beta", "prompt-caching-2024-07-31"),
        ("X-Api-Key", "sk-ant-provider"),
    ]


def test_all_values_of_the_auth_header_are_copied():
    sdk = make(("X-Api-Key", "k1"), ("Other", "x"), ("x-api-key", "k2"))
    assert pairs(build_upstream_headers(sdk, None, "X-Api-Key")) == [
        ("X-Api-Key", "k1"),
        ("x-api-key", "k2"),
    ]


@pytest.mark.parametrize(
    ("sdk", "auth_name"),
    [
        (make(("Authorization", "")), "Authorization"),
        (make(("Authorization", "   ")), "Authorization"),
        (make(("Authorization", "Bearer sk")), ""),
        (make(), "Authorization"),
        (None, "Authorization"),
    ],
)
def test_empty_sdk_auth_gives_no_auth_header(sdk, auth_name):
    client = make(("Authorization", "Bearer coder-session-token"), ("X-Custom", "kept"))
    assert pairs(build_upstream_headers(sdk, client, auth_name)) == [("X-Custom", "kept")]


def test_auth_header_outside_the_default_set_is_bridge_owned():
    # e.g. Azure OpenAI's `api-key`: the client's value must not ride along with the bridge's.
    client = make(("Api-Key", "client-key"), ("X-Custom", "kept"))
    sdk = make(("api-key", "sk-azure"))
    assert pairs(build_upstream_headers(sdk, client, "Api-Key")) == [
        ("X-Custom", "kept"),
        ("api-key", "sk-azure"),
    ]


def test_other_sdk_headers_are_discarded():
    sdk = make(
        ("Authorization", "Bearer sk"),
        ("User-Agent", "OpenAI/Python"),
        ("x-stainless-retry-count", "0"),
        ("anthropic-version", "2023-06-01"),
        ("Content-Type", "application/json"),
    )
    assert names(build_upstream_headers(sdk, None, "Authorization")) == {"authorization"}


def test_client_actor_headers_always_stripped_and_trusted_ones_set():
    client = make(
        ("X-AI-Bridge-Actor-ID", "client-id"),
        ("x-ai-bridge-actor-metadata-email", "ceo@example.com"),
        ("X-Ai-Bridge-Actor-Metadata-Role", "admin"),
        ("X-AI-Bridge-Request-ID", "req-1"),
        ("X-Unrelated", "kept"),
    )
    sdk = make(("X-AI-Bridge-Actor-ID", "user-123"))
    assert pairs(build_upstream_headers(sdk, client, "Authorization")) == [
        ("X-AI-Bridge-Request-ID", "req-1"),
        ("X-Unrelated", "kept"),
        ("X-AI-Bridge-Actor-ID", "user-123"),
    ]
    # Without trusted values nothing of the client's survives.
    assert names(build_upstream_headers(None, client, "Authorization")) == {
        "x-ai-bridge-request-id",
        "x-unrelated",
    }


def test_authenticated_actor_overrides_client_and_sdk_to_single_values():
    actor = Actor("user-123", {"Username": "alice", "Team": "ml"})
    client = make(
        ("X-AI-Bridge-Actor-ID", "client-id"),
        ("X-AI-Bridge-Actor-ID", "client-id-2"),
        ("X-AI-Bridge-Actor-Metadata-Username", "mallory"),
    )
    sdk = make(("Authorization", "Bearer sk"), *actor_headers(actor))
    result = build_upstream_headers(sdk, client, "Authorization")
    assert result.get_all("x-ai-bridge-actor-id") == ["user-123"]
    assert result.get_all("x-ai-bridge-actor-metadata-username") == ["alice"]
    assert result.get_all("x-ai-bridge-actor-metadata-team") == ["ml"]
    assert result.get_all("authorization") == ["Bearer sk"]


UNDERSCORE_SPELLINGS = ["X_AI_Bridge_Actor_Id", "x_ai_bridge_actor_metadata_username",
                        "X-AI_Bridge-Actor_ID", "X_AI-BRIDGE_ACTOR-METADATA-TEAM"]


@pytest.mark.parametrize("name", UNDERSCORE_SPELLINGS)
def test_actor_headers_with_underscores_are_stripped_too(name):
    """Servers that turn header names into variables (CGI, WSGI, nginx with
    underscores_in_headers) read `X_AI_Bridge_Actor_Id` as `X-AI-Bridge-Actor-Id`."""
    actor = Actor("user-123", {"Username": "alice"})
    client = make((name, "mallory"), ("X_Custom_Header", "kept"))
    assert pairs(prepare_client_headers(client)) == [("X_Custom_Header", "kept")]
    result = build_upstream_headers(make(*actor_headers(actor)), client, "Authorization")
    assert [n for n, v in pairs(result) if v == "mallory"] == []


@pytest.mark.parametrize("name", ["X-AI-Bridge-Actor-ID", *UNDERSCORE_SPELLINGS])
def test_untouched_routes_lose_only_the_actor_headers(name):
    client = make(("Authorization", "Bearer own"), (name, "mallory"),
                  ("Cookie", "session=1"), ("X-AI-Bridge-Request-ID", "r1"))
    assert pairs(without_actor_headers(client)) == [
        ("Authorization", "Bearer own"), ("Cookie", "session=1"), ("X-AI-Bridge-Request-ID", "r1")]
    assert len(client.fields) == 4  # a new object


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer sk-123", "sk-123"),
        ("bearer sk-123", "sk-123"),
        ("BEARER sk-123", "sk-123"),
        ("  Bearer   sk-123  ", "sk-123"),
        ("Bearer\tsk-123", "sk-123"),
        ("Bearer", None),
        ("Bearer ", None),
        ("some-token", None),
        ("Bearer a b", None),
        ("Basic dXNlcjpwYXNz", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bearer(value, token):
    assert parse_bearer(value) == token


@pytest.mark.parametrize(
    ("method", "connection", "upgrade", "expected"),
    [
        ("GET", "keep-alive, Upgrade", "WebSocket", True),
        ("GET", "Upgrade", "websocket", True),
        ("POST", "Upgrade", "websocket", False),
        ("GET", "keep-alive", "websocket", False),
        ("GET", "Upgrade", "h2c", False),
    ],
)
def test_websocket_upgrade_detection(method, connection, upgrade, expected):
    from aibridge.intercept import is_websocket_upgrade

    headers = Headers(connection=connection, upgrade=upgrade)
    assert is_websocket_upgrade(method, headers) is expected
