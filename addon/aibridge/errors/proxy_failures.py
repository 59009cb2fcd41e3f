"""What a client is told when the upstream fails below HTTP: refused, DNS, TLS, timeout, a
stream cut mid-way. The messages name the provider; no secret is ever part of them."""

from __future__ import annotations

import re

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


# What went wrong below HTTP, in words that name no address: mitmproxy's and the OS's texts
# carry the upstream's IP and port ("Connect call failed ('10.0.0.7', 8443)"), which are the
# operator's business (the log has them), not the client's. First match wins.
_CAUSES = (
    (("connection killed", "egress policy"), "refused by the bridge's policy"),
    (("certificate verify failed", "certificate"), "TLS certificate verification failed"),
    (("connection refused", "errno 111", "connect call failed"), "connection refused"),
    (("name or service not known", "name resolution", "nodename nor servname", "errno -2",
      "errno -3", "errno -5", "getaddrinfo", "no address associated"), "name resolution failed"),
    (("timed out", "timeout"), "timed out"),
    (("tls", "ssl", "handshake"), "TLS handshake failed"),
    (("reset",), "connection reset"),
    (("unreachable", "no route"), "network unreachable"),
    (("disconnect", "closed", "eof", "incomplete"), "the upstream closed the connection"),
)
_ADDRESS = re.compile(r"\(\s*'[^']*'\s*,\s*\d+[^)]*\)"  # ('host', port) from the socket layer
                      r"|\[[0-9A-Fa-f:.%\w]*\](?::\d+)?"  # [IPv6]:port
                      r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"  # IPv4[:port]
                      r"|\b[\w.-]+:\d{2,5}\b")  # host:port


def cause(message: str) -> str | None:
    """The kind of failure `message` (mitmproxy's or the OS's text) describes, if known."""
    lower = message.lower()
    for needles, text in _CAUSES:
        if any(n in lower for n in needles):
            return text
    return None


def without_addresses(message: str) -> str:
    return _ADDRESS.sub("<upstream>", message)


def unreachable(provider: str, flow: http.HTTPFlow, *, timed_out: float | None,
                retried_for: float | None = None) -> ResponseError:
    """The flow got no response headers from the provider. The message names the provider and
    the host the client asked for, never the configured upstream's address. `retried_for`: the
    bridge already retried the connection that long, so the client should not."""
    where = f"upstream {provider} ({flow.client_conn.sni or 'its configured upstream'})"
    if timed_out is not None:
        return new_response_error(f"{where} sent no response within {timed_out:g}s",
                                  OPENAI_ERR_TYPE_API, "upstream_timeout", 504)
    reason = flow.error.msg if flow.error else "no response"
    message = f"{where} unreachable: {cause(reason) or 'connection failed'}"
    if retried_for is None:
        return new_response_error(message, OPENAI_ERR_TYPE_API, "upstream_unreachable", 502)
    return new_response_error(
        f"{message}; the bridge retried for {retried_for:g} s without a connection. The "
        "provider or the bridge's network is down: try again in a minute, and tell the "
        "bridge's operator if it lasts", OPENAI_ERR_TYPE_API, "upstream_unreachable", 502,
        should_retry=False)


def interrupted(provider: str, reason: str) -> ResponseError:
    """The provider's stream broke after the response headers were sent."""
    return new_response_error(
        f"{provider}: stream interrupted: {cause(reason) or without_addresses(reason)}",
        OPENAI_ERR_TYPE_API, "stream_interrupted", 502)


def generic(status: int, message: str, shape: ErrorShape) -> http.Response:
    """Any other error mitmproxy itself answers with on a provider connection, as JSON."""
    if status >= 500:  # about the upstream: say what kind of failure, not where
        message = cause(message) or without_addresses(message)
    error = new_response_error(f"proxy: {message}", shape.type_for_status(status),
                               "proxy_error", status)
    return error.to_response(shape)
