"""The upstream header set for bridged routes (reference §2.1, BuildUpstreamHeaders semantics).

The client's headers pass through verbatim (order, spelling, repeated values) except the groups
below, which are either meaningless once the bridge acts as the client or must only ever come
from the bridge itself. Functions work on `mitmproxy.http.Headers` and always return new objects.
"""

from __future__ import annotations

from mitmproxy.http import Headers

from .actor import is_actor_header

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The HTTP stack sets these for the upstream hop; without Accept-Encoding it negotiates its own.
TRANSPORT_MANAGED = frozenset({"host", "accept-encoding", "content-length"})
# The client's credential is replaced by the one the bridge chooses.
CLIENT_AUTH = frozenset({"authorization", "x-api-key"})
# The bridge is a client of the provider, not a proxy in its path.
PROXY_PATH = frozenset(
    {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "forwarded"}
)
PROXY_PATH_PREFIX = "x-forwarded-"
# Correlation values go into the interception record, never upstream (reference §2.5).
AGENT_FIREWALL = frozenset(
    {"x-coder-agent-firewall-session-id", "x-coder-agent-firewall-sequence-number"}
)
# Set from provider configuration when needed, never taken from the client.
BILLING_ISOLATION = frozenset({"anthropic-workspace-id"})

STRIPPED_CLIENT_HEADERS = (
    HOP_BY_HOP | TRANSPORT_MANAGED | CLIENT_AUTH | PROXY_PATH | AGENT_FIREWALL | BILLING_ISOLATION
)


def _name(raw: bytes) -> str:
    # Header names are ASCII tokens; latin-1 never fails, so odd bytes cannot crash the filter.
    return raw.decode("latin-1")


def _connection_tokens(headers: Headers) -> frozenset[str]:
    """Header names the sender declared hop-by-hop in `Connection` (RFC 9110 §7.6.1)."""
    return frozenset(
        token.strip().lower()
        for value in headers.get_all("connection")
        for token in value.split(",")
        if token.strip()
    )


def _is_client_only(name: str, nominated: frozenset[str]) -> bool:
    lower = name.lower()
    return (
        lower in STRIPPED_CLIENT_HEADERS
        or lower in nominated
        or lower.startswith(PROXY_PATH_PREFIX)
        or is_actor_header(lower)
    )


def prepare_client_headers(headers: Headers | None) -> Headers:
    """A copy of the client headers without the ones that must not reach the provider."""
    if headers is None:
        return Headers()
    nominated = _connection_tokens(headers)
    return Headers(
        fields=[(n, v) for n, v in headers.fields if not _is_client_only(_name(n), nominated)]
    )


def build_upstream_headers(
    sdk_headers: Headers | None, client_headers: Headers | None, auth_header_name: str
) -> Headers:
    """Client headers (prepared) + the credential's auth header + trusted actor headers.

    From `sdk_headers` (what the bridge built for the provider) only the auth header and actor
    headers survive; everything else the SDK would have added is discarded so the client's own
    `User-Agent`, `anthropic-version`, `anthropic-beta`, ... reach the provider unchanged. The auth
    header is bridge-owned: a client value under that name never passes, even for names outside
    CLIENT_AUTH (e.g. Azure's `Api-Key`).
    """
    auth = auth_header_name.lower()
    fields = [
        (n, v) for n, v in prepare_client_headers(client_headers).fields if _name(n).lower() != auth
    ]
    if sdk_headers is not None:
        for n, v in sdk_headers.fields:
            name = _name(n).lower()
            if (auth and name == auth and v.strip()) or is_actor_header(name):
                fields.append((n, v))
    return Headers(fields=fields)


def parse_bearer(value: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (reference §4.2), else None.

    Exactly two whitespace-separated fields are required: `Bearer`, `token` and `Bearer a b` yield
    no token.
    """
    if value is None:
        return None
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


def is_websocket_upgrade(method: str, headers: Headers) -> bool:
    """A WebSocket handshake: GET with `Connection: upgrade` and `Upgrade: websocket` tokens."""
    upgrade = {t.strip().lower() for v in headers.get_all("upgrade") for t in v.split(",")}
    return method.upper() == "GET" and "upgrade" in _connection_tokens(headers) \
        and "websocket" in upgrade
