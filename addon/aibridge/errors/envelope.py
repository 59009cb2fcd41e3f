"""Bridge-made JSON errors that the official SDKs parse (docs/behaviour.md §5).

`ResponseError` is what went wrong (message, type, code, status, back-off); an `ErrorShape` is how
one provider API writes it on the wire. The default shape is the OpenAI envelope,
`{"error": {"code", "message", "param", "type"}}` with JSON null for absent fields; each provider
API module brings its own shape (Anthropic's adds a top-level `"type": "error"`). The type names
below are shared by OpenAI and Anthropic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from mitmproxy import http

from aibridge.model import KeyPoolError, PoolErrorKind

OPENAI_ERR_TYPE_ERROR = "error"
OPENAI_ERR_TYPE_API = "api_error"
OPENAI_ERR_TYPE_RATE_LIMIT = "rate_limit_error"
OPENAI_ERR_TYPE_INVALID_REQUEST = "invalid_request_error"
OPENAI_ERR_TYPE_AUTHENTICATION = "authentication_error"
OPENAI_ERR_TYPE_PERMISSION = "permission_error"
OPENAI_ERR_TYPE_NOT_FOUND = "not_found_error"
OPENAI_ERR_TYPE_OVERLOADED = "overloaded_error"
ANTHROPIC_ERR_TYPE_REQUEST_TOO_LARGE = "request_too_large"
OPENAI_ERR_CODE_SERVER = "server_error"
OPENAI_ERR_CODE_RATE_LIMIT = "rate_limit_exceeded"

_STATUS_TYPES = {
    400: OPENAI_ERR_TYPE_INVALID_REQUEST,
    401: OPENAI_ERR_TYPE_AUTHENTICATION,
    403: OPENAI_ERR_TYPE_PERMISSION,
    404: OPENAI_ERR_TYPE_NOT_FOUND,
    413: OPENAI_ERR_TYPE_INVALID_REQUEST,
    429: OPENAI_ERR_TYPE_RATE_LIMIT,
    529: OPENAI_ERR_TYPE_OVERLOADED,
}


def status_error_type(status: int) -> str:
    """The error type OpenAI uses for `status` when the upstream body names none."""
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status]
    return OPENAI_ERR_TYPE_API if status >= 500 else OPENAI_ERR_TYPE_INVALID_REQUEST


class ErrorShape:
    """How one provider API writes an error: the OpenAI envelope, unless a subclass says
    otherwise. Provider API modules own their shape; nothing else branches on the provider."""

    name = "openai"
    overload_status: int | None = 503  # the status the API signals overload with

    def body(self, error: ResponseError) -> dict[str, Any]:
        # Field for field what the OpenAI SDK's ErrorObject dumps (a unit test holds them equal).
        return {"error": {"code": error.code, "message": error.message, "param": error.param,
                          "type": error.type}}

    def type_for_status(self, status: int) -> str:
        """The error type for `status` when the upstream body names none."""
        return status_error_type(status)

    def headers(self, error: ResponseError) -> list[tuple[str, str]]:
        """Headers the API's clients read the error from besides the body (AWS's
        `x-amzn-ErrorType`); none for most APIs."""
        return []

    def error_object(self, doc: object) -> Mapping[str, Any] | None:
        """The error object of a well-formed error body in this API's shape (relayed as it is),
        else None. OpenAI and Anthropic nest it under "error"."""
        if isinstance(doc, Mapping) and isinstance(inner := doc.get("error"), Mapping):
            return inner
        return None


OPENAI_ERRORS = ErrorShape()


@dataclass(eq=False)  # identity equality and hashing, as for any other exception
class ResponseError(Exception):
    """An error answer for the client: envelope fields, HTTP status and back-off in seconds."""

    message: str
    type: str
    code: str | None
    param: str | None = None
    status: int = 500
    retry_after: float = 0.0
    # `x-should-retry`, which the official SDKs (and Claude Code) obey over their own status
    # rules: False for what an immediate retry cannot fix, so the user sees the message now.
    should_retry: bool | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def body(self, shape: ErrorShape = OPENAI_ERRORS) -> dict[str, Any]:
        return shape.body(self)

    def to_response(
        self,
        shape: ErrorShape = OPENAI_ERRORS,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> http.Response:
        """A JSON response; `Retry-After` is whole seconds rounded up, omitted unless positive.

        `headers` are appended; one with the name of a default (`Content-Type`, `Retry-After`)
        replaces that default instead of duplicating it.
        """
        extra = list((headers.items() if isinstance(headers, Mapping) else headers) or ())
        out = http.Headers(fields=[(b"Content-Type", b"application/json")])
        if math.isfinite(self.retry_after) and self.retry_after > 0:
            out["Retry-After"] = str(math.ceil(self.retry_after))
        if self.should_retry is not None:
            out["x-should-retry"] = "true" if self.should_retry else "false"
        extra = [*shape.headers(self), *extra]
        for name in {name for name, _ in extra}:
            out.pop(name, None)
        for name, value in extra:
            out.insert(len(out.fields), name, value)
        content = json.dumps(shape.body(self), separators=(",", ":")).encode()
        return http.Response.make(self.status, content, out)


def new_response_error(
    msg: str, err_type: str, code: str | None, status: int, retry_after: float = 0.0, *,
    should_retry: bool | None = None,
) -> ResponseError:
    return ResponseError(msg, err_type, code, status=status, retry_after=retry_after,
                         should_retry=should_retry)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Case-insensitive whatever the mapping type (httpx2, mitmproxy or a plain dict).
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _positive_seconds(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float:
    """Seconds to wait according to `retry-after-ms`, then `Retry-After`; 0.0 when none applies.

    `Retry-After` may be seconds (fractions accepted) or an HTTP-date (docs/behaviour.md §6.2).
    """
    if (ms := _header(headers, "retry-after-ms")) is not None:
        try:
            if delay := _positive_seconds(float(ms) / 1000):
                return delay
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return 0.0
    try:
        return _positive_seconds(float(value))
    except ValueError:
        pass
    try:
        date = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return 0.0
    if date.tzinfo is None:  # "-0000": UTC without a claim about the local zone
        date = date.replace(tzinfo=UTC)
    return _positive_seconds((date - (now or datetime.now(UTC))).total_seconds())


def _error_object(body: object) -> Mapping[str, Any]:
    """The inner error object, from the full envelope or the part the OpenAI SDK keeps."""
    if not isinstance(body, Mapping):
        return {}
    inner = body.get("error")
    return inner if isinstance(inner, Mapping) else body


def _str_or_none(value: object) -> str | None:
    return None if value is None or isinstance(value, Mapping | list) else str(value)


def response_error_from_api_error(err: object) -> ResponseError | None:
    """Carry an upstream status error to the client: status, error fields and back-off.

    Accepts `openai.APIStatusError` and `anthropic.APIStatusError`; anything else is not an
    upstream answer and yields None. A body without an error object (HTML from a CDN, plain text)
    falls back to the SDK's message and the provider's type for the status.
    """
    # Imported here: the SDKs cost about a second to import and only SDK callers need them.
    from anthropic import APIStatusError as AnthropicStatusError
    from openai import APIStatusError as OpenAIStatusError

    from aibridge.errors.shapes import ANTHROPIC_ERRORS

    if not isinstance(err, OpenAIStatusError | AnthropicStatusError):
        return None
    shape = ANTHROPIC_ERRORS if isinstance(err, AnthropicStatusError) else OPENAI_ERRORS
    obj = _error_object(err.body)
    status = err.status_code
    return ResponseError(
        message=_str_or_none(obj.get("message")) or err.message,
        type=_str_or_none(obj.get("type"))
        or shape.type_for_status(status),
        code=_str_or_none(obj.get("code")),
        param=_str_or_none(obj.get("param")),
        status=status,
        retry_after=parse_retry_after(err.response.headers),
    )


def response_error_from_key_pool(err: object) -> ResponseError | None:
    """Exhausted pool: rate-limited ⇒ 429 with the shortest cooldown, else 502.

    See docs/behaviour.md §7."""
    if not isinstance(err, KeyPoolError):
        return None
    if err.kind is PoolErrorKind.RATE_LIMITED:
        return new_response_error(
            err.message,
            OPENAI_ERR_TYPE_RATE_LIMIT,
            OPENAI_ERR_CODE_RATE_LIMIT,
            429,
            err.retry_after,
        )
    return new_response_error(err.message, OPENAI_ERR_TYPE_API, OPENAI_ERR_CODE_SERVER, 502)
