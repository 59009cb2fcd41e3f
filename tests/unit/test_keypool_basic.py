"""KeyPool basics, KeyPoolError messages and Go-style durations (reference §5.5)."""

import pytest

from aibridge.keys.pool import Key, KeyPool
from aibridge.model import KeyPoolError, PoolErrorKind, format_duration


def test_empty_key_list_is_rejected():
    with pytest.raises(ValueError, match="provider 'openai': no keys provided"):
        KeyPool("openai", [])


def test_duplicate_keys_are_rejected_without_echoing_them():
    with pytest.raises(ValueError) as info:
        KeyPool("anthropic", ["sk-secret-1", "sk-2", "sk-secret-1"])
    assert str(info.value) == "provider 'anthropic': duplicate key"
    assert "sk-secret-1" not in str(info.value)


def test_select_returns_the_first_key():
    pool = KeyPool("openai", ["sk-1", "sk-2", "sk-3"])
    key = pool.select()
    assert key == Key(0, "sk-1")
    assert pool.select() is key


def test_keys_keep_priority_order_and_indexes():
    pool = KeyPool("openai", ["sk-b", "sk-a"])
    assert [(k.index, k.secret) for k in pool.keys] == [(0, "sk-b"), (1, "sk-a")]
    assert len(pool) == 2
    assert pool.provider == "openai"


def test_key_repr_hides_the_secret():
    key = KeyPool("openai", ["sk-very-secret-value"]).select()
    assert repr(key) == "Key(index=0)"
    assert str(key) == "Key(index=0)"
    assert "sk-very-secret-value" not in f"{key} {key!r} {[key]}"


def test_pool_repr_hides_the_secrets():
    pool = KeyPool("openai", ["sk-very-secret-value"])
    assert "sk-very-secret-value" not in repr(pool.keys)


@pytest.mark.parametrize(
    ("retry_after", "message"),
    [
        (3, "all configured keys are rate-limited (retry after 3s)"),
        (1.5, "all configured keys are rate-limited (retry after 2s)"),  # as Retry-After: 2
        (60, "all configured keys are rate-limited (retry after 1m0s)"),
        (0, "all configured keys are rate-limited (retry after 0s)"),
        (-2, "all configured keys are rate-limited (retry after 0s)"),
    ],
)
def test_rate_limited_message(retry_after, message):
    error = KeyPoolError(PoolErrorKind.RATE_LIMITED, retry_after)
    assert error.message == message
    assert str(error) == message


def test_negative_retry_after_is_clamped_to_zero():
    assert KeyPoolError(PoolErrorKind.RATE_LIMITED, -2).retry_after == 0.0


def test_auth_failed_message():
    error = KeyPoolError(PoolErrorKind.AUTH_FAILED)
    assert error.message == "all configured keys failed authentication"
    assert str(error) == "all configured keys failed authentication"
    assert error.retry_after == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0, "0s"),
        (0.25, "0.25s"),
        (0.001, "0.001s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (3, "3s"),
        (10, "10s"),
        (30.0, "30s"),
        (59, "59s"),
        (59.5, "59.5s"),
        (60, "1m0s"),
        (61, "1m1s"),
        (90.5, "1m30.5s"),
        (600, "10m0s"),
        (3599, "59m59s"),
        (3600, "1h0m0s"),
        (3661, "1h1m1s"),
        (7322.5, "2h2m2.5s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "allowed"),
    [(59.9996, {"1m0s", "59.9996s"}), (119.9996, {"2m0s", "1m59.9996s"})],
)
def test_format_duration_never_prints_sixty_seconds(seconds, allowed):
    assert format_duration(seconds) in allowed
