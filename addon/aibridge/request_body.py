"""Validate a bridged request's body once: size, content type, JSON object."""

from __future__ import annotations

import json

from mitmproxy import http

from aibridge.intercept import OPENAI_ERR_TYPE_INVALID_REQUEST, ResponseError, new_response_error


def too_large(limit: int) -> ResponseError:
    return new_response_error(
        f"Request body too large. The maximum allowed request body size is {limit >> 20}MiB.",
        OPENAI_ERR_TYPE_INVALID_REQUEST, "request_too_large", 413)


def declared_too_large(request: http.Request, limit: int) -> bool:
    """Refuse early, before buffering, when Content-Length already says too much."""
    try:
        return int(request.headers.get("content-length", "0")) > limit
    except ValueError:
        return False


def parse_json_object(request: http.Request, limit: int) -> dict:
    """The decoded JSON object of a bridged request, or a `ResponseError` to answer with."""
    raw = request.raw_content or b""
    if len(raw) > limit:
        raise too_large(limit)
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if mime != "application/json" and not mime.endswith("+json"):
        raise new_response_error(
            f"unsupported content type {mime or '(none)'!r}: send the body as application/json",
            OPENAI_ERR_TYPE_INVALID_REQUEST, "unsupported_media_type", 415)
    try:
        content = request.get_content(strict=True) or b""
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError) as e:
        raise new_response_error(f"request body is not valid JSON: {e}",
                                 OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_json", 400) from None
    if not isinstance(body, dict):
        raise new_response_error("request body must be a JSON object",
                                 OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_json", 400)
    return body
