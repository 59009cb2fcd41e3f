"""Validate a bridged request's body once: size, content type, JSON object."""

from __future__ import annotations

import json
import zlib

from mitmproxy import http

from aibridge.intercept import (
    OPENAI_ERR_TYPE_INVALID_REQUEST,
    ResponseError,
    get_header,
    new_response_error,
)
from aibridge.providers.jsonfields import json_loads


def too_large(limit: int) -> ResponseError:
    size = f"{limit >> 20}MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
    return new_response_error(
        f"Request body too large. The maximum allowed request body size is {size}.",
        OPENAI_ERR_TYPE_INVALID_REQUEST, "request_too_large", 413, should_retry=False)


def declared_too_large(request: http.Request, limit: int) -> bool:
    """Refuse early, before buffering, when Content-Length already says too much."""
    try:
        return int(get_header(request.headers, "content-length", "0")) > limit
    except ValueError:
        return False


def parse_json_object(request: http.Request, limit: int, *, untyped: bool = False) -> dict:
    """The decoded JSON object of a bridged request, or a `ResponseError` to answer with.
    `untyped`: a body without a Content-Type is JSON too (Bedrock's InvokeModel default)."""
    raw = request.raw_content or b""
    if len(raw) > limit:
        raise too_large(limit)
    mime = get_header(request.headers, "content-type", "").split(";", 1)[0].strip().lower()
    if mime != "application/json" and not mime.endswith("+json") and not (untyped and not mime):
        raise new_response_error(
            f"unsupported content type {mime or '(none)'!r}: send the body as application/json",
            OPENAI_ERR_TYPE_INVALID_REQUEST, "unsupported_media_type", 415)
    content = _decoded(request, raw, limit)
    try:
        _strict_utf8(content)
        body = json_loads(content)  # json.loads, several times faster on large bodies
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise new_response_error(f"request body is not valid JSON: {e}",
                                 OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_json", 400) from None
    if not isinstance(body, dict):
        raise new_response_error("request body must be a JSON object",
                                 OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_json", 400)
    return body


def _strict_utf8(content: bytes) -> None:
    """Raise UnicodeDecodeError for a UTF-8 body holding an encoded UTF-16 surrogate (ED A0..BF
    xx): json.loads decodes bytes with "surrogatepass" and would take it, where any other
    invalid UTF-8 is refused. Only bodies with an ED byte (rare outside Hangul) are decoded."""
    if b"\xed" in content and json.detect_encoding(content) in ("utf-8", "utf-8-sig"):
        content.decode("utf-8")


def _decoded(request: http.Request, raw: bytes, limit: int) -> bytes:
    """The body without its Content-Encoding, never inflated beyond `limit` (no zip bombs)."""
    encoding = get_header(request.headers, "content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise new_response_error(
            f"unsupported request content encoding {encoding!r}: send identity, gzip or deflate",
            OPENAI_ERR_TYPE_INVALID_REQUEST, "unsupported_media_type", 415)
    try:
        inflater = zlib.decompressobj(47)  # gzip or zlib header, detected
        content = inflater.decompress(raw, limit + 1)
    except zlib.error:
        try:
            inflater = zlib.decompressobj(-15)  # raw deflate, as some clients send it
            content = inflater.decompress(raw, limit + 1)
        except zlib.error as e:
            raise new_response_error(f"request body is not valid {encoding}: {e}",
                                     OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_encoding",
                                     400) from None
    if len(content) > limit or inflater.unconsumed_tail:
        raise too_large(limit)
    return content
