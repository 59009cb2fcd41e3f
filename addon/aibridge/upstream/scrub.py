"""Once a request is on the wire, the flow keeps only the key's masked hint, so saved flows,
HAR files and mitmweb never hold it."""

from __future__ import annotations

from mitmproxy import http

from aibridge.intercept import CredentialInfo


def scrub(request: http.Request, header: str, info: CredentialInfo | None) -> None:
    if info is not None and header in request.headers:
        bearer = request.headers[header].startswith("Bearer ")
        request.headers[header] = f"Bearer {info.hint}" if bearer else info.hint
