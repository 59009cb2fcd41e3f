"""Turn a decrypted client request into the request the provider receives."""

from __future__ import annotations

from urllib.parse import unquote_plus

from mitmproxy import http
from mitmproxy.net.http.url import hostport

from aibridge.admission.credential import UpstreamCredential
from aibridge.intercept import Actor, actor_headers
from aibridge.intercept.headers import (
    _native,
    _new_headers,
    upstream_header_fields,
    websocket_upgrade_tokens,
)
from aibridge.providers import Provider, Upstream
from aibridge.upstream import sigv4

_BODY_METHODS = ("POST", "PUT", "PATCH")


def _encode(value: str) -> bytes:
    # What mitmproxy's Headers do with a str name or value.
    return value.encode("utf-8", "surrogateescape")


def rewrite_for_upstream(request: http.Request, provider: Provider,
                         credential: UpstreamCredential, actor: Actor,
                         upstream: Upstream | None = None) -> None:
    """Rebuild headers with BuildUpstreamHeaders semantics and aim the request at the provider.

    The destination always comes from the registry, never from the CONNECT target or Host
    header, so a key can only ever travel to the provider's configured upstream: `upstream`
    (`Provider.upstream_for` the TLS SNI), `provider.upstream` when not given. A credential the
    client put in the URL query (`CredentialSlot.query`) is removed: it travels in the header.

    The headers are `build_upstream_headers(trusted, request.headers, credential.header)`
    (trusted = the credential's auth header, then the actor headers) through its one pass on raw
    fields, `upstream_header_fields`, then the extras below, then `retarget`.
    """
    origin = request.host  # the host the client asked for (its region, for a signature)
    auth = credential.header.lower()
    # surrogateescape: a caller's own key goes back out byte for byte, odd bytes included.
    trusted = [(credential.header.encode(), credential.value.encode("utf-8", "surrogateescape"))]
    if provider.send_actor_headers:
        trusted += [(_encode(name), _encode(value)) for name, value in actor_headers(actor)]
    fields, stripped = upstream_header_fields(request.headers.fields, trusted, auth)
    if provider.workspace_id and (workspace := provider.api.workspace_header):
        # Client values of this header were stripped above: setting it appends it.
        fields.append((_encode(workspace), _encode(provider.workspace_id)))
    # mitmproxy is the transport here but does not re-encode bodies it streams: the client
    # negotiated the compression it can decode, so its Accept-Encoding goes upstream as sent.
    for value in stripped.get("accept-encoding", ()):
        fields.append((b"Accept-Encoding", value))
    method = request.method
    upgrade = stripped.get("upgrade")
    if upgrade and method.upper() == "GET" and websocket_upgrade_tokens(
            [_native(v) for v in stripped.get("connection", ())], [_native(v) for v in upgrade]):
        # The handshake's hop-by-hop pair is what makes it a handshake (Codex opens one).
        fields.append((b"Connection", b"Upgrade"))
        fields.append((b"Upgrade", b", ".join(upgrade)))
    body = request.raw_content or b""
    if body or "content-length" in stripped or method in _BODY_METHODS:
        fields.append((b"Content-Length", str(len(body)).encode()))
    up = upstream or provider.upstream
    target = hostport(up.scheme, up.host, up.port)
    if (param := provider.api.credential.query) and "?" in request.path:
        request.path = without_query_param(request.path, param)
    if "host" in stripped:
        # The client's Host goes first, and retargeting rewrites it to the upstream's.
        fields.insert(0, (b"Host", _encode(target)))
    request.headers = _new_headers(fields)
    _aim(request, up, target)
    if credential.signer is not None:  # last: it signs the request as it goes upstream
        api = provider.api
        region = (provider.region or api.region_of(up.host) or api.region_of(origin)
                  or sigv4.DEFAULT_REGION)
        assert api.signs is not None
        sigv4.sign(request, credential.signer.frozen(), service=api.signs, region=region)


def retarget(request: http.Request, provider: Provider, upstream: Upstream | None = None) -> None:
    """Send the request to the provider's upstream (`upstream`, else the configured one), path
    prefix included."""
    up = upstream or provider.upstream
    target = hostport(up.scheme, up.host, up.port)
    headers = request.headers
    # What setting `request.host` and `request.port` does to a Host header, done once.
    if any(n.lower() == b"host" for n, _ in headers.fields):
        headers["Host"] = target
    _aim(request, up, target)


def _aim(request: http.Request, up: Upstream, target: str) -> None:
    """Scheme, host, port, authority and path of `up`; the Host header is the caller's job.

    Equivalent to setting `request.scheme`, `.host` and `.port` (whose setters rewrite Host and
    authority each time) and prefixing the path, with the authority written once.
    """
    request.scheme = up.scheme
    data = request.data
    data.host = up.host
    data.port = up.port
    if data.authority:
        request.authority = target
    if up.path:
        request.path = up.path + request.path


def without_query_param(target: str, name: str) -> str:
    """`target` (path and query) without any `name=...` query parameter; the rest of the query
    is kept byte for byte (no re-encoding), and a query left empty goes with its `?`."""
    path, _, query = target.partition("?")
    kept = [item for item in query.split("&")
            if unquote_plus(item.partition("=")[0]) != name]
    query = "&".join(kept)
    return f"{path}?{query}" if query else path
