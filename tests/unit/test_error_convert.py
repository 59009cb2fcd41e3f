"""Provider error conversion (reference §6, §10.3, §11 weakness 5; design.md "Error envelope")."""

import gzip
import json

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import ErrorResponse
from mitmproxy import http
from openai.types.shared import ErrorObject

from aibridge.errors.convert import convert_error, converted_response_headers
from aibridge.errors.envelope import OPENAI_ERRORS
from aibridge.errors.shapes import ANTHROPIC_ERRORS

SHAPES = {"openai": OPENAI_ERRORS, "anthropic": ANTHROPIC_ERRORS}

CLOUDFLARE_502 = b"""<!DOCTYPE html>
<html lang="en-US"><head><title>api.openai.com | 502: Bad   gateway</title>
<style>body { color: red }</style></head>
<body><h1>Bad gateway</h1><p>Cloudflare Ray ID: 8a1b2c3d4e5f</p></body></html>"""

ANTHROPIC_529 = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
    "request_id": "req_011",
}
OPENAI_400 = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


def convert(body: bytes, status: int = 502, *, provider: str = "openai", **kw) -> dict | None:
    headers = kw.pop("headers", {})
    out = convert_error(provider, SHAPES[provider], status, headers, body, **kw)
    return None if out is None else json.loads(out)


def dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_html_502_from_a_cdn_uses_the_title():
    body = convert(CLOUDFLARE_502, 502, headers={"Content-Type": "text/html; charset=UTF-8"})
    assert body == {
        "error": {
            "message": "openai returned HTTP 502: api.openai.com | 502: Bad gateway",
            "type": "api_error",
            "param": None,
            "code": "server_error",
        }
    }
    ErrorObject.model_validate(body["error"])


def test_html_without_title_is_stripped_of_tags_scripts_and_styles():
    page = (
        b"<html><head><style>x{}</style></head><body><script>var a=1</script>"
        b"<h1>Service &amp; things</h1>\n\n<p>down</p></body></html>"
    )
    body = convert(page, 503)
    assert body["error"]["message"] == "openai returned HTTP 503: Service & things down"


def test_text_plain_503_on_anthropic():
    body = convert(
        b"upstream connect error or disconnect/reset before headers\n",
        503,
        provider="anthropic",
        headers={"content-type": "text/plain"},
    )
    assert body == {
        "type": "error",
        "error": {
            "message": "anthropic returned HTTP 503: upstream connect error or disconnect/reset "
            "before headers",
            "type": "api_error",
            "param": None,
            "code": "server_error",
        },
    }
    ErrorResponse.model_validate(body)


def test_empty_500_body():
    body = convert(b"", 500)
    assert body["error"]["message"] == "openai returned HTTP 500"
    assert (body["error"]["type"], body["error"]["code"]) == ("api_error", "server_error")


def test_long_text_is_truncated_and_whitespace_collapsed():
    body = convert(b"word   \n\t" * 100, 502)
    message = body["error"]["message"]
    snippet = message.removeprefix("openai returned HTTP 502: ")
    assert len(snippet) <= 200 and snippet.endswith("…")
    assert "  " not in snippet and "\n" not in snippet


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe\x00garbage", b'{"error": {"message": "trunc', b"\x00\x01\x02"],
    ids=["invalid-utf8", "invalid-json", "control-chars"],
)
def test_unreadable_bodies_get_no_snippet(raw):
    body = convert(raw, 502)
    if raw.startswith(b"{"):  # readable text, just not JSON: it is a fine hint
        assert body["error"]["message"].startswith("openai returned HTTP 502: {")
    else:
        assert body["error"]["message"] == "openai returned HTTP 502"


def test_json_array_is_converted():
    body = convert(dumps([1, 2]), 400)
    assert body["error"] == {
        "message": "openai returned HTTP 400",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_one_element_array_wrapping_an_error_is_unwrapped():
    body = convert(dumps([OPENAI_400]), 400)
    assert body == OPENAI_400


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"error": "circuit breaker is open"}, "openai returned HTTP 503: circuit breaker is open"),
        (
            {"code": "500", "message": "connection reset"},
            "openai returned HTTP 503: connection reset",
        ),
        ({"detail": {"x": 1}}, "openai returned HTTP 503"),
        ("just a string", "openai returned HTTP 503"),
    ],
)
def test_json_without_error_object(doc, message):
    body = convert(dumps(doc), 503)
    assert body["error"]["message"] == message


def test_anthropic_529_passes_natively():
    assert convert(dumps(ANTHROPIC_529), 529, provider="anthropic") is None


def test_anthropic_529_normalised_in_openai_mode():
    body = convert(dumps(ANTHROPIC_529), 529, provider="anthropic", error_format="openai")
    assert body == {
        "type": "error",
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None},
    }
    assert ErrorResponse.model_validate(body).error.type == "overloaded_error"
    ErrorObject.model_validate(body["error"])


def test_openai_400_with_param_and_code_passes_intact():
    assert convert(dumps(OPENAI_400), 400) is None
    # openai mode re-emits the same envelope, param and code included.
    assert convert(dumps(OPENAI_400), 400, error_format="openai") == OPENAI_400


def test_openai_mode_fills_missing_fields_and_drops_extras():
    doc = {"error": {"code": 42, "extra": "x"}, "request_id": "r"}
    body = convert(dumps(doc), 429, error_format="openai")
    assert body == {
        "error": {
            "message": "openai returned HTTP 429",
            "type": "rate_limit_error",
            "param": None,
            "code": "42",
        }
    }


def test_success_statuses_are_left_alone():
    assert convert(b"<html></html>", 200) is None
    assert convert(b"", 304) is None


@pytest.mark.parametrize(
    ("status", "openai_type", "anthropic_type", "code"),
    [
        (400, "invalid_request_error", "invalid_request_error", None),
        (401, "authentication_error", "authentication_error", None),
        (403, "permission_error", "permission_error", None),
        (404, "not_found_error", "not_found_error", None),
        (413, "invalid_request_error", "request_too_large", None),
        (422, "invalid_request_error", "invalid_request_error", None),
        (429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", "api_error", "server_error"),
        (502, "api_error", "api_error", "server_error"),
        (503, "api_error", "api_error", "server_error"),
        (504, "api_error", "api_error", "server_error"),
        (529, "api_error", "overloaded_error", "overloaded"),
    ],
)
def test_status_table(status, openai_type, anthropic_type, code):
    o = convert(b"nope", status)
    a = convert(b"nope", status, provider="anthropic")
    assert (o["error"]["type"], o["error"]["code"]) == (openai_type, code)
    assert (a["error"]["type"], a["error"]["code"], a["type"]) == (anthropic_type, code, "error")
    assert "type" not in o


def test_converted_response_headers():
    original = http.Headers(
        [
            (b"Content-Type", b"text/html"),
            (b"Content-Encoding", b"gzip"),
            (b"Content-Length", b"1234"),
            (b"Transfer-Encoding", b"chunked"),
            (b"ETag", b'"abc"'),
            (b"Retry-After", b"7"),
            (b"retry-after-ms", b"6500"),
            (b"x-ratelimit-remaining-requests", b"0"),
            (b"anthropic-ratelimit-tokens-reset", b"2025-01-01T00:00:00Z"),
            (b"request-id", b"req_1"),
            (b"x-request-id", b"xr"),
            (b"openai-processing-ms", b"12"),
            (b"cf-ray", b"8a1b"),
            (b"x-should-retry", b"true"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ]
    )
    out = converted_response_headers(original)
    assert out["content-type"] == "application/json"
    for gone in ("content-encoding", "content-length", "transfer-encoding", "etag"):
        assert gone not in out
    for kept in (
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-remaining-requests",
        "anthropic-ratelimit-tokens-reset",
        "request-id",
        "x-request-id",
        "openai-processing-ms",
        "cf-ray",
        "x-should-retry",
    ):
        assert out[kept] == original[kept]
    assert out.get_all("set-cookie") == ["a=1", "b=2"]
    assert original["content-encoding"] == "gzip"  # the original is untouched


def _flow_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> http.Response:
    return http.Response.make(status, body, http.Headers(headers))


def test_applied_to_a_gzip_response_the_sdks_parse_it():
    """End to end: convert a gzip'd CDN page as the addon would, then let both SDKs read it."""
    resp = _flow_response(
        503,
        [
            (b"Content-Type", b"text/html"),
            (b"Content-Encoding", b"gzip"),
            (b"Retry-After", b"3"),
            (b"request-id", b"req_9"),
        ],
        CLOUDFLARE_502,  # .make() encodes it: the wire body is gzip
    )
    assert gzip.decompress(resp.raw_content) == CLOUDFLARE_502
    assert resp.content == CLOUDFLARE_502  # mitmproxy decodes; that is what the caller passes
    new = convert_error("anthropic", ANTHROPIC_ERRORS, resp.status_code, resp.headers, resp.content)
    assert new is not None
    resp.headers = converted_response_headers(resp.headers)
    resp.content = new
    assert resp.raw_content == new
    assert resp.headers["content-length"] == str(len(new))

    fields = [(n.decode(), v.decode()) for n, v in resp.headers.fields]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(resp.status_code, headers=fields, content=resp.raw_content)

    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="https://api.anthropic.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    assert info.value.type == "api_error"
    assert "anthropic returned HTTP 503" in info.value.api_message
    assert info.value.request_id == "req_9"

    oclient = openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.openai.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(openai.InternalServerError) as oinfo:
        oclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert (oinfo.value.type, oinfo.value.code) == ("api_error", "server_error")
    assert oinfo.value.response.headers["retry-after"] == "3"


def test_openai_sdk_reads_param_and_code_after_normalising():
    body = convert_error("openai", OPENAI_ERRORS, 400, {}, dumps(OPENAI_400), error_format="openai")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(400, content=body, headers={"content-type": "application/json"})

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.openai.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert (info.value.param, info.value.code) == ("messages", "context_length_exceeded")
