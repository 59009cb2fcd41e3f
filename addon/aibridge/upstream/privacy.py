"""Keep client-identifying details from reaching the provider (per provider, opt-in).

The bridge still records them (client and session are read before this runs); the provider
only sees the request without them. docs/behaviour.md §11 lists what coding agents send.
"""

from __future__ import annotations

import json

from mitmproxy import http

IDENTIFYING_HEADERS = frozenset({
    "x-claude-code-session-id", "session_id", "session-id", "x-mux-workspace-id",
    "x-interaction-id", "x-client-session-id", "x-kilocode-taskid", "x-coder-chat-id",
    "x-opencode-session", "x-session-affinity", "x-client-request-id",
})


def strip_client_identity(request: http.Request, body: object) -> None:
    """Remove identifying headers, and `metadata.user_id` from a bridged JSON body."""
    for name in [n for n in request.headers if n.lower() in IDENTIFYING_HEADERS]:
        del request.headers[name]
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict) \
            and "user_id" in body["metadata"]:
        metadata = {k: v for k, v in body["metadata"].items() if k != "user_id"}
        cleaned = {**body, "metadata": metadata} if metadata else {
            k: v for k, v in body.items() if k != "metadata"}
        # Only rewritten when there is something to remove: otherwise the client's exact
        # bytes go upstream.
        request.content = json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode()
