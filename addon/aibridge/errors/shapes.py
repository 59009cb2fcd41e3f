"""Error shapes other than the default OpenAI envelope (`errors.envelope.ErrorShape`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aibridge.errors.envelope import (
    ANTHROPIC_ERR_TYPE_REQUEST_TOO_LARGE,
    OPENAI_ERRORS,
    ErrorShape,
    ResponseError,
    status_error_type,
)


class AnthropicErrors(ErrorShape):
    """The OpenAI envelope plus a top-level `"type": "error"`: exactly what the Anthropic SDK and
    Claude Code read, and still what the OpenAI SDK reads (it only looks at `error`)."""

    name = "anthropic"
    overload_status = 529

    def body(self, error: ResponseError) -> dict[str, Any]:
        return {"type": "error", **OPENAI_ERRORS.body(error)}

    def type_for_status(self, status: int) -> str:
        if status == 413:
            return ANTHROPIC_ERR_TYPE_REQUEST_TOO_LARGE
        return status_error_type(status)


ANTHROPIC_ERRORS = AnthropicErrors()


# AWS's names for the bridge's error types (the exceptions botocore raises, and what the
# Anthropic Bedrock SDK, which Claude Code uses, reads from `x-amzn-ErrorType`).
_AWS_TYPES = {
    "invalid_request_error": "ValidationException",
    "request_too_large": "ValidationException",
    "authentication_error": "UnrecognizedClientException",
    "permission_error": "AccessDeniedException",
    "not_found_error": "ResourceNotFoundException",
    "rate_limit_error": "ThrottlingException",
    "overloaded_error": "ServiceUnavailableException",
    "timeout_error": "ModelTimeoutException",
}


def aws_error_type(error_type: str | None, status: int) -> str:
    """The AWS exception name for a bridge error type (or, without one, the status)."""
    if error_type in _AWS_TYPES:
        return _AWS_TYPES[error_type]
    if status == 503:
        return "ServiceUnavailableException"
    if status >= 500:
        return "InternalServerException"
    return _AWS_TYPES.get(status_error_type(status), "ValidationException")


class AwsErrors(ErrorShape):
    """AWS's JSON error shape (Amazon Bedrock): `{"message": ...}` with the exception's name in
    the `x-amzn-ErrorType` header, which botocore and the Bedrock SDKs read the error from."""

    name = "aws"
    overload_status = 503

    def body(self, error: ResponseError) -> dict[str, Any]:
        return {"message": error.message}

    def headers(self, error: ResponseError) -> list[tuple[str, str]]:
        return [("x-amzn-ErrorType", aws_error_type(error.type, error.status))]

    def error_object(self, doc: object) -> Mapping[str, Any] | None:
        # AWS writes "message" (some services "Message"); a body with one is well-formed.
        if isinstance(doc, Mapping) and any(
                isinstance(doc.get(k), str) for k in ("message", "Message")):
            return {"message": doc.get("message") or doc.get("Message"),
                    "type": doc.get("__type") or doc.get("code")}
        return None


AWS_ERRORS = AwsErrors()


# Google's canonical status names (google.rpc.Code) by HTTP status, as the Gemini API sends them.
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GOOGLE_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
GOOGLE_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
GOOGLE_DOMAIN = "aibridge"  # ErrorInfo's domain: the bridge said it, not Google


def google_status(status: int) -> str:
    """The google.rpc status name for an HTTP status."""
    if status in GOOGLE_STATUSES:
        return GOOGLE_STATUSES[status]
    return "INTERNAL" if status >= 500 else "FAILED_PRECONDITION" if status >= 400 else "OK"


class GoogleErrors(ErrorShape):
    """Google's envelope (the Gemini API): `{"error": {"code": 429, "message": ..., "status":
    "RESOURCE_EXHAUSTED", "details": [...]}}`. The details carry an `ErrorInfo` whose reason is
    the bridge's code (`RATE_LIMIT_EXCEEDED`) and, with a back-off, a `RetryInfo` whose
    `retryDelay` Gemini CLI and the Google SDKs wait for."""

    name = "google"
    overload_status = 503

    def body(self, error: ResponseError) -> dict[str, Any]:
        reason = (error.code or error.type or "error").upper()
        details: list[dict[str, Any]] = [
            {"@type": GOOGLE_ERROR_INFO, "reason": reason, "domain": GOOGLE_DOMAIN,
             "metadata": {"type": error.type}}]
        if math.isfinite(error.retry_after) and error.retry_after > 0:
            details.append({"@type": GOOGLE_RETRY_INFO,
                            "retryDelay": f"{max(error.retry_after, 0.001):.3f}".rstrip("0")
                            .rstrip(".") + "s"})
        return {"error": {"code": error.status, "message": error.message,
                          "status": google_status(error.status), "details": details}}

    def type_for_status(self, status: int) -> str:
        return google_status(status)

    def error_object(self, doc: object) -> Mapping[str, Any] | None:
        """Google's error object; its `status` (RESOURCE_EXHAUSTED, ...) is the type."""
        inner = super().error_object(doc)
        if inner is not None and "type" not in inner and isinstance(inner.get("status"), str):
            return {**inner, "type": inner["status"], "code": None}
        return inner


GOOGLE_ERRORS = GoogleErrors()
