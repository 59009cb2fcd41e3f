"""Upstream header set for bridged routes, BuildUpstreamHeaders semantics (docs/behaviour.md §2).

The client's headers pass through verbatim (order, spelling, repeated values) except the groups
below, which are either meaningless once the bridge acts as the client or must only ever come
from the bridge itself. Functions work on `mitmproxy.http.Headers` and always return new objects.
"""

from __future__ import annotations

from collections.abc import Iterable

from mitmproxy.http import Headers

from aibridge.intercept.actor import _ACTOR_PREFIX_LOWER, is_actor_header

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
# Coder's Agent Firewall correlation headers: meant for its gateway, meaningless to a provider.
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


def _native(raw: bytes) -> str:
    # How mitmproxy's Headers decode values (get_all, [] and get).
    return raw.decode("utf-8", "surrogateescape")


# Raw header name -> (its lowercase latin-1 name, whether it is stripped whatever the request).
# Clients send a handful of distinct spellings, so the filter below costs one dict lookup per
# field instead of a decode, a lower() and four membership tests; bounded against odd clients.
_CLASSIFIED: dict[bytes, tuple[str, bool]] = {}
_CLASSIFIED_MAX = 1024


def _classify(raw: bytes) -> tuple[str, bool]:
    known = _CLASSIFIED.get(raw)
    if known is None:
        lower = _name(raw).lower()
        known = (lower, lower in STRIPPED_CLIENT_HEADERS or lower.startswith(PROXY_PATH_PREFIX)
                 or is_actor_header(lower))
        if len(_CLASSIFIED) >= _CLASSIFIED_MAX:
            _CLASSIFIED.clear()
        _CLASSIFIED[raw] = known
    return known


def _tokens(values: list[str]) -> frozenset[str]:
    """Comma-separated tokens of header values, trimmed and lowercase (empty ones dropped)."""
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def split_client_headers(
    fields: Iterable[tuple[bytes, bytes]], auth: str | None = None
) -> tuple[list[tuple[bytes, bytes]], dict[str, list[bytes]]]:
    """One pass over raw client header fields: the ones that may go upstream, in order, and the
    stripped ones by lowercase name (raw values, in order).

    The verdict of `prepare_client_headers`: stripped are the groups above, names `Connection`
    nominates (RFC 9110 §7.6.1; dropped but not listed) and, when given, the name `auth`
    (lowercase; dropped, not listed), as `build_upstream_headers` drops it.
    """
    kept: list[tuple[bytes, bytes]] = []
    kept_names: list[str] = []
    stripped: dict[str, list[bytes]] = {}
    classify = _CLASSIFIED.get
    for field in fields:
        known = classify(field[0]) or _classify(field[0])
        if known[1]:
            values = stripped.get(known[0])
            if values is None:
                stripped[known[0]] = [field[1]]
            else:
                values.append(field[1])
        elif auth is None or known[0] != auth:
            kept.append(field)
            kept_names.append(known[0])
    if "connection" in stripped:
        nominated = _tokens([_native(v) for v in stripped["connection"]])
        if nominated:
            kept = [f for f, name in zip(kept, kept_names, strict=True) if name not in nominated]
    return kept, stripped


def _new_headers(fields: list[tuple[bytes, bytes]]) -> Headers:
    # Headers(fields=...) re-copies and re-checks every field; these come from Headers already.
    headers = Headers()
    headers.fields = tuple(fields)
    return headers


def prepare_client_headers(headers: Headers | None) -> Headers:
    """A copy of the client headers without the ones that must not reach the provider."""
    if headers is None:
        return Headers()
    return _new_headers(split_client_headers(headers.fields)[0])


def upstream_fields(
    client: list[tuple[bytes, bytes]],
    sdk_fields: Iterable[tuple[bytes, bytes]],
    auth: str,
) -> list[tuple[bytes, bytes]]:
    """`client` (already split with `auth`) extended by the auth and actor headers of
    `sdk_fields`: the field list `build_upstream_headers` returns. Extends `client` in place."""
    for n, v in sdk_fields:
        name = _name(n).lower()
        if (auth and name == auth and v.strip()) or name.startswith(_ACTOR_PREFIX_LOWER):
            client.append((n, v))
    return client


def without_actor_headers(headers: Headers) -> Headers:
    """`headers` minus every client-sent actor header (any case, `_` for `-`), the rest as sent:
    for routes forwarded untouched, where no other header is changed."""
    return _new_headers([f for f in headers.fields if not is_actor_header(_name(f[0]))])


def upstream_header_fields(
    client: Iterable[tuple[bytes, bytes]], sdk_fields: Iterable[tuple[bytes, bytes]], auth: str
) -> tuple[list[tuple[bytes, bytes]], dict[str, list[bytes]]]:
    """The one pass behind `build_upstream_headers`, on raw fields: the upstream field list,
    and the client's stripped hop-by-hop and framing values by name, which a transport that
    re-frames the request (the addon's rewrite) puts back where the protocol needs them."""
    fields, stripped = split_client_headers(client, auth)
    return upstream_fields(fields, sdk_fields, auth), stripped


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
    fields, _stripped = upstream_header_fields(
        client_headers.fields if client_headers is not None else (),
        sdk_headers.fields if sdk_headers is not None else (), auth_header_name.lower())
    return _new_headers(fields)


def get_header(headers: Headers, name: str, default: str | None = None) -> str | None:
    """`headers.get(name, default)` in one pass over the raw fields, several times cheaper:
    case-insensitive, repeated fields folded with ", " as mitmproxy folds them."""
    key = name.encode("utf-8", "surrogateescape").lower()
    values = [v for n, v in headers.fields if n.lower() == key]
    if not values:
        return default
    return ", ".join([_native(v) for v in values])


def parse_bearer(value: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (docs/behaviour.md §4.1), else None.

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
    if method.upper() != "GET":  # checked first: no header is read for the usual POST
        return False
    return websocket_upgrade_tokens(headers.get_all("connection"), headers.get_all("upgrade"))


def websocket_upgrade_tokens(connection: list[str], upgrade: list[str]) -> bool:
    """The header half of `is_websocket_upgrade`, from the decoded header values."""
    return "upgrade" in _tokens(connection) and "websocket" in {
        t.strip().lower() for v in upgrade for t in v.split(",")
    }
