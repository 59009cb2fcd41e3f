"""Cooldown parsing from provider headers (reference §5.4 vectors, §11.2 extensions)."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from mitmproxy.http import Headers

from aibridge.keys.retry_delay import (
    cooldown_after_429,
    parse_go_duration,
    quota_exhausted_for,
    reset_delay,
)

WHEN = datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC)
NOW = WHEN.timestamp()


def at(seconds: float) -> str:
    """RFC 3339 timestamp `seconds` after NOW, as Anthropic sends it."""
    return (WHEN + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


# -- Go durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("250μs", 250e-6),
        ("15ns", 15e-9),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("+2s", 2.0),
        (" 20s ", 20.0),
        ("1m30.25s", 90.25),
    ],
)
def test_go_duration(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "garbage", "1", "-1s", "-0.5s", "1x", "s", "1.5.5s",
                                  "1s2", "1 s", "1e3s", "ms"])
def test_go_duration_rejects_garbage_and_negatives(text):
    assert parse_go_duration(text) is None


# -- reset headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"anthropic-ratelimit-requests-reset": "2026-11-24T16:00:30Z"}, 30.0),
        ({"anthropic-ratelimit-tokens-reset": "2026-11-24T16:00:30.5Z"}, 30.5),
        ({"anthropic-ratelimit-input-tokens-reset": "2026-11-24T18:00:45+02:00"}, 45.0),
        ({"anthropic-ratelimit-output-tokens-reset": "2026-11-24T15:59:50-00:10"}, 590.0),
        ({"anthropic-ratelimit-requests-reset": "2026-11-24T16:00:07.123456789Z"}, 7.123456),
        ({"x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-tokens": "120ms"}, 0.12),
        # the soonest positive one wins; past, zero and garbage values are ignored
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 1.0),
        ({"anthropic-ratelimit-requests-reset": at(-5),
          "anthropic-ratelimit-tokens-reset": at(12)}, 12.0),
        ({"x-ratelimit-reset-requests": "0s", "x-ratelimit-reset-tokens": "3s"}, 3.0),
        ({"X-RateLimit-Reset-Tokens": "4s", "anthropic-ratelimit-tokens-reset": "soon"}, 4.0),
    ],
)
def test_reset_delay(headers, delay):
    assert reset_delay(headers, NOW) == pytest.approx(delay)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"anthropic-ratelimit-requests-reset": "tomorrow"},
        {"anthropic-ratelimit-requests-reset": at(-1)},
        {"x-ratelimit-reset-requests": "-1s"},
        {"x-ratelimit-reset-requests": "0s"},
        {"x-ratelimit-reset": "5s"},  # not a header any provider we know sends this way
    ],
)
def test_reset_delay_none(headers):
    assert reset_delay(headers, NOW) is None


# -- cooldown after a 429 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "cooldown"),
    [
        # reference §5.4 vectors (0 meant "use the default")
        ({"retry-after-ms": "2500"}, 2.5),
        ({"retry-after-ms": " 1500 "}, 1.5),
        ({"retry-after-ms": "-100"}, 60.0),
        ({"Retry-After": "60"}, 60.0),
        ({"Retry-After": " 30 "}, 30.0),
        ({"Retry-After": "0"}, 60.0),
        ({"Retry-After": "-5"}, 60.0),
        ({"retry-after-ms": "1500", "Retry-After": "30"}, 1.5),
        ({"retry-after-ms": "invalid", "Retry-After": "10"}, 10.0),
        ({"retry-after-ms": "0", "Retry-After": "5"}, 5.0),
        # extensions (§11.2)
        ({"retry-after-ms": "1234.5"}, 1.2345),
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": format_datetime(WHEN + timedelta(seconds=10), usegmt=True)}, 10.0),
        ({"Retry-After": format_datetime(WHEN - timedelta(seconds=10), usegmt=True)}, 60.0),
        ({"Retry-After": "soon"}, 60.0),
        ({"Retry-After": "7", "anthropic-ratelimit-requests-reset": at(40)}, 7.0),
        ({"anthropic-ratelimit-requests-reset": at(40)}, 40.0),
        ({"Retry-After": "soon", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 1.0),
        ({}, 60.0),
        # clamps
        ({"retry-after-ms": "200"}, 1.0),
        ({"Retry-After": "18000"}, 3600.0),
        ({"x-ratelimit-reset-requests": "120ms"}, 1.0),
        ({"anthropic-ratelimit-tokens-reset": at(5 * 3600)}, 3600.0),
    ],
)
def test_cooldown_after_429(headers, cooldown):
    assert cooldown_after_429(headers, NOW) == pytest.approx(cooldown)


def test_cooldown_accepts_mitmproxy_headers_case_insensitively():
    headers = Headers(**{"Retry_After": "3", "X_RateLimit_Reset_Tokens": "9s"})
    assert cooldown_after_429(headers, NOW) == 3.0
    del headers["Retry-After"]
    assert cooldown_after_429(headers, NOW) == 9.0


def test_cooldown_custom_default_and_bounds():
    assert cooldown_after_429({}, NOW, default=30.0) == 30.0
    assert cooldown_after_429({"Retry-After": "1"}, NOW, minimum=5.0) == 5.0
    assert cooldown_after_429({"Retry-After": "100"}, NOW, maximum=50.0) == 50.0


# -- proactive: remaining quota at 0 -----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"anthropic-ratelimit-requests-remaining": "0",
          "anthropic-ratelimit-requests-reset": at(30)}, 30.0),
        ({"anthropic-ratelimit-output-tokens-remaining": "0",
          "anthropic-ratelimit-output-tokens-reset": at(12.5)}, 12.5),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20s"}, 20.0),
        # the reset that matters is the spent limit's, not the soonest one
        ({"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "1s",
          "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        # several spent: the key is useless until the last one refills
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
          "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "8s"}, 8.0),
        ({"anthropic-ratelimit-tokens-remaining": "-3",
          "anthropic-ratelimit-tokens-reset": at(4)}, 4.0),
        ({"X-RateLimit-Remaining-Requests": " 0 ", "X-RateLimit-Reset-Requests": "5s"}, 5.0),
        # spent but no usable reset: default; reset already past (skew): the minimum
        ({"x-ratelimit-remaining-requests": "0"}, 60.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "later"}, 60.0),
        ({"anthropic-ratelimit-requests-remaining": "0",
          "anthropic-ratelimit-requests-reset": at(-2)}, 1.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"}, 1.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "5h"}, 3600.0),
    ],
)
def test_quota_exhausted_for(headers, delay):
    assert quota_exhausted_for(headers, NOW) == pytest.approx(delay)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "5s"},
        {"anthropic-ratelimit-tokens-remaining": "1000",
         "anthropic-ratelimit-tokens-reset": at(5)},
        {"x-ratelimit-remaining-requests": "none", "x-ratelimit-reset-requests": "5s"},
        {"x-ratelimit-remaining-requests": "0.0"},  # not an integer: not trusted
        {"x-ratelimit-reset-requests": "5s"},
    ],
)
def test_quota_not_exhausted(headers):
    assert quota_exhausted_for(headers, NOW) is None


def test_quota_custom_default():
    assert quota_exhausted_for({"x-ratelimit-remaining-tokens": "0"}, NOW, default=15.0) == 15.0


# -- mitmproxy Headers are read in one pass ----------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_mitmproxy_headers_read_like_a_plain_mapping(seed):
    import random

    rng = random.Random(seed)
    names = ["x-ratelimit-remaining-tokens", "X-RateLimit-Remaining-Tokens",
             "x-ratelimit-reset-tokens", "X-RATELIMIT-RESET-TOKENS",
             "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset",
             "content-type", "x-ratelimit-remaining-to\u212aens", "x-ratelimit-remaining-requests"]
    values = ["0", "1", " 0 ", "6m0s", "1s", at(30), "x", "0, 5"]
    for _ in range(100):
        headers = Headers(fields=[(rng.choice(names).encode(), rng.choice(values).encode())
                                  for _ in range(rng.randrange(0, 8))])
        as_dict = {k: v for k, v in headers.items()}  # the Mapping path, name by name
        assert quota_exhausted_for(headers, NOW) == quota_exhausted_for(as_dict, NOW)
        assert reset_delay(headers, NOW) == reset_delay(as_dict, NOW)
