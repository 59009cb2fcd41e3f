"""Provider error responses the SDKs can parse (docs/behaviour.md §5.4).

Well-formed provider JSON errors pass untouched (status, body, `param`, `code`; Claude Code
relies on Anthropic's 529 `overloaded_error`). Anything else a provider or a CDN in front of it
answers with (an HTML page, text/plain, an empty body, JSON without an error object) becomes the
bridge envelope, with the provider's status and a message naming provider and
status. Option `error_format = "openai"` re-emits every error in the OpenAI envelope (Anthropic
providers keep the top-level `"type": "error"`, as every bridge-made error on their routes does).

Codes for synthesised errors follow the status: 429 `rate_limit_exceeded`, 529 `overloaded`,
other 5xx `server_error`, other 4xx null (the status and type already say it; inventing e.g.
`invalid_api_key` for a CDN's 401 would mislead).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

from mitmproxy import http

from aibridge.errors.envelope import (
    OPENAI_ERR_CODE_RATE_LIMIT,
    OPENAI_ERR_CODE_SERVER,
    OPENAI_ERR_TYPE_API,
    OPENAI_ERRORS,
    ErrorShape,
    ResponseError,
)

ERROR_FORMAT_NATIVE = "native"
ERROR_FORMAT_OPENAI = "openai"
ERROR_FORMATS = (ERROR_FORMAT_NATIVE, ERROR_FORMAT_OPENAI)
OVERLOADED_CODE = "overloaded"
SNIPPET_MAX = 200

# Headers describing the old body's representation; everything else (rate-limit, request ids,
# x-should-retry, cf-ray, ...) stays for the client and its SDK's retry logic.
_REPRESENTATION_HEADERS = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-length",
        "transfer-encoding",
        "content-md5",
        "etag",
    }
)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_INVISIBLE = re.compile(
    r"<(script|style|head)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def convert_error(
    provider_name: str,
    shape: ErrorShape,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    error_format: str = ERROR_FORMAT_NATIVE,
) -> bytes | None:
    """A replacement JSON body for a provider's 4xx/5xx answer, or None to relay it untouched.

    `body` must be the DECODED body (gzip/br/zstd already undone; mitmproxy's `response.content`);
    set it together with `converted_response_headers` so no stale Content-Encoding remains.
    """
    if status < 400:
        return None
    doc = _parse_json(body)
    # Some OpenAI-compatible gateways wrap the error in a one-element array, which no SDK reads:
    # unwrap it for its fields, and always convert.
    wrapped = isinstance(doc, list) and len(doc) == 1 and shape.error_object(doc[0]) is not None
    if wrapped:
        doc = doc[0]
    if (inner := shape.error_object(doc)) is not None:
        if error_format != ERROR_FORMAT_OPENAI and not wrapped:
            return None
        return _dump(_normalised(provider_name, status, inner, shape))
    err = synthesised_error(provider_name, status, headers, body, doc, shape=shape)
    return _dump(err.body(shape))


def synthesised_error(
    provider_name: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    doc: object = None,
    *,
    shape: ErrorShape = OPENAI_ERRORS,
) -> ResponseError:
    """The envelope for a body that is not a provider error object (`doc`: the parsed JSON)."""
    message = f"{provider_name} returned HTTP {status}"
    if snippet := _snippet(headers, body, doc):
        message = f"{message}: {snippet}"
    return ResponseError(message, _type_for(status, shape), _code_for(status),
                         status=status)


def converted_response_headers(original: http.Headers) -> http.Headers:
    """Headers for a converted response: the provider's, minus those describing the old body.

    Rate-limit headers (`retry-after`, `retry-after-ms`, `x-ratelimit-*`, `anthropic-ratelimit-*`),
    request ids and `x-should-retry` are kept as sent; Content-Type becomes application/json.
    Content-Length is left to mitmproxy, which sets it when the caller assigns `.content`.
    """
    fields = [
        (k, v)
        for k, v in original.fields
        if k.decode("latin-1").lower() not in _REPRESENTATION_HEADERS
    ]
    fields.append((b"Content-Type", b"application/json"))
    return http.Headers(fields=fields)


def _normalised(
    provider_name: str, status: int, err: Mapping[str, Any], shape: ErrorShape
) -> dict[str, Any]:
    return ResponseError(
        message=_text(err.get("message")) or f"{provider_name} returned HTTP {status}",
        type=_text(err.get("type")) or _type_for(status, shape),
        code=_text(err.get("code")),  # Anthropic errors have none: null
        param=_text(err.get("param")),
        status=status,
    ).body(shape)


def _type_for(status: int, shape: ErrorShape) -> str:
    # 529 is Anthropic's "overloaded"; from anyone else it is just a server error.
    if status == 529 and shape.overload_status != 529:
        return OPENAI_ERR_TYPE_API
    return shape.type_for_status(status)


def _code_for(status: int) -> str | None:
    if status == 429:
        return OPENAI_ERR_CODE_RATE_LIMIT
    if status == 529:
        return OVERLOADED_CODE
    return OPENAI_ERR_CODE_SERVER if status >= 500 else None


def _parse_json(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    return str(value) or None


def _snippet(headers: Mapping[str, str], body: bytes, doc: object) -> str | None:
    """A short human-readable hint from a body that is not an error object, if it has one."""
    if isinstance(doc, Mapping):
        # {"error": "..."} or {"message": "..."}: plain gateways and the Responses API shape.
        text = next((v for k in ("error", "message") if isinstance(v := doc.get(k), str)), None)
    elif doc is not None:
        return None  # other JSON (numbers, arrays): nothing a person would read
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None  # binary or mis-encoded: not worth echoing
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if "html" in content_type.lower() or text.lstrip().startswith("<"):
            title = _TITLE.search(text)
            text = title.group(1) if title else _TAG.sub(" ", _INVISIBLE.sub(" ", text))
            text = html.unescape(_TAG.sub(" ", text))
    if not text:
        return None
    text = _SPACE.sub(" ", text).strip()
    if not text or not text.isprintable():
        return None
    return text if len(text) <= SNIPPET_MAX else text[: SNIPPET_MAX - 1].rstrip() + "…"


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
