"""Bridge-made error responses and conversions (reference §6.1, §6.2, §6.4, §5.5)."""

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import ErrorResponse
from mitmproxy import http
from openai.types.shared import ErrorObject

from aibridge.errors.envelope import OPENAI_ERRORS
from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.intercept import (
    OPENAI_ERR_CODE_RATE_LIMIT,
    OPENAI_ERR_CODE_SERVER,
    OPENAI_ERR_TYPE_API,
    OPENAI_ERR_TYPE_RATE_LIMIT,
    ResponseError,
    new_response_error,
    parse_retry_after,
    response_error_from_api_error,
    response_error_from_key_pool,
    status_error_type,
)
from aibridge.model import KeyPoolError, PoolErrorKind


def rate_limited(retry_after: float = 0.0) -> ResponseError:
    return new_response_error(
        "slow down", OPENAI_ERR_TYPE_RATE_LIMIT, OPENAI_ERR_CODE_RATE_LIMIT, 429, retry_after
    )


def test_constants():
    assert (OPENAI_ERR_TYPE_API, OPENAI_ERR_TYPE_RATE_LIMIT) == ("api_error", "rate_limit_error")
    assert (OPENAI_ERR_CODE_SERVER, OPENAI_ERR_CODE_RATE_LIMIT) == (
        "server_error",
        "rate_limit_exceeded",
    )


def test_openai_body_uses_null_for_absent_fields():
    err = new_response_error("boom", OPENAI_ERR_TYPE_API, None, 502)
    body = json.loads(err.to_response().content)
    assert body == {"error": {"message": "boom", "type": "api_error", "param": None, "code": None}}
    assert b"None" not in err.to_response().content
    assert body == err.body()
    assert err.body() == err.body(OPENAI_ERRORS)  # the OpenAI envelope is the default
    assert list(body["error"]) == ["code", "message", "param", "type"]


@pytest.mark.parametrize(
    "err",
    [
        new_response_error("boom", OPENAI_ERR_TYPE_API, None, 502),
        new_response_error("slow down", OPENAI_ERR_TYPE_RATE_LIMIT, OPENAI_ERR_CODE_RATE_LIMIT,
                           429, 2.5),
        ResponseError("bad param", "invalid_request_error", "context_length_exceeded",
                      param="messages", status=400),
        ResponseError("Überlastet \"quoted\" ☀️", "overloaded_error", None, status=529),
    ],
)
def test_openai_envelope_is_what_the_openai_sdk_dumps(err):
    """The envelope is built by hand now; it must stay field for field the SDK's ErrorObject."""
    sdk = ErrorObject(
        message=err.message, type=err.type, code=err.code, param=err.param
    ).model_dump(mode="json", include={"code", "message", "param", "type"})
    assert err.body(OPENAI_ERRORS) == {"error": sdk}
    assert list(err.body(OPENAI_ERRORS)["error"].items()) == list(sdk.items())  # order too
    assert err.body(ANTHROPIC_ERRORS) == {"type": "error", "error": sdk}
    assert json.loads(err.to_response().content) == {"error": sdk}


def test_anthropic_body_adds_top_level_type():
    body = json.loads(rate_limited().to_response(ANTHROPIC_ERRORS).content)
    assert body == {
        "type": "error",
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        },
    }
    parsed = ErrorResponse.model_validate(body)
    assert (parsed.type, parsed.error.type, parsed.error.message) == (
        "error",
        "rate_limit_error",
        "slow down",
    )


def test_response_status_and_content_type():
    response = new_response_error("boom", OPENAI_ERR_TYPE_API, OPENAI_ERR_CODE_SERVER, 502)
    response = response.to_response()
    assert isinstance(response, http.Response)
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "application/json"
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(2.1, "3"), (3, "3"), (0.001, "1"), (59.0, "59"), (0, None), (-1, None), (float("nan"), None)],
)
def test_retry_after_is_whole_seconds_rounded_up(retry_after, header):
    assert rate_limited(retry_after).to_response().headers.get("Retry-After") == header


def test_extra_headers_are_appended_and_replace_defaults():
    response = rate_limited(2.1).to_response(
        headers=[("retry-after", "1"), ("retry-after-ms", "1"), ("x-should-retry", "true")]
    )
    assert response.headers.get_all("Retry-After") == ["1"]
    assert response.headers["retry-after-ms"] == "1"
    assert response.headers["x-should-retry"] == "true"
    assert response.headers["Content-Type"] == "application/json"
    response = rate_limited().to_response(headers={"X-Request-Id": "req-1"})
    assert response.headers["X-Request-Id"] == "req-1"


def test_response_error_is_raisable_and_prints_its_message():
    with pytest.raises(ResponseError, match="slow down") as info:
        raise rate_limited(3)
    assert str(info.value) == "slow down"
    assert info.value.status == 429
    assert info.value.retry_after == 3


@pytest.mark.parametrize(
    ("status", "openai_type", "anthropic_type"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (403, "permission_error", "permission_error"),
        (404, "not_found_error", "not_found_error"),
        (413, "invalid_request_error", "request_too_large"),
        (422, "invalid_request_error", "invalid_request_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (500, "api_error", "api_error"),
        (503, "api_error", "api_error"),
        (529, "overloaded_error", "overloaded_error"),
    ],
)
def test_status_error_type(status, openai_type, anthropic_type):
    assert status_error_type(status) == openai_type
    assert ANTHROPIC_ERRORS.type_for_status(status) == anthropic_type
    assert OPENAI_ERRORS.type_for_status(status) == openai_type


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    return httpx2.Response(status, headers=headers, request=request)


def test_from_openai_rate_limit_error():
    err = openai.RateLimitError(
        "Error code: 429",
        response=_response(429, {"Retry-After": "5"}),
        body={"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
    )
    converted = response_error_from_api_error(err)
    assert converted is not None
    assert (converted.status, converted.message, converted.type, converted.code) == (
        429,
        "Rate limit reached",
        "requests",
        "rate_limit_exceeded",
    )
    assert converted.retry_after == 5
    assert converted.to_response().headers["Retry-After"] == "5"


def test_from_openai_error_keeps_param_and_accepts_the_full_envelope():
    body = {
        "error": {
            "message": "maximum context length is 8192 tokens",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    err = openai.BadRequestError("Error code: 400", response=_response(400), body=body)
    converted = response_error_from_api_error(err)
    assert converted is not None
    assert converted.body() == {
        "error": {
            "message": "maximum context length is 8192 tokens",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    assert converted.retry_after == 0


def test_from_openai_error_without_json_body_falls_back():
    err = openai.InternalServerError(
        "<html>502 Bad Gateway</html>", response=_response(502), body="<html>502 Bad Gateway</html>"
    )
    converted = response_error_from_api_error(err)
    assert converted is not None
    assert (converted.status, converted.message, converted.type, converted.code) == (
        502,
        "<html>502 Bad Gateway</html>",
        "api_error",
        None,
    )


def test_from_anthropic_error_reads_the_full_envelope():
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    response = httpx2.Response(529, headers={"retry-after-ms": "1500"}, request=request)
    err = anthropic.APIStatusError("Error code: 529", response=response, body=body)
    converted = response_error_from_api_error(err)
    assert converted is not None
    assert (converted.status, converted.message, converted.type, converted.code) == (
        529,
        "Overloaded",
        "overloaded_error",
        None,
    )
    assert converted.retry_after == 1.5
    assert converted.to_response().headers["Retry-After"] == "2"


def test_from_anthropic_error_without_type_uses_anthropic_names():
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    response = httpx2.Response(413, request=request)
    err = anthropic.APIStatusError("Request Entity Too Large", response=response, body=None)
    converted = response_error_from_api_error(err)
    assert converted is not None
    assert (converted.type, converted.message) == ("request_too_large", "Request Entity Too Large")


@pytest.mark.parametrize("err", [ValueError("x"), "Error code: 429", None, KeyPoolError])
def test_from_api_error_ignores_everything_else(err):
    assert response_error_from_api_error(err) is None


def test_from_api_error_ignores_connection_errors():
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    assert response_error_from_api_error(openai.APIConnectionError(request=request)) is None


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "2500"}, 2.5),
        ({"retry-after-ms": " 1500 "}, 1.5),
        ({"retry-after-ms": "-100"}, 0),
        ({"Retry-After": "60"}, 60),
        ({"Retry-After": " 30 "}, 30),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": "0"}, 0),
        ({"Retry-After": "-5"}, 0),
        ({"retry-after-ms": "1500", "Retry-After": "30"}, 1.5),
        ({"retry-after-ms": "invalid", "Retry-After": "10"}, 10),
        ({"retry-after-ms": "0", "Retry-After": "5"}, 5),
        ({"retry-after-ms": "inf"}, 0),
        ({"Retry-After": format_datetime(NOW + timedelta(seconds=90), usegmt=True)}, 90),
        ({"Retry-After": "Wed, 01 Jan 2025 12:00:30 -0000"}, 30),
        ({"Retry-After": format_datetime(NOW - timedelta(seconds=90), usegmt=True)}, 0),
        ({"Retry-After": "soon"}, 0),
        ({}, 0),
    ],
)
def test_parse_retry_after(headers, seconds):
    assert parse_retry_after(headers, now=NOW) == seconds


def test_from_api_error_reads_http_date():
    when = datetime.now(UTC) + timedelta(seconds=120)
    err = openai.RateLimitError(
        "Error code: 429",
        response=_response(429, {"Retry-After": format_datetime(when, usegmt=True)}),
        body=None,
    )
    converted = response_error_from_api_error(err)
    assert converted is not None
    assert 100 < converted.retry_after <= 120
    assert converted.type == "rate_limit_error"


def test_from_key_pool_rate_limited():
    err = response_error_from_key_pool(KeyPoolError(PoolErrorKind.RATE_LIMITED, 3))
    assert err is not None
    assert err.message == "all configured keys are rate-limited (retry after 3s)"
    response = err.to_response()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert json.loads(response.content)["error"] == {
        "message": "all configured keys are rate-limited (retry after 3s)",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_from_key_pool_rate_limited_without_delay_has_no_retry_after():
    err = response_error_from_key_pool(KeyPoolError(PoolErrorKind.RATE_LIMITED, 0))
    assert err is not None
    response = err.to_response()
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_from_key_pool_auth_failed():
    err = response_error_from_key_pool(KeyPoolError(PoolErrorKind.AUTH_FAILED, 60))
    assert err is not None
    response = err.to_response(ANTHROPIC_ERRORS)
    assert response.status_code == 502
    assert "Retry-After" not in response.headers
    assert json.loads(response.content) == {
        "type": "error",
        "error": {
            "message": "all configured keys failed authentication",
            "type": "api_error",
            "param": None,
            "code": "server_error",
        },
    }


@pytest.mark.parametrize("err", [ValueError("x"), "rate limited", None])
def test_from_key_pool_ignores_everything_else(err):
    assert response_error_from_key_pool(err) is None


def _serving(response: http.Response) -> httpx2.Client:
    """An SDK transport that answers every request with a bridge-made response."""
    fields = [(n.decode(), v.decode()) for n, v in response.headers.fields]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(response.status_code, headers=fields, content=response.content)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


@pytest.mark.parametrize("anthropic_envelope", [False, True])
def test_openai_sdk_parses_the_envelope(anthropic_envelope):
    made = rate_limited(2.1).to_response(ANTHROPIC_ERRORS if anthropic_envelope else OPENAI_ERRORS)
    client = openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.openai.test/v1",
        max_retries=0,
        http_client=_serving(made),
    )
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert (info.value.type, info.value.code) == ("rate_limit_error", "rate_limit_exceeded")
    assert info.value.response.headers["retry-after"] == "3"
    # And it converts back to the same answer.
    again = response_error_from_api_error(info.value)
    assert again is not None
    assert (again.status, again.message, again.retry_after) == (429, "slow down", 3)


def test_anthropic_sdk_parses_the_envelope():
    made = new_response_error("Overloaded", "overloaded_error", None, 529).to_response(
        ANTHROPIC_ERRORS
    )
    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="https://api.anthropic.test",
        max_retries=0,
        http_client=_serving(made),
    )
    with pytest.raises(anthropic.OverloadedError) as info:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert (info.value.type, info.value.api_message) == ("overloaded_error", "Overloaded")
