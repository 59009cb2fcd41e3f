"""Shared state in a real redis-server: the admission store's contract, what two processes
(two links) share, key pools, circuit breakers and failed logins across processes, and what
happens when Redis goes away and comes back."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from aibridge.access.failure_limit import AuthFailureLimiter, FailurePolicy
from aibridge.keys.circuit import BreakerSettings, CircuitBreakers, State
from aibridge.keys.pool import KeyPool, KeyState
from aibridge.state.redis import RedisState, safe_url
from aibridge.state.redis_shared import Shared
from aibridge.state.store import Balance
from tests.conftest import eventually

FAR = 4_000_000_000.0
SECRETS = ["sk-shared-key-one-0123456789", "sk-shared-key-two-0123456789"]


# -- the admission policies' store -----------------------------------------------------------

def test_money_keeps_the_store_contract(shared):
    s = shared().store
    assert s.balance("b") is None
    assert s.reserve("b", 40, 100, expires_at=FAR) == (True, Balance(0, 0))
    assert s.reserve("b", 40, 100, expires_at=FAR) == (True, Balance(0, 40))
    assert s.reserve("b", 40, 100, expires_at=FAR) == (True, Balance(0, 80))
    assert s.reserve("b", 40, 100, expires_at=FAR) == (False, Balance(0, 120))
    assert s.settle("b", 40, 10, expires_at=FAR) == Balance(10, 80)
    s.unreserve("b", 40)
    assert s.balance("b") == Balance(10, 40)
    assert s.prime("p", 70, expires_at=FAR) == Balance(70, 0)
    assert s.prime("p", 5, expires_at=FAR) == Balance(70, 0)
    assert s.mark_once("b", "warn:0.8") and not s.mark_once("b", "warn:0.8")
    big = 90_000_000_000_000  # $90,000 in nano-USD: exact, not a float's rounding
    assert s.prime("big", big, expires_at=FAR) == Balance(big, 0)
    assert s.settle("big", 0, 7, expires_at=FAR) == Balance(big + 7, 0)


def test_windows_and_slots_keep_the_store_contract(shared):
    s = shared().store
    for t in (0.0, 10.0, 20.0):
        assert s.hit("rpm", t, 60.0, 3)[0] == 0.0
    wait, entry = s.hit("rpm", 30.0, 60.0, 3)
    assert entry is None and wait == pytest.approx(30.0)
    wait, entry = s.hit("rpm", 60.0, 60.0, 3)
    assert entry is not None and wait == 0.0
    s.unhit("rpm", entry)
    assert s.total("rpm", 60.0, 60.0) == 2
    assert s.wait("tpm", 0.0, 60.0, 100) == 0.0
    s.charge("tpm", 0.0, 60, 60.0)
    s.charge("tpm", 5.0, 30, 60.0)
    s.charge("tpm", 10.0, 50, 60.0)
    assert s.wait("tpm", 11.0, 60.0, 100) == pytest.approx(49.0)
    assert s.wait("tpm", 60.0, 60.0, 100) == 0.0
    assert s.total("tpm", 61.0, 60.0) == 80
    assert s.acquire("c", 2) and s.acquire("c", 2) and not s.acquire("c", 2)
    s.release("c")
    assert s.in_use("c") == 1


def test_two_processes_count_against_the_same_limits(shared):
    a, b = shared().store, shared().store
    assert a.reserve("b", 60, 100, expires_at=FAR)[0]
    assert b.reserve("b", 60, 100, expires_at=FAR) == (True, Balance(0, 60))
    assert not a.reserve("b", 1, 100, expires_at=FAR)[0]
    b.settle("b", 60, 25, expires_at=FAR)
    assert a.balance("b") == Balance(25, 60)
    assert a.acquire("c", 2) and b.acquire("c", 2)
    assert not a.acquire("c", 2) and not b.acquire("c", 2)
    assert a.hit("rpm", 1.0, 60.0, 2)[1] is not None and b.hit("rpm", 1.0, 60.0, 2)[1]
    assert a.hit("rpm", 2.0, 60.0, 2)[1] is None


def test_concurrent_reservations_from_two_processes_never_pass_the_limit(shared):
    stores = [shared().store, shared().store]
    admitted: list[int] = []
    barrier = threading.Barrier(8)

    def worker(store: RedisState) -> None:
        barrier.wait()
        for _ in range(40):
            if store.reserve("b", 1, 100, expires_at=FAR)[0]:
                admitted.append(1)

    threads = [threading.Thread(target=worker, args=(stores[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(admitted) == 100
    assert stores[0].balance("b") == Balance(0, 100)


def test_the_slots_of_a_process_that_died_are_free_again(shared):
    a, b = shared(), shared()
    assert a.store.acquire("c", 1)
    assert not b.store.acquire("c", 1)
    a.link.client.delete(a.link.alive_key)  # its liveness key expired: the process is gone
    assert b.store.acquire("c", 1)


# -- key pools -------------------------------------------------------------------------------

class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def pool_of(s: Shared, wall: Clock, dead_retry_after: float = 600.0) -> KeyPool:
    pool = KeyPool("openai", list(SECRETS), dead_retry_after=dead_retry_after,
                   clock=lambda: wall.now - 1_000_000.0, wallclock=wall)
    pool.shared = s.sharing
    s.sharing.track([pool], None)
    return pool


def test_a_key_rate_limited_in_one_process_cools_in_the_other(shared):
    wall = Clock(time.time())
    a, b = pool_of(shared(), wall), pool_of(shared(), wall)
    key = a.select()
    assert key.index == 0
    assert a.mark(key, 429, {"retry-after": "30"}) == "rate_limited"
    assert eventually(lambda: b.state(b.keys[0]) is KeyState.COOLING)
    assert b.select().index == 1  # the other process never hands out the cooling key
    wall.now += 31
    assert b.state(b.keys[0]) is KeyState.VALID


def test_a_dead_key_is_probed_by_one_process_at_a_time(shared):
    wall = Clock(time.time())
    a, b = pool_of(shared(), wall, 60.0), pool_of(shared(), wall, 60.0)
    a.mark(a.keys[0], 401, {})
    assert eventually(lambda: b.state(b.keys[0]) is KeyState.DEAD)
    wall.now += 61
    first = a.attempt().next()
    second = b.attempt().next()
    assert first.index == 0  # a's probe
    assert second.index == 1  # b does not probe the same key in the same interval
    a.mark(first, 200, {})
    assert eventually(lambda: b.state(b.keys[0]) is KeyState.VALID)


def test_a_process_that_starts_later_takes_the_shared_key_states(shared):
    wall = Clock(time.time())
    a = pool_of(shared(), wall)
    a.mark(a.keys[1], 429, {"retry-after": "120"})
    late = shared()  # its start re-syncs the pools it tracks: none yet
    b = pool_of(late, wall)
    late.sharing.adopt([b])
    assert b.state(b.keys[1]) is KeyState.COOLING


# -- circuit breakers ------------------------------------------------------------------------

def breakers_of(s: Shared, wall: Clock, probes: int = 1) -> CircuitBreakers:
    breakers = CircuitBreakers(BreakerSettings(failure_threshold=4, window=10.0, open_for=30.0,
                                               half_open_probes=probes),
                               clock=lambda: wall.now - 1_000_000.0)
    breakers._wallclock = wall
    breakers.shared = s.sharing
    s.sharing.track([], breakers)
    return breakers


def test_failures_in_two_processes_open_the_circuit_for_both(shared):
    wall = Clock(time.time())
    a, b = breakers_of(shared(), wall), breakers_of(shared(), wall)
    for breakers in (a, b, a):
        breakers.record(breakers.admit("openai", "chat", "m"), failure=True)
    assert a.state("openai", "chat", "m") is State.CLOSED
    b.record(b.admit("openai", "chat", "m"), failure=True)  # the fourth, across both
    assert b.state("openai", "chat", "m") is State.OPEN
    assert eventually(lambda: a.state("openai", "chat", "m") is State.OPEN)
    refused = a.admit("openai", "chat", "m")
    assert not refused.allowed and 29 < refused.retry_after <= 30


def test_half_open_probes_are_shared_and_decide_for_everyone(shared):
    wall = Clock(time.time())
    a, b = breakers_of(shared(), wall), breakers_of(shared(), wall)
    for _ in range(4):
        a.record(a.admit("openai", "chat", "m"), failure=True)
    assert eventually(lambda: b.state("openai", "chat", "m") is State.OPEN)
    wall.now += 31
    probe = a.admit("openai", "chat", "m")
    assert probe.allowed and probe.probe
    other = b.admit("openai", "chat", "m")
    assert not other.allowed  # the only probe slot is a's
    a.record(probe, failure=False)
    assert a.state("openai", "chat", "m") is State.CLOSED
    assert eventually(lambda: b.state("openai", "chat", "m") is State.CLOSED)
    assert b.admit("openai", "chat", "m").allowed


# -- failed proxy logins ---------------------------------------------------------------------

def test_failed_logins_count_across_processes(shared):
    policy = FailurePolicy(per_user=4, per_address=100, global_limit=1000, window=60.0)
    a, b = AuthFailureLimiter(policy), AuthFailureLimiter(policy)
    a.shared, b.shared = shared().sharing, shared().sharing
    a.failed("10.0.0.9", "alice")
    b.failed("10.0.0.9", "alice")
    a.failed("10.0.0.9", "alice")
    assert b.refused("10.0.0.9", "alice") is None
    assert b.failed("10.0.0.9", "alice") == ["user"]
    assert a.refused("10.0.0.9", "alice") == "user"  # a counted only two itself
    assert a.refused("10.0.0.9", "bob") is None
    b.succeeded("10.0.0.10", "carol")
    keys = a.shared.link.client.keys("t:auth:*")
    assert keys and not any(b"alice" in k or b"carol" in k for k in keys)  # names are hashed


# -- Redis going away ------------------------------------------------------------------------

def test_an_outage_falls_back_at_once_logs_once_and_resyncs(shared, redis_server, caplog):
    caplog.set_level(logging.INFO, logger="aibridge")
    s = shared()
    wall = Clock(time.time())
    pool = pool_of(s, wall)
    assert s.store.reserve("b", 10, 100, expires_at=FAR)[0]
    s.store.settle("b", 10, 30, expires_at=FAR)
    redis_server.kill()
    started = time.monotonic()
    for _ in range(200):  # every call answers from the local state, none waits long
        s.store.acquire("c", 1000)
        assert s.store.hit("rpm", 1.0, 60.0, 10_000)[1] is not None
    ok, before = s.store.reserve("b", 10, 100, expires_at=FAR)
    assert ok and before.spent == 30  # the last spend Redis told of, not zero
    s.store.settle("b", 10, 5, expires_at=FAR)
    pool.mark(pool.keys[0], 429, {"retry-after": "300"})  # decided locally
    assert time.monotonic() - started < 2.0
    assert not s.link.reachable and s.degraded
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1
    assert "redis://127.0.0.1" in down[0].getMessage()
    redis_server.start()  # back, empty: the re-sync pushes what happened meanwhile
    assert eventually(lambda: s.link.reachable, timeout=10)
    assert s.store.balance("b") == Balance(5, 0)
    fresh = pool_of(shared(), wall)
    s.sharing.track([pool], None)
    fresh.shared.adopt([fresh])
    assert fresh.state(fresh.keys[0]) is KeyState.COOLING
    assert len([r for r in caplog.records if "is back;" in r.getMessage()]) == 1


def test_a_slow_redis_costs_one_timeout_then_nothing(shared, redis_server):
    s = shared()
    blocker = redis.Redis.from_url(redis_server.url)
    done = threading.Event()

    def pause() -> None:  # Redis busy for a second: every client waits
        blocker.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        done.set()
    threading.Thread(target=pause).start()
    assert done.wait(5)
    started = time.monotonic()
    for _ in range(50):
        s.store.acquire("c", 10)
    assert time.monotonic() - started < 0.5  # one 50 ms timeout, then local answers
    assert not s.link.reachable
    assert eventually(lambda: s.link.reachable, timeout=10)


def test_the_url_in_logs_and_health_has_no_password():
    assert safe_url("redis://:s3cret@cache:6379/0") == "redis://***@cache:6379/0"
    assert safe_url("redis://user:s3cret@cache:6379/0") == "redis://***@cache:6379/0"
    assert safe_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_start_with_redis_down_is_degraded_not_fatal(caplog):
    caplog.set_level(logging.INFO, logger="aibridge")
    s = Shared("redis://127.0.0.1:9/0", timeout=0.05, retry_interval=5, prefix="t")
    started = time.monotonic()
    s.start()
    try:
        assert time.monotonic() - started < 1.0
        assert s.degraded
        assert s.store.reserve("b", 1, 10, expires_at=FAR)[0]  # local state serves
    finally:
        s.close()

