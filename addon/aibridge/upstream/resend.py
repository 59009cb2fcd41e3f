"""Send a buffered provider request again with another key (transparent failover).

mitmproxy cannot re-send a request inside a flow, so the addon does it with its own HTTP client
and puts the answer into the flow. Only non-streaming requests take this path (a response set by
an addon is sent whole); the first attempt always goes through mitmproxy itself.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

import httpx2
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode, UpstreamMode

# Hop-by-hop and framing headers are the transport's business on each leg.
_SKIP_REQUEST = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_SKIP_RESPONSE = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def upstream_ssl_context(options: Any) -> ssl.SSLContext | bool:
    """Verify the provider the way mitmproxy does for its own upstream connections."""
    if options.ssl_insecure:
        return False
    if options.ssl_verify_upstream_trusted_ca:
        return ssl.create_default_context(cafile=options.ssl_verify_upstream_trusted_ca)
    import certifi  # mitmproxy's default trust store

    return ssl.create_default_context(cafile=certifi.where())


def upstream_proxy_url(options: Any) -> str | None:
    """The corporate proxy mitmproxy itself sends through (`--mode upstream:URL`), as a URL for
    `new_client(proxy=...)`; None when no listener is in upstream mode.

    The re-send must leave the same way as the first attempt: where egress is only allowed
    through that proxy, a direct connection would fail or bypass its policy. With several
    upstream listeners the first wins: the re-send client is shared by all listeners.
    """
    for spec in options.mode:
        mode = ProxyMode.parse(spec)
        if isinstance(mode, UpstreamMode):
            host, port = mode.address
            if ":" in host:  # IPv6 literal
                host = f"[{host}]"
            # mitmproxy adds `upstream_auth` to its own CONNECTs; the re-send needs it too.
            auth = getattr(options, "upstream_auth", None)  # an addon's option: may be absent
            userinfo = ""
            if auth:
                user, _, password = auth.partition(":")
                userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
            return f"{mode.scheme}://{userinfo}{host}:{port}"
    return None


def new_client(verify: ssl.SSLContext | bool, timeout: float, *,
               proxy: str | None = None) -> httpx2.AsyncClient:
    # trust_env=False: the proxy's own HTTPS_PROXY must not bend provider traffic; the only
    # proxy is the one mitmproxy is configured with (see upstream_proxy_url).
    return httpx2.AsyncClient(verify=verify, timeout=timeout, trust_env=False,
                              follow_redirects=False, proxy=proxy)


async def resend(client: httpx2.AsyncClient, request: http.Request, auth_header: str,
                 auth_value: str) -> http.Response:
    """`request` as already rewritten for the upstream, with one auth header replaced.
    Raises `httpx2.HTTPError` on transport failures."""
    headers = [(k, v) for k, v in request.headers.items(multi=True)
               if k.lower() not in _SKIP_REQUEST and k.lower() != auth_header.lower()]
    headers.append((auth_header, auth_value))
    upstream = client.build_request(request.method, request.url, headers=headers,
                                    content=request.raw_content or b"")
    response = await client.send(upstream, stream=True)
    try:
        # Raw bytes: the client negotiated the encoding and decodes it itself.
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    fields = [(k, v) for k, v in response.headers.raw
              if k.decode("latin-1").lower() not in _SKIP_RESPONSE]
    result = http.Response.make(response.status_code, b"", fields)
    result.raw_content = body
    result.headers["content-length"] = str(len(body))
    return result
