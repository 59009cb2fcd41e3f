"""Key pool: states, walks, failover, exhaustion and counters (reference §5, §10.2, §11.3)."""

import math
import random
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mitmproxy.http import Headers

from aibridge.admission.credential import resolve_credential
from aibridge.config import BridgeConfig
from aibridge.counters import Registry
from aibridge.intercept import ResponseError, response_error_from_key_pool
from aibridge.keys.pool import (
    Key,
    KeyPool,
    KeyPoolError,
    KeyState,
    PoolErrorKind,
)
from aibridge.providers import build_registry

SECRETS = ["sk-key-zero-0123456789abcdef", "sk-key-one-0123456789abcdef",
           "sk-key-two-0123456789abcdef"]
WALL = datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC).timestamp()
VALID, COOLING, DEAD = KeyState.VALID, KeyState.COOLING, KeyState.DEAD


class Clock:
    """Monotonic and wall clock moving together, by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL + self.t - 1000.0

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counters() -> Registry:
    return Registry()


def make(clock: Clock, counters: Registry, n: int = 3, **kw) -> KeyPool:
    return KeyPool("openai", SECRETS[:n], counters=counters, clock=clock,
                   wallclock=clock.wall, **kw)


def states(pool: KeyPool) -> list[KeyState]:
    return [pool.state(k) for k in pool.keys]


def transitions(counters: Registry, reason: str) -> float:
    return counters.key_transitions.value(provider="openai", reason=reason)


def exhaustions(counters: Registry, outcome: str) -> float:
    return counters.key_exhaustions.value(provider="openai", outcome=outcome)


def walk(pool: KeyPool, answers: list[tuple[int, dict]]) -> tuple[list[int], KeyPoolError | None]:
    """Drive one request's failover loop; answers are (status, headers) per key tried."""
    seen: list[int] = []
    with pool.attempt() as attempt:
        for status, headers in answers:
            try:
                key = attempt.next()
            except KeyPoolError as e:
                return seen, e
            seen.append(key.index)
            pool.mark(key, status, headers)
            if not pool.should_fail_over(status):
                break
        else:
            try:
                attempt.next()
            except KeyPoolError as e:
                return seen, e
    return seen, None


# -- construction ------------------------------------------------------------------------------


def test_validation():
    with pytest.raises(ValueError, match="no keys provided"):
        KeyPool("openai", [])
    with pytest.raises(ValueError, match="duplicate key"):
        KeyPool("openai", ["a", "b", "a"])
    with pytest.raises(ValueError, match="strategy"):
        KeyPool("openai", ["a"], strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dead_retry_after"):
        KeyPool("openai", ["a"], dead_retry_after=0)


def test_new_pool_is_all_valid_and_ordered(clock, counters):
    pool = make(clock, counters)
    assert len(pool) == 3
    assert [k.index for k in pool.keys] == [0, 1, 2]
    assert states(pool) == [VALID] * 3
    assert pool.select() is pool.keys[0]
    assert SECRETS[0] not in repr(pool.keys[0])


def test_should_fail_over_only_on_key_refusals(clock, counters):
    pool = make(clock, counters)
    assert [s for s in (200, 400, 401, 403, 404, 429, 500, 503, 529)
            if pool.should_fail_over(s)] == [401, 403, 429]


def test_foreign_key_is_refused(clock, counters):
    pool = make(clock, counters)
    with pytest.raises(ValueError):
        pool.mark(Key(0, "sk-other"), 429, {})
    with pytest.raises(ValueError):
        pool.state(Key(7, SECRETS[0]))


# -- reference §10.2 scenarios -----------------------------------------------------------------


def test_single_valid_key(clock, counters):
    pool = make(clock, counters, n=1)
    seen, err = walk(pool, [(200, {})])
    assert (seen, err) == ([0], None)
    assert states(pool) == [VALID]
    assert counters.failover_attempts.count(provider="openai") == 1
    assert counters.failover_attempts.sum(provider="openai") == 1


def test_failover_after_429(clock, counters):
    pool = make(clock, counters, n=2)
    seen, err = walk(pool, [(429, {"Retry-After": "5"}), (200, {})])
    assert (seen, err) == ([0, 1], None)
    assert states(pool) == [COOLING, VALID]
    assert transitions(counters, "rate_limited") == 1
    assert counters.failover_attempts.sum(provider="openai") == 2


@pytest.mark.parametrize(("status", "reason"), [(401, "unauthorized"), (403, "forbidden")])
def test_failover_after_auth_failure(clock, counters, status, reason):
    pool = make(clock, counters, n=2)
    seen, err = walk(pool, [(status, {}), (200, {})])
    assert (seen, err) == ([0, 1], None)
    assert states(pool) == [DEAD, VALID]
    assert transitions(counters, reason) == 1


def test_all_keys_rate_limited(clock, counters):
    pool = make(clock, counters)
    seen, err = walk(pool, [(429, {"Retry-After": "5"}), (429, {"Retry-After": "3"}),
                            (429, {"Retry-After": "10"})])
    assert seen == [0, 1, 2]
    assert err is not None and err.kind is PoolErrorKind.RATE_LIMITED
    assert err.retry_after == 3
    assert err.message == "all configured keys are rate-limited (retry after 3s)"
    assert states(pool) == [COOLING] * 3
    assert transitions(counters, "rate_limited") == 3
    assert exhaustions(counters, "rate_limited") == 1
    response = response_error_from_key_pool(err).to_response()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_retry_after_is_the_ceiling_of_the_shortest_cooldown(clock, counters):
    pool = make(clock, counters, n=2)
    walk(pool, [(429, {"retry-after-ms": "2500"}), (429, {"Retry-After": "9"})])
    clock.advance(0.3)
    with pytest.raises(KeyPoolError) as info:
        pool.attempt().next()
    assert info.value.retry_after == pytest.approx(2.2)
    assert response_error_from_key_pool(info.value).to_response().headers["Retry-After"] == "3"


def test_all_keys_unauthorized(clock, counters):
    pool = make(clock, counters, n=2)
    seen, err = walk(pool, [(401, {}), (403, {})])
    assert seen == [0, 1]
    assert err is not None and err.kind is PoolErrorKind.AUTH_FAILED
    assert err.message == "all configured keys failed authentication"
    assert states(pool) == [DEAD, DEAD]
    assert exhaustions(counters, "auth_failed") == 1
    assert exhaustions(counters, "rate_limited") == 0
    response = response_error_from_key_pool(err).to_response()
    assert response.status_code == 502
    assert "Retry-After" not in response.headers


def test_dead_and_cooling_mix_is_rate_limited(clock, counters):
    pool = make(clock, counters, n=2)
    _, err = walk(pool, [(401, {}), (429, {"Retry-After": "7"})])
    assert err is not None and err.kind is PoolErrorKind.RATE_LIMITED
    assert err.retry_after == 7


@pytest.mark.parametrize("status", [200, 201, 400, 404, 500, 503, 529])
def test_other_statuses_do_not_mark_or_fail_over(clock, counters, status):
    pool = make(clock, counters)
    seen, err = walk(pool, [(status, {}), (200, {})])
    assert (seen, err) == ([0], None)
    assert states(pool) == [VALID] * 3
    assert counters.key_transitions.snapshot() == {}


# -- marking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "cooling_at", "valid_at"),
    [
        ({"Retry-After": "5"}, 4.9, 5.0),
        ({"retry-after-ms": "1500"}, 1.4, 1.5),
        ({}, 50, 65),  # default 60 s
        ({"Retry-After": "-5"}, 59, 60),  # negative ⇒ default
        ({"x-ratelimit-reset-requests": "6m0s"}, 359, 360),
        ({"Retry-After": "18000"}, 3599, 3600),
    ],
)
def test_429_cooldown(clock, counters, headers, cooling_at, valid_at):
    pool = make(clock, counters)
    key = pool.keys[0]
    assert pool.mark(key, 429, headers) == "rate_limited"
    clock.advance(cooling_at)
    assert pool.state(key) is COOLING
    clock.advance(valid_at - cooling_at)
    assert pool.state(key) is VALID


def test_429_reads_mitmproxy_headers(clock, counters):
    pool = make(clock, counters)
    pool.mark(pool.keys[0], 429, Headers(retry_after="2"))
    clock.advance(2.5)
    assert pool.state(pool.keys[0]) is VALID


def test_cooldown_extends_but_never_shortens(clock, counters):
    pool = make(clock, counters)
    key = pool.keys[0]
    assert pool.mark(key, 429, {"Retry-After": "5"}) == "rate_limited"
    assert pool.mark(key, 429, {"Retry-After": "30"}) is None  # already cooling: no transition
    clock.advance(20)
    assert pool.state(key) is COOLING
    assert pool.mark(key, 429, {"Retry-After": "1"}) is None  # keeps the later deadline
    clock.advance(9)
    assert pool.state(key) is COOLING
    clock.advance(1)
    assert pool.state(key) is VALID
    assert transitions(counters, "rate_limited") == 1
    assert pool.mark(key, 429, {"Retry-After": "1"}) == "rate_limited"  # a new episode counts
    assert transitions(counters, "rate_limited") == 2


def test_429_on_a_dead_key_is_a_no_op(clock, counters):
    pool = make(clock, counters)
    key = pool.keys[0]
    assert pool.mark(key, 401, {}) == "unauthorized"
    assert pool.mark(key, 429, {"Retry-After": "5"}) is None
    assert pool.state(key) is DEAD
    assert transitions(counters, "rate_limited") == 0


def test_dead_beats_cooling_and_counts_once(clock, counters):
    pool = make(clock, counters)
    key = pool.keys[0]
    pool.mark(key, 429, {"Retry-After": "100"})
    assert pool.mark(key, 403, {}) == "forbidden"
    assert pool.state(key) is DEAD
    assert pool.mark(key, 403, {}) is None
    assert pool.mark(key, 401, {}) is None
    assert transitions(counters, "forbidden") == 1
    assert transitions(counters, "unauthorized") == 0


def test_late_success_does_not_revive_a_dead_key(clock, counters):
    pool = make(clock, counters)
    key = pool.keys[0]
    pool.mark(key, 401, {})
    assert pool.mark(key, 200, {}) is None  # answered before the 401: not a probe
    assert pool.state(key) is DEAD


# -- dead keys are re-probed -------------------------------------------------------------------


def test_dead_key_is_reprobed_after_ten_minutes_and_recovers(clock, counters):
    pool = make(clock, counters, n=2)
    k0 = pool.keys[0]
    pool.mark(k0, 401, {})
    clock.advance(599)
    assert pool.attempt().next().index == 1
    clock.advance(1)
    probe = pool.attempt()
    assert probe.next() is k0
    assert pool.snapshot()[0]["probing"] is True
    # only one request probes at a time
    assert pool.attempt().next().index == 1
    assert pool.mark(k0, 200, {}) == "recovered"
    assert pool.state(k0) is VALID
    assert pool.attempt().next() is k0
    assert transitions(counters, "recovered") == 1


def test_failed_probe_is_dead_for_another_interval(clock, counters):
    pool = make(clock, counters, n=2)
    k0 = pool.keys[0]
    pool.mark(k0, 403, {})
    clock.advance(600)
    attempt = pool.attempt()
    assert attempt.next() is k0
    clock.advance(2)
    assert pool.mark(k0, 403, {}) is None  # still dead: no transition
    assert attempt.next().index == 1  # the probing request fails over
    assert pool.state(k0) is DEAD
    clock.advance(599)
    assert pool.attempt().next().index == 1
    clock.advance(1)
    assert pool.attempt().next() is k0
    assert transitions(counters, "forbidden") == 1


def test_unreported_probe_releases_after_an_interval(clock, counters):
    pool = make(clock, counters, n=2, dead_retry_after=60)
    k0 = pool.keys[0]
    pool.mark(k0, 401, {})
    clock.advance(60)
    assert pool.attempt().next() is k0  # and the request vanishes (transport error)
    clock.advance(59)
    assert pool.attempt().next().index == 1
    clock.advance(1)
    assert pool.attempt().next() is k0


def test_inconclusive_probe_leaves_the_key_dead(clock, counters):
    pool = make(clock, counters, n=2, dead_retry_after=60)
    k0 = pool.keys[0]
    pool.mark(k0, 401, {})
    clock.advance(60)
    assert pool.attempt().next() is k0
    assert pool.mark(k0, 500, {}) is None
    assert pool.state(k0) is DEAD
    assert pool.mark(k0, 200, {}) is None  # the probe is over; a stray 2xx is not one
    assert pool.state(k0) is DEAD


def test_probe_answered_429_proves_the_key_and_cools_it(clock, counters):
    pool = make(clock, counters, n=2, dead_retry_after=60)
    k0 = pool.keys[0]
    pool.mark(k0, 401, {})
    clock.advance(60)
    assert pool.attempt().next() is k0
    assert pool.mark(k0, 429, {"Retry-After": "5"}) == "rate_limited"
    assert pool.state(k0) is COOLING
    clock.advance(5)
    assert pool.state(k0) is VALID


def test_all_dead_reports_time_to_next_probe(clock, counters):
    pool = make(clock, counters, n=2)
    walk(pool, [(401, {}), (401, {})])
    clock.advance(100)
    with pytest.raises(KeyPoolError) as info:
        pool.attempt().next()
    assert info.value.kind is PoolErrorKind.AUTH_FAILED
    assert info.value.retry_after == pytest.approx(500)


def test_dead_until_restart_when_reprobing_is_off(clock, counters):
    pool = make(clock, counters, n=1, dead_retry_after=math.inf)
    pool.mark(pool.keys[0], 401, {})
    clock.advance(10**9)
    with pytest.raises(KeyPoolError) as info:
        pool.attempt().next()
    assert (info.value.kind, info.value.retry_after) == (PoolErrorKind.AUTH_FAILED, 0.0)


# -- proactive: remaining quota reaches 0 ------------------------------------------------------


def test_spent_quota_skips_the_key_until_reset(clock, counters):
    pool = make(clock, counters, n=2)
    k0 = pool.keys[0]
    spent = {"anthropic-ratelimit-requests-remaining": "0",
             "anthropic-ratelimit-requests-reset": "2026-11-24T16:00:30Z"}
    assert pool.mark(k0, 200, spent) == "quota_exhausted"
    assert pool.state(k0) is COOLING
    assert pool.attempt().next().index == 1
    clock.advance(29)
    assert pool.attempt().next().index == 1
    clock.advance(1)
    assert pool.attempt().next() is k0
    assert transitions(counters, "quota_exhausted") == 1


def test_spent_quota_uses_the_injected_wall_clock(clock, counters):
    pool = make(clock, counters)
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20s"}
    assert pool.mark(pool.keys[0], 500, headers, now=WALL) == "quota_exhausted"
    clock.advance(19)
    assert pool.state(pool.keys[0]) is COOLING


def test_quota_left_is_no_mark(clock, counters):
    pool = make(clock, counters)
    headers = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "20s"}
    assert pool.mark(pool.keys[0], 200, headers) is None
    assert pool.state(pool.keys[0]) is VALID


# -- strategies and walks ----------------------------------------------------------------------


def test_priority_always_starts_at_the_first_healthy_key(clock, counters):
    pool = make(clock, counters)
    assert [pool.attempt().next().index for _ in range(4)] == [0, 0, 0, 0]
    pool.mark(pool.keys[0], 429, {})
    assert [pool.attempt().next().index for _ in range(2)] == [1, 1]


def test_round_robin_spreads_requests(clock, counters):
    pool = make(clock, counters, strategy="round_robin")
    assert [pool.attempt().next().index for _ in range(5)] == [0, 1, 2, 0, 1]


def test_round_robin_skips_unhealthy_keys_and_wraps(clock, counters):
    pool = make(clock, counters, strategy="round_robin")
    pool.mark(pool.keys[1], 429, {})
    assert [pool.attempt().next().index for _ in range(3)] == [0, 2, 2]
    attempt = pool.attempt()  # starts at key 0 again
    assert [attempt.next().index, attempt.next().index] == [0, 2]


def test_round_robin_walk_wraps_from_its_offset(clock, counters):
    pool = make(clock, counters, strategy="round_robin")
    pool.attempt().next()
    pool.attempt().next()
    attempt = pool.attempt()
    assert [attempt.next().index for _ in range(3)] == [2, 0, 1]


def test_idle_attempts_do_not_rotate(clock, counters):
    pool = make(clock, counters, strategy="round_robin")
    pool.attempt()
    pool.attempt()
    assert pool.attempt().next().index == 0


def test_attempt_never_repeats_a_key(clock, counters):
    pool = make(clock, counters)
    attempt = pool.attempt()
    assert [attempt.next().index for _ in range(3)] == [0, 1, 2]
    assert (attempt.attempts, attempt.last) == (3, pool.keys[2])
    with pytest.raises(KeyPoolError) as info:
        attempt.next()
    # every key is still valid, only this walk has used them: retry now (reference §5.5)
    assert (info.value.kind, info.value.retry_after) == (PoolErrorKind.RATE_LIMITED, 0.0)
    assert exhaustions(counters, "rate_limited") == 1


def test_key_freed_mid_walk_is_rate_limited_with_zero(clock, counters):
    pool = make(clock, counters, n=2)
    attempt = pool.attempt()
    for _ in range(2):
        pool.mark(attempt.next(), 429, {"Retry-After": "1"})
    clock.advance(2)
    with pytest.raises(KeyPoolError) as info:
        attempt.next()
    assert info.value.retry_after == 0
    assert response_error_from_key_pool(info.value).to_response().status_code == 429


def test_walks_share_pool_state(clock, counters):
    pool = make(clock, counters)
    a, b = pool.attempt(), pool.attempt()
    assert a.next() is b.next() is pool.keys[0]
    pool.mark(pool.keys[0], 429, {})
    assert b.next().index == 1
    assert pool.attempt().next().index == 1
    assert a.next().index == 1  # each walk has its own set of tried keys


def test_finish_observes_once_and_skips_empty_walks(clock, counters):
    pool = make(clock, counters)
    empty = pool.attempt()
    empty.finish()
    assert counters.failover_attempts.count(provider="openai") == 0
    attempt = pool.attempt()
    attempt.next()
    attempt.next()
    attempt.finish()
    attempt.finish()
    assert counters.failover_attempts.count(provider="openai") == 1
    assert counters.failover_attempts.sum(provider="openai") == 2


def test_last_is_none_before_the_first_key(clock, counters):
    attempt = make(clock, counters).attempt()
    assert (attempt.attempts, attempt.last) == (0, None)


# -- inspection --------------------------------------------------------------------------------


def test_snapshot_has_hints_states_and_no_secrets(clock, counters):
    pool = make(clock, counters)
    pool.mark(pool.keys[0], 429, {"Retry-After": "5"})
    pool.mark(pool.keys[1], 401, {})
    clock.advance(2)
    rows = pool.snapshot()
    assert [(r["index"], r["state"]) for r in rows] == [(0, "cooling"), (1, "dead"), (2, "valid")]
    assert [r["usable_in"] for r in rows] == [pytest.approx(3), pytest.approx(598), 0.0]
    assert rows[0]["hint"] == "sk-k...cdef"
    assert not any(secret in repr(rows) for secret in SECRETS)


def test_default_counters_exist(clock):
    pool = KeyPool("openai", ["a"], clock=clock, wallclock=clock.wall)
    pool.mark(pool.keys[0], 401, {})
    assert pool.counters.key_transitions.value(provider="openai", reason="unauthorized") == 1


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_walks_and_marks(counters):
    pool = KeyPool("openai", [f"sk-{i:02d}-0123456789" for i in range(8)], counters=counters,
                   strategy="round_robin", dead_retry_after=0.001)
    errors: list[BaseException] = []
    statuses = [200, 200, 429, 401, 403, 500]
    headers = {"retry-after-ms": "1", "x-ratelimit-remaining-tokens": "1"}

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                with pool.attempt() as attempt:
                    seen = set()
                    while True:
                        try:
                            key = attempt.next()
                        except KeyPoolError:
                            break
                        assert key.index not in seen
                        seen.add(key.index)
                        status = rng.choice(statuses)
                        pool.mark(key, status, headers)
                        if not pool.should_fail_over(status):
                            break
                pool.snapshot()
        except BaseException as e:  # surfaced to the main thread below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counters.failover_attempts.count(provider="openai") > 0
    assert {r["state"] for r in pool.snapshot()} <= {"valid", "cooling", "dead"}


# -- the credential policy walks the caller's attempt ------------------------------------------


def test_resolve_credential_takes_the_next_key_of_the_attempt():
    config = BridgeConfig.model_validate({"providers": {"openai": {"credentials": "centralized"}}})
    keys = "sk-central-one-0123,sk-central-two-0123"
    reg = build_registry(config, Path("/nonexistent"), environ={"AIBRIDGE_OPENAI_KEYS": keys})
    provider = next(p for p in reg.providers if p.name == "openai")
    assert provider.pool is not None
    attempt = provider.pool.attempt()
    first = resolve_credential(provider, Headers(), None, attempt=attempt)
    assert (first.key, first.attempt) == (provider.pool.keys[0], attempt)
    second = resolve_credential(provider, Headers(), None, attempt=attempt)
    assert second.key == provider.pool.keys[1]
    assert second.value == "Bearer sk-central-two-0123"
    with pytest.raises(ResponseError) as info:
        resolve_credential(provider, Headers(), None, attempt=attempt)
    assert info.value.status == 429
    assert resolve_credential(provider, Headers(), None).attempt is None  # no walk given
