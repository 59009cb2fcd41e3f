"""Turn a decrypted client request into the request the provider receives."""

from __future__ import annotations

from mitmproxy import http

from aibridge.credential_policy import UpstreamCredential
from aibridge.intercept import (
    Actor,
    actor_headers,
    build_upstream_headers,
    is_websocket_upgrade,
)
from aibridge.providers import Provider


def rewrite_for_upstream(request: http.Request, provider: Provider,
                         credential: UpstreamCredential, actor: Actor) -> None:
    """Rebuild headers with BuildUpstreamHeaders semantics and aim the request at the provider.

    The destination always comes from the registry, never from the CONNECT target or Host
    header, so a key can only ever travel to the provider's configured upstream.
    """
    trusted = http.Headers([(credential.header.encode(), credential.value.encode())])
    if provider.send_actor_headers:
        for name, value in actor_headers(actor):
            trusted.add(name, value)
    headers = build_upstream_headers(trusted, request.headers, credential.header)
    if provider.workspace_id and provider.type == "anthropic":
        headers["Anthropic-Workspace-Id"] = provider.workspace_id
    # mitmproxy is the transport here but does not re-encode bodies it streams: the client
    # negotiated the compression it can decode, so its Accept-Encoding goes upstream as sent.
    for value in request.headers.get_all("accept-encoding"):
        headers.add("Accept-Encoding", value)
    if is_websocket_upgrade(request.method, request.headers):
        # The handshake's hop-by-hop pair is what makes it a handshake (Codex opens one).
        headers.add("Connection", "Upgrade")
        headers.add("Upgrade", request.headers["upgrade"])
    body = request.raw_content or b""
    if body or "content-length" in request.headers or request.method in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(len(body))
    if "host" in request.headers:
        headers.insert(0, "Host", request.headers["host"])
    request.headers = headers
    retarget(request, provider)


def retarget(request: http.Request, provider: Provider) -> None:
    """Send the request to the provider's configured upstream, path prefix included."""
    up = provider.upstream
    request.scheme = up.scheme
    request.host = up.host  # also rewrites Host / :authority
    request.port = up.port
    if up.path:
        request.path = up.path + request.path
