"""Error categorisation for interception records (reference §6.7, with documented deviations)."""

import pytest

from aibridge.errors.categories import ERROR_TYPES, error_type
from aibridge.keys.pool import PoolErrorKind


@pytest.mark.parametrize(
    ("status", "provider_type", "expected"),
    [
        (200, "anthropic", None),
        (201, "openai", None),
        (304, "openai", None),
        (400, "openai", "bad_request"),
        (404, "anthropic", "bad_request"),
        (413, "anthropic", "bad_request"),
        (422, "openai", "bad_request"),
        (409, "openai", "bad_request"),  # other 4xx
        (415, "anthropic", "bad_request"),
        (401, "anthropic", "unauthorized"),
        (403, "openai", "unauthorized"),
        (429, "anthropic", "rate_limited"),
        (429, "openai", "rate_limited"),
        (529, "anthropic", "overloaded"),
        (529, "openai", "server_error"),  # each provider has its own overload status
        (503, "openai", "overloaded"),
        (503, "anthropic", "server_error"),
        (503, "OpenAI", "overloaded"),
        (408, "openai", "timeout"),
        (504, "anthropic", "timeout"),
        (500, "anthropic", "server_error"),
        (502, "openai", "server_error"),
        (599, "openai", "server_error"),
        (None, "anthropic", "unknown"),  # no response and no reason known
        (101, "openai", "unknown"),
        (600, "openai", "unknown"),
    ],
)
def test_by_status(status: int | None, provider_type: str, expected: str | None) -> None:
    assert error_type(status=status, provider_type=provider_type) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Deadline first, whatever else happened.
        ({"timed_out": True, "cancelled": True, "circuit_open": True,
          "key_pool_kind": "rate_limited", "status": 429}, "timeout"),
        ({"timed_out": True, "status": None}, "timeout"),
        # Client cancel next (the reference says "unknown"; we have a word for it).
        ({"cancelled": True, "circuit_open": True, "status": 500}, "cancelled"),
        ({"cancelled": True, "status": 200}, "cancelled"),
        # An open circuit is a server error even though we answered 503 ourselves.
        ({"circuit_open": True, "key_pool_kind": "auth_failed", "status": 503},
         "server_error"),
        # Key-pool exhaustion beats the last upstream status.
        ({"key_pool_kind": "rate_limited", "status": 500}, "rate_limited"),
        ({"key_pool_kind": "auth_failed", "status": 429}, "unauthorized"),
        ({"key_pool_kind": PoolErrorKind.RATE_LIMITED, "status": 429}, "rate_limited"),
        ({"key_pool_kind": PoolErrorKind.AUTH_FAILED, "status": 502}, "unauthorized"),
        ({"key_pool_kind": "something_new", "status": 502}, "server_error"),
        # overloaded_error wins over any status: the status behind it varies by hop.
        ({"upstream_error_type": "overloaded_error", "status": 200}, "overloaded"),
        ({"upstream_error_type": "overloaded_error", "status": 500}, "overloaded"),
        ({"upstream_error_type": "overloaded_error", "status": None}, "overloaded"),
        # ... but not over the signals above it.
        ({"upstream_error_type": "overloaded_error", "key_pool_kind": "rate_limited",
          "status": 200}, "rate_limited"),
        # Other upstream types only categorise what the status cannot (mid-stream, HTTP 200).
        ({"upstream_error_type": "api_error", "status": 200}, "server_error"),
        ({"upstream_error_type": "rate_limit_error", "status": 200}, "rate_limited"),
        ({"upstream_error_type": "invalid_request_error", "status": 200}, "bad_request"),
        ({"upstream_error_type": "server_error", "status": 200}, "server_error"),
        ({"upstream_error_type": "brand_new_error", "status": 200}, "unknown"),
        ({"upstream_error_type": "api_error", "status": 401}, "unauthorized"),
        ({"upstream_error_type": "", "status": 200}, None),
    ],
)
def test_precedence(kwargs: dict, expected: str) -> None:
    kwargs.setdefault("provider_type", "anthropic")
    assert error_type(**kwargs) == expected


def test_every_result_is_in_the_vocabulary() -> None:
    results = {error_type(status=s, provider_type=p, timed_out=t, cancelled=c)
               for s in (None, 200, 400, 401, 408, 429, 500, 503, 529)
               for p in ("anthropic", "openai") for t in (False, True) for c in (False, True)}
    assert results - {None} <= set(ERROR_TYPES)
