"""The follow-up requests of the tool loop (streaming/tool_loop.py): the flow's request as it
went upstream (same upstream, headers and actor headers), a new JSON body, and the credential
that answered the first round. Sent with the bridge's own client (`resend.new_client`), which
leaves the way mitmproxy does (its upstream proxy, its trust).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mitmproxy import http

from aibridge.upstream.resend import resend

# Framing is the transport's; the body is new, plain JSON.
_SKIP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                   "content-encoding"})


class FollowUps:
    def __init__(self, client: httpx2.AsyncClient, request: http.Request, auth_header: str,
                 auth_value: str) -> None:
        self._client = client
        self._request = request
        self._auth = (auth_header, auth_value)

    def _template(self, body: bytes) -> http.Request:
        request = self._request.copy()
        for name in [n for n in request.headers if n.lower() in _SKIP]:
            del request.headers[name]
        request.raw_content = body
        return request

    async def send(self, body: bytes) -> http.Response:
        """A whole answer (its raw bytes, as the client negotiated them). Raises
        `httpx2.HTTPError` on transport failures."""
        return await resend(self._client, self._template(body), *self._auth)

    @asynccontextmanager
    async def stream(self, body: bytes) -> AsyncIterator[httpx2.Response]:
        """A streamed answer, uncompressed (the bridge splices it into the client's stream)."""
        request = self._template(body)
        header, value = self._auth
        headers = [(k, v) for k, v in request.headers.items(multi=True)
                   if k.lower() not in ("accept-encoding", header.lower())]
        headers += [(header, value), ("Accept-Encoding", "identity")]
        upstream = self._client.build_request(request.method, request.url, headers=headers,
                                              content=body)
        response = await self._client.send(upstream, stream=True)
        try:
            yield response
        finally:
            await response.aclose()
