"""Bridged request bodies: size cap, content type, JSON object (reference §1.2)."""

import gzip

import pytest
from mitmproxy import http

from aibridge.admission.body import declared_too_large, parse_json_object, too_large
from aibridge.config import MAX_BODY_BYTES
from aibridge.intercept import ResponseError

URL = "https://api.openai.com/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
MIB = 1 << 20


def request(body: bytes, headers: dict[str, str] | None = None) -> http.Request:
    req = http.Request.make("POST", URL, b"")
    req.headers = http.Headers(**{k.replace("-", "_"): v for k, v in (headers or {}).items()})
    req.raw_content = body
    return req


def refused(req: http.Request, limit: int = MAX_BODY_BYTES) -> ResponseError:
    with pytest.raises(ResponseError) as info:
        parse_json_object(req, limit)
    return info.value


# -- accepted ----------------------------------------------------------------------------------


def test_valid_object_is_returned():
    body = parse_json_object(request(b'{"model": "gpt-4o", "stream": true}', JSON), MIB)
    assert body == {"model": "gpt-4o", "stream": True}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        " application/json ",
        "application/vnd.foo+json",
        "application/merge-patch+json; charset=utf-8",
    ],
)
def test_json_content_types_are_accepted(content_type):
    assert parse_json_object(request(b'{"a": 1}', {"Content-Type": content_type}), MIB) == {"a": 1}


def test_gzip_encoded_body_is_decoded():
    raw = gzip.compress(b'{"model": "claude-sonnet-4"}')
    req = request(raw, JSON | {"Content-Encoding": "gzip"})
    assert parse_json_object(req, MIB) == {"model": "claude-sonnet-4"}
    assert req.raw_content == raw  # the request itself is not re-encoded


def test_utf8_body_with_non_ascii_text():
    body = '{"messages": [{"content": "héllo ✓"}]}'.encode()
    assert parse_json_object(request(body, JSON), MIB)["messages"][0]["content"] == "héllo ✓"


def test_body_exactly_at_the_limit_is_accepted():
    body = b'{"a": "' + b"x" * 100 + b'"}'
    assert parse_json_object(request(body, JSON), len(body)) == {"a": "x" * 100}


# -- refused --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_non_object_json_is_400(body):
    error = refused(request(body, JSON))
    assert error.status == 400
    assert error.type == "invalid_request_error"
    assert error.code == "invalid_json"
    assert error.message == "request body must be a JSON object"


@pytest.mark.parametrize("body", [b'{"model": ', b"{'a': 1}", b"not json", b"{}}", b"\xff\xfe{"])
def test_malformed_json_is_400(body):
    error = refused(request(body, JSON))
    assert error.status == 400
    assert error.code == "invalid_json"
    assert error.message.startswith("request body is not valid JSON: ")


def test_empty_body_is_400():
    error = refused(request(b"", JSON))
    assert error.status == 400
    assert error.code == "invalid_json"


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        ("text/plain", "'text/plain'"),
        ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),
        ("application/jsonx", "'application/jsonx'"),
        (None, "'(none)'"),
    ],
)
def test_wrong_content_type_is_415(content_type, shown):
    headers = {"Content-Type": content_type} if content_type else {}
    error = refused(request(b'{"a": 1}', headers))
    assert error.status == 415
    assert error.type == "invalid_request_error"
    assert error.code == "unsupported_media_type"
    assert f"unsupported content type {shown}" in error.message
    assert "application/json" in error.message


def test_corrupt_gzip_body_is_400():
    error = refused(request(b"\x1f\x8bnot really gzip", JSON | {"Content-Encoding": "gzip"}))
    assert error.status == 400
    assert error.code == "invalid_encoding"


def test_over_the_limit_is_413_naming_mib():
    error = refused(request(b'{"a": "' + b"x" * MIB + b'"}', JSON), MIB)
    assert error.status == 413
    assert error.type == "invalid_request_error"
    assert error.code == "request_too_large"
    assert error.message == (
        "Request body too large. The maximum allowed request body size is 1MiB."
    )


def test_size_is_checked_before_the_content_type():
    assert refused(request(b"x" * 11, {"Content-Type": "text/plain"}), 10).status == 413


def test_default_limit_message_matches_the_reference():
    assert too_large(MAX_BODY_BYTES).message == (
        "Request body too large. The maximum allowed request body size is 32MiB."
    )
    assert too_large(MAX_BODY_BYTES).status == 413


def test_gzip_body_inflating_past_the_limit_is_413():
    decoded = b'{"a": "' + b"x" * (4 * MIB) + b'"}'
    raw = gzip.compress(decoded)
    assert len(raw) < MIB
    assert refused(request(raw, JSON | {"Content-Encoding": "gzip"}), MIB).status == 413


def test_deeply_nested_json_is_400():
    depth = 100_000
    body = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) < MIB
    assert refused(request(body, JSON), MIB).status == 400


def test_limit_below_one_mib_is_not_reported_as_zero():
    assert "0MiB" not in too_large(512 * 1024).message


# -- declared_too_large -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_length", "expected"),
    [
        ("101", True),
        ("100", False),
        ("0", False),
        (None, False),
        ("abc", False),
        ("", False),
        ("-5", False),
        (str(MAX_BODY_BYTES + 1), True),
    ],
)
def test_declared_too_large(content_length, expected):
    req = request(b"")
    req.headers.clear()
    if content_length is not None:
        req.headers["Content-Length"] = content_length
    limit = MAX_BODY_BYTES if content_length == str(MAX_BODY_BYTES + 1) else 100
    assert declared_too_large(req, limit) is expected
