"""What a client is told when the upstream fails below HTTP: refused, DNS, TLS, timeout, a
stream cut mid-way. The messages name the provider; no secret is ever part of them."""

from __future__ import annotations

from mitmproxy import http

from aibridge.errors.envelope import (
    OPENAI_ERR_TYPE_API,
    ErrorShape,
    ResponseError,
    new_response_error,
)

CLIENT_GONE = ("Client disconnected", "client disconnected", "killed")


def is_client_cancel(message: str) -> bool:
    return any(s in message for s in CLIENT_GONE)


def unreachable(provider: str, flow: http.HTTPFlow, *, timed_out: float | None) -> ResponseError:
    """The flow got no response headers from the provider."""
    target = f"{flow.request.host}:{flow.request.port}"
    if timed_out is not None:
        return new_response_error(
            f"{provider}: upstream {target} sent no response within {timed_out:g}s",
            OPENAI_ERR_TYPE_API, "upstream_timeout", 504)
    reason = flow.error.msg if flow.error else "no response"
    return new_response_error(f"{provider}: cannot reach upstream {target}: {reason}",
                              OPENAI_ERR_TYPE_API, "upstream_unreachable", 502)


def interrupted(provider: str, reason: str) -> ResponseError:
    """The provider's stream broke after the response headers were sent."""
    return new_response_error(f"{provider}: stream interrupted: {reason}",
                              OPENAI_ERR_TYPE_API, "stream_interrupted", 502)


def generic(status: int, message: str, shape: ErrorShape) -> http.Response:
    """Any other error mitmproxy itself answers with on a provider connection, as JSON."""
    error = new_response_error(f"proxy: {message}", shape.type_for_status(status),
                               "proxy_error", status)
    return error.to_response(shape)
