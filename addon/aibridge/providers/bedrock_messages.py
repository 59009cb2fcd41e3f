"""Anthropic Messages ↔ Amazon Bedrock InvokeModel, for Claude models: what a fallback from the
Anthropic API to Bedrock translates (upstream.fallback).

Request: the model goes into the path (`/model/{id}/invoke`, or `/invoke-with-response-stream`
for `stream: true`), `anthropic_version` into the body, `anthropic-beta` flags Bedrock knows into
`anthropic_beta`; the others, and the fields Bedrock refuses (`model`, `stream`,
`service_tier`, `container`, `mcp_servers`, ...), are removed.

Answer: a whole answer is already an Anthropic message. A stream's `chunk` events each carry one
Anthropic stream event, re-emitted as the SSE event of the same name (Bedrock's invocation
metrics removed from the last); an exception message becomes an SSE `error` event. Bedrock's
errors (`x-amzn-ErrorType`, `{"message": ...}`) become Anthropic's error envelope.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from botocore.eventstream import EventStreamBuffer

from aibridge.errors.envelope import status_error_type
from aibridge.providers.bedrock import METRICS

BEDROCK_VERSION = "bedrock-2023-05-31"
# Top-level fields of a Messages request that Bedrock's Anthropic models take.
# (`metadata` and `output_config` too: Claude Code's own Bedrock mode sends them.)
KEPT_FIELDS = frozenset({"max_tokens", "messages", "system", "temperature", "top_p", "top_k",
                         "stop_sequences", "tools", "tool_choice", "thinking",
                         "context_management", "metadata", "output_config"})
# `anthropic-beta` flags Bedrock accepts in `anthropic_beta` (others are refused there).
BEDROCK_BETAS = frozenset({
    "computer-use-2024-10-22", "computer-use-2025-01-24", "computer-use-2025-11-24",
    "token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19", "dev-full-thinking-2025-05-14", "context-1m-2025-08-07",
    "context-management-2025-06-27", "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29", "fine-grained-tool-streaming-2025-05-14",
    "thinking-token-count-2026-05-13", "thinking-binding-controls-2026-08-01"})
# Headers of the Anthropic API that mean nothing to Bedrock (the betas travel in the body).
ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta",
                     "anthropic-dangerous-direct-browser-access")
_ERROR_TYPES = {  # AWS exception (any case) -> Anthropic error type
    "throttlingexception": "rate_limit_error",
    "servicequotaexceededexception": "rate_limit_error",
    "serviceunavailableexception": "overloaded_error",
    "modelnotreadyexception": "overloaded_error",
    "validationexception": "invalid_request_error",
    "accessdeniedexception": "permission_error",
    "unrecognizedclientexception": "authentication_error",
    "resourcenotfoundexception": "not_found_error",
    "modeltimeoutexception": "timeout_error",
}


def invoke_path(model_id: str, streaming: bool) -> str:
    action = "invoke-with-response-stream" if streaming else "invoke"
    return f"/model/{quote(model_id, safe='')}/{action}"


def invoke_body(body: Mapping[str, Any], beta_header: str | None) -> dict[str, Any]:
    """The Messages request body as Bedrock's invoke body."""
    out = {k: v for k, v in body.items() if k in KEPT_FIELDS}
    out["anthropic_version"] = BEDROCK_VERSION
    betas = [b.strip() for b in (beta_header or "").split(",") if b.strip() in BEDROCK_BETAS]
    if betas:
        out["anthropic_beta"] = list(dict.fromkeys(betas))
    return out


def error_type(aws_type: str | None, status: int) -> str:
    """The Anthropic error type for an AWS exception name (`x-amzn-ErrorType`, or an
    event-stream `:exception-type`), else for the status."""
    name = (aws_type or "").split(":", 1)[0].strip().lower()
    if name in _ERROR_TYPES:
        return _ERROR_TYPES[name]
    if status in (503, 529):
        return "overloaded_error"
    return status_error_type(status)


def anthropic_error(status: int, aws_type: str | None, body: bytes) -> bytes:
    """Bedrock's error answer as the Anthropic error envelope."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    message = None
    if isinstance(doc, dict):
        message = doc.get("message") or doc.get("Message")
    if not isinstance(message, str) or not message:
        message = f"bedrock returned HTTP {status}"
    return json.dumps({"type": "error", "error": {
        "type": error_type(aws_type, status), "message": message}},
        separators=(",", ":")).encode()


def _sse(name: str, payload: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class InvokeStreamToSSE:
    """Bedrock's invoke-with-response-stream bytes in, Anthropic SSE bytes out, incrementally
    (a partial frame waits for the rest). Raises botocore's parser errors on a corrupt frame."""

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def __call__(self, data: bytes) -> bytes:
        self._buffer.add_data(data)
        out = []
        for message in self._buffer:
            headers, payload = message.headers, message.payload
            if headers.get(":message-type") != "event":
                out.append(self._error(headers, payload))
            elif headers.get(":event-type") == "chunk":
                event = json.loads(base64.b64decode(json.loads(payload)["bytes"]))
                if isinstance(event, dict):
                    event.pop(METRICS, None)
                    out.append(_sse(str(event.get("type") or "message"), event))
        return b"".join(out)

    @staticmethod
    def _error(headers: Mapping[str, object], payload: bytes) -> bytes:
        kind = headers.get(":exception-type") or headers.get(":error-code")
        body = json.loads(anthropic_error(500, str(kind or ""), payload))
        return _sse("error", body)
