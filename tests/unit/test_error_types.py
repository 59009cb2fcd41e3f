"""Error categorisation for interception records (reference §6.7, with documented deviations)."""

import pytest

from aibridge.errors.categories import ERROR_TYPES, error_type
from aibridge.model import PoolErrorKind
from aibridge.providers.anthropic_messages import ANTHROPIC
from aibridge.providers.openai import OPENAI

# The status each provider API signals overload with (what `provider_type` used to select).
ANTHROPIC_OVERLOAD = 529
OPENAI_OVERLOAD = 503


def test_each_provider_api_signals_overload_with_its_own_status() -> None:
    assert ANTHROPIC.errors.overload_status == ANTHROPIC_OVERLOAD
    assert OPENAI.errors.overload_status == OPENAI_OVERLOAD


@pytest.mark.parametrize(
    ("status", "overload_status", "expected"),
    [
        (200, ANTHROPIC_OVERLOAD, None),
        (201, OPENAI_OVERLOAD, None),
        (304, OPENAI_OVERLOAD, None),
        (400, OPENAI_OVERLOAD, "bad_request"),
        (404, ANTHROPIC_OVERLOAD, "bad_request"),
        (413, ANTHROPIC_OVERLOAD, "bad_request"),
        (422, OPENAI_OVERLOAD, "bad_request"),
        (409, OPENAI_OVERLOAD, "bad_request"),  # other 4xx
        (415, ANTHROPIC_OVERLOAD, "bad_request"),
        (401, ANTHROPIC_OVERLOAD, "unauthorized"),
        (403, OPENAI_OVERLOAD, "unauthorized"),
        (429, ANTHROPIC_OVERLOAD, "rate_limited"),
        (429, OPENAI_OVERLOAD, "rate_limited"),
        (529, ANTHROPIC_OVERLOAD, "overloaded"),
        (529, OPENAI_OVERLOAD, "server_error"),  # each provider has its own overload status
        (503, OPENAI_OVERLOAD, "overloaded"),
        (503, ANTHROPIC_OVERLOAD, "server_error"),
        (408, OPENAI_OVERLOAD, "timeout"),
        (504, ANTHROPIC_OVERLOAD, "timeout"),
        (500, ANTHROPIC_OVERLOAD, "server_error"),
        (502, OPENAI_OVERLOAD, "server_error"),
        (599, OPENAI_OVERLOAD, "server_error"),
        (None, ANTHROPIC_OVERLOAD, "unknown"),  # no response and no reason known
        (101, OPENAI_OVERLOAD, "unknown"),
        (600, OPENAI_OVERLOAD, "unknown"),
    ],
)
def test_by_status(status: int | None, overload_status: int, expected: str | None) -> None:
    assert error_type(status=status, overload_status=overload_status) == expected


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
    kwargs.setdefault("overload_status", ANTHROPIC_OVERLOAD)
    assert error_type(**kwargs) == expected


def test_every_result_is_in_the_vocabulary() -> None:
    results = {error_type(status=s, overload_status=o, timed_out=t, cancelled=c)
               for s in (None, 200, 400, 401, 408, 429, 500, 503, 529)
               for o in (ANTHROPIC_OVERLOAD, OPENAI_OVERLOAD)
               for t in (False, True) for c in (False, True)}
    assert results - {None} <= set(ERROR_TYPES)
