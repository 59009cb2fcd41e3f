"""The error category recorded when an interception ends (docs/behaviour.md §8).

One pure function from what the addon knows about the failure to a closed vocabulary, so the
store and telemetry can group failures without parsing messages.

Deviations from Coder's AI Bridge, both deliberate (docs/behaviour.md §8):
- A client cancel is "cancelled", not "unknown": our outcome vocabulary already has it, and
  lumping cancels in with unexplained failures would hide real problems.
- The upstream's own error type is used: `overloaded_error` always means "overloaded" (the status
  behind it varies: 529 from Anthropic, 503/500 through proxies, 200 mid-stream), and any other
  type categorises a mid-stream error the status (already 200) cannot.
"""

from __future__ import annotations

BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
UNKNOWN = "unknown"

ERROR_TYPES = (BAD_REQUEST, UNAUTHORIZED, RATE_LIMITED, OVERLOADED, SERVER_ERROR, TIMEOUT,
               CANCELLED, UNKNOWN)

# Key-pool exhaustion (aibridge.keypool.PoolErrorKind values) outranks the last upstream status:
# the pool gave up for this reason after possibly several keys.
_POOL_KINDS = {"rate_limited": RATE_LIMITED, "auth_failed": UNAUTHORIZED}

_STATUSES = {400: BAD_REQUEST, 404: BAD_REQUEST, 413: BAD_REQUEST, 422: BAD_REQUEST,
             401: UNAUTHORIZED, 403: UNAUTHORIZED, 429: RATE_LIMITED,
             408: TIMEOUT, 504: TIMEOUT}

# Error `type`s in provider error envelopes (Anthropic, then OpenAI), for mid-stream errors.
_UPSTREAM_TYPES = {
    "invalid_request_error": BAD_REQUEST,
    "not_found_error": BAD_REQUEST,
    "request_too_large": BAD_REQUEST,
    "authentication_error": UNAUTHORIZED,
    "permission_error": UNAUTHORIZED,
    "rate_limit_error": RATE_LIMITED,
    "overloaded_error": OVERLOADED,
    "api_error": SERVER_ERROR,
    "timeout_error": TIMEOUT,
    "invalid_request": BAD_REQUEST,
    "rate_limit_exceeded": RATE_LIMITED,
    "insufficient_quota": RATE_LIMITED,
    "server_error": SERVER_ERROR,
    # Google's status names (the Gemini API's `error.status`).
    "INVALID_ARGUMENT": BAD_REQUEST,
    "FAILED_PRECONDITION": BAD_REQUEST,
    "NOT_FOUND": BAD_REQUEST,
    "UNAUTHENTICATED": UNAUTHORIZED,
    "PERMISSION_DENIED": UNAUTHORIZED,
    "RESOURCE_EXHAUSTED": RATE_LIMITED,
    "UNAVAILABLE": OVERLOADED,
    "INTERNAL": SERVER_ERROR,
    "DEADLINE_EXCEEDED": TIMEOUT,
}


def error_type(*, status: int | None, overload_status: int | None, timed_out: bool = False,
               cancelled: bool = False, circuit_open: bool = False,
               key_pool_kind: str | None = None,
               upstream_error_type: str | None = None) -> str | None:
    """The category, or None for a success (2xx/3xx and no other signal). `overload_status` is
    the status the provider's API signals overload with (another API's is a server error)."""
    if timed_out:
        return TIMEOUT
    if cancelled:
        return CANCELLED
    if circuit_open:
        return SERVER_ERROR
    pool = _POOL_KINDS.get(key_pool_kind) if key_pool_kind else None
    if pool is not None:
        return pool
    upstream = _UPSTREAM_TYPES.get(upstream_error_type) if upstream_error_type else None
    if upstream == OVERLOADED:
        return OVERLOADED
    by_status = _by_status(status, overload_status)
    if by_status is not None:
        return by_status
    if upstream_error_type:
        return upstream or UNKNOWN  # an error event inside a successful response
    if status is None or not 200 <= status < 400:
        return UNKNOWN  # no response at all, or a status outside HTTP's error classes
    return None


def _by_status(status: int | None, overload_status: int | None) -> str | None:
    if status is None:
        return None
    if status == overload_status:
        return OVERLOADED
    if status in _STATUSES:
        return _STATUSES[status]
    if 500 <= status < 600:
        return SERVER_ERROR
    if 400 <= status < 500:
        return BAD_REQUEST
    return None
