"""Circuit breakers per (provider, route, model) (reference §8, §10.4, §11 weakness 9)."""

import json
import threading

import pytest
from anthropic.types import ErrorResponse
from openai.types.shared import ErrorObject

from aibridge.counters import Registry
from aibridge.errors.shapes import ANTHROPIC_ERRORS
from aibridge.keys.circuit import (
    Admission,
    BreakerSettings,
    CircuitBreakers,
    State,
    circuit_open_error,
)

KEY = ("anthropic", "/v1/messages", "claude-sonnet-4")
# A little past open_for (0.05 s): exact float boundaries are not what these tests are about.
AFTER_OPEN = 0.051
LABELS = {"provider": KEY[0], "endpoint": KEY[1], "model": KEY[2]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def counters() -> Registry:
    return Registry()


def make(clock, counters=None, **kw) -> CircuitBreakers:
    settings = {"failure_threshold": 2, "open_for": 0.05, "half_open_probes": 1} | kw
    return CircuitBreakers(BreakerSettings(**settings), counters=counters, clock=clock)


def fail(cb: CircuitBreakers, key=KEY) -> Admission:
    a = cb.admit(*key)
    assert a.allowed
    cb.record(a, failure=True)
    return a


def trip(cb: CircuitBreakers, key=KEY) -> None:
    for _ in range(cb.settings.failure_threshold):
        fail(cb, key)
    assert cb.state(*key) is State.OPEN


def test_defaults():
    s = BreakerSettings()
    assert (s.failure_threshold, s.window, s.open_for, s.half_open_probes) == (5, 10.0, 30.0, 3)
    cb = CircuitBreakers(s)
    assert [cb.is_failure_status(x) for x in (503, 504, 529, 429, 500, 502, 200)] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "kw", [{"failure_threshold": 0}, {"half_open_probes": 0}, {"window": 0}, {"open_for": -1}]
)
def test_settings_validated(kw):
    with pytest.raises(ValueError):
        BreakerSettings(**kw)


def test_full_cycle(clock, counters):
    cb = make(clock, counters)
    # Failures reach the provider (they are admitted).
    fail(cb)
    fail(cb)
    rejected = cb.admit(*KEY)
    assert not rejected.allowed
    assert rejected.retry_after == pytest.approx(0.05)
    assert counters.circuit_trips.value(**LABELS) == 1
    assert counters.circuit_state.value(**LABELS) == 1
    assert counters.circuit_rejects.value(**LABELS) == 1
    cb.record(rejected, failure=False)  # a refusal is no outcome
    assert cb.state(*KEY) is State.OPEN

    clock.advance(0.02)
    assert cb.admit(*KEY).retry_after == pytest.approx(0.03)
    clock.advance(AFTER_OPEN - 0.02)
    assert cb.state(*KEY) is State.HALF_OPEN
    assert counters.circuit_state.value(**LABELS) == 0.5
    probe = cb.admit(*KEY)
    assert probe.allowed and probe.probe
    cb.record(probe, failure=False)
    assert cb.state(*KEY) is State.CLOSED
    assert counters.circuit_state.value(**LABELS) == 0
    # Later requests all reach the provider; the window restarted empty.
    for _ in range(5):
        a = cb.admit(*KEY)
        assert a.allowed
        cb.record(a, failure=False)
    fail(cb)
    assert cb.state(*KEY) is State.CLOSED
    assert counters.circuit_trips.value(**LABELS) == 1
    assert counters.circuit_rejects.value(**LABELS) == 2


def test_half_open_failure_reopens(clock, counters):
    cb = make(clock, counters)
    trip(cb)
    clock.advance(AFTER_OPEN)
    probe = cb.admit(*KEY)
    cb.record(probe, failure=True)
    assert cb.state(*KEY) is State.OPEN
    assert counters.circuit_trips.value(**LABELS) == 2
    assert counters.circuit_state.value(**LABELS) == 1
    rejected = cb.admit(*KEY)
    assert not rejected.allowed and rejected.retry_after == pytest.approx(0.05)


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_only_n_probes(clock, counters, probes):
    cb = make(clock, counters, half_open_probes=probes)
    trip(cb)
    clock.advance(AFTER_OPEN)
    admitted = [cb.admit(*KEY) for _ in range(probes)]
    assert all(a.allowed and a.probe for a in admitted)
    extra = cb.admit(*KEY)
    assert not extra.allowed
    assert 0 < extra.retry_after <= 1
    assert counters.circuit_rejects.value(**LABELS) == 1
    # A released slot (client went away) can be used again.
    cb.release(admitted[0])
    assert cb.admit(*KEY).allowed


def test_lost_probe_does_not_wedge_the_breaker(clock):
    cb = make(clock)
    trip(cb)
    clock.advance(AFTER_OPEN)
    assert cb.admit(*KEY).allowed  # never reported
    assert not cb.admit(*KEY).allowed
    clock.advance(AFTER_OPEN)
    assert cb.admit(*KEY).allowed


def test_models_are_isolated(clock):
    cb = make(clock)
    other = (KEY[0], KEY[1], "claude-haiku-4")
    trip(cb)
    assert cb.admit(*other).allowed
    assert not cb.admit(*KEY).allowed
    assert cb.admit(KEY[0], "/v1/chat/completions", KEY[2]).allowed
    assert cb.admit("other-provider", KEY[1], KEY[2]).allowed


def test_failures_outside_window_do_not_count(clock):
    cb = make(clock, failure_threshold=3, window=10.0)
    fail(cb)
    clock.advance(6)
    fail(cb)
    clock.advance(6)  # the first failure is now 12 s old
    fail(cb)
    assert cb.state(*KEY) is State.CLOSED
    fail(cb)  # three within 10 s
    assert cb.state(*KEY) is State.OPEN


def test_success_does_not_reset_the_window(clock):
    cb = make(clock)
    fail(cb)
    ok = cb.admit(*KEY)
    cb.record(ok, failure=False)
    fail(cb)
    assert cb.state(*KEY) is State.OPEN


def test_stale_admission_cannot_close_open_breaker(clock):
    cb = make(clock)
    slow = cb.admit(*KEY)  # admitted while closed, answers late
    trip(cb)
    cb.record(slow, failure=False)
    assert cb.state(*KEY) is State.OPEN
    clock.advance(AFTER_OPEN)
    assert cb.state(*KEY) is State.HALF_OPEN
    cb.record(slow, failure=False)
    assert cb.state(*KEY) is State.HALF_OPEN
    cb.record(slow, failure=True)  # nor reopen it
    assert cb.state(*KEY) is State.HALF_OPEN
    # A probe from an earlier half-open round does not decide a later one either.
    old_probe = cb.admit(*KEY)
    assert old_probe.probe
    clock.advance(AFTER_OPEN)  # old_probe is presumed lost; its slot goes to a new probe
    cb.record(cb.admit(*KEY), failure=True)
    clock.advance(AFTER_OPEN)
    assert cb.state(*KEY) is State.HALF_OPEN
    cb.record(old_probe, failure=False)
    assert cb.state(*KEY) is State.HALF_OPEN


def test_lru_bound_evicts_closed_breakers_only(clock):
    cb = CircuitBreakers(BreakerSettings(failure_threshold=1), clock=clock, max_models=3)
    trip(cb, ("p", "r", "open"))
    for i in range(10):
        cb.admit("p", "r", f"m{i}")
    models = [s["model"] for s in cb.snapshot()]
    assert len(models) == 3
    assert models == ["open", "m8", "m9"]
    # Recently used breakers survive; an evicted one's admission is simply ignored.
    evicted = cb.admit("p", "r", "m8")
    cb.admit("p", "r", "m10")
    assert [s["model"] for s in cb.snapshot()] == ["open", "m8", "m10"]
    stale = Admission(True, key=("p", "r", "m9"), generation=1)
    cb.record(stale, failure=True)
    assert cb.state("p", "r", "m9") is State.CLOSED
    assert evicted.allowed


def test_recreated_breaker_ignores_admissions_of_the_evicted_one(clock):
    cb = CircuitBreakers(BreakerSettings(failure_threshold=1), clock=clock, max_models=1)
    old = cb.admit("p", "r", "a")
    cb.admit("p", "r", "b")  # evicts "a"
    cb.admit("p", "r", "a")  # a fresh breaker for "a"
    cb.record(old, failure=True)
    assert cb.state("p", "r", "a") is State.CLOSED


def test_snapshot(clock):
    cb = make(clock)
    trip(cb)
    fail(cb, ("p", "r", "m"))
    snap = {s["model"]: s for s in cb.snapshot()}
    assert snap[KEY[2]] == {
        "provider": KEY[0],
        "endpoint": KEY[1],
        "model": KEY[2],
        "state": "open",
        "failures": 0,
        "probes_in_flight": 0,
        "retry_after": pytest.approx(0.05),
    }
    assert snap["m"]["state"] == "closed" and snap["m"]["failures"] == 1
    json.dumps(cb.snapshot())


def test_thread_safety_smoke(counters):
    cb = CircuitBreakers(
        BreakerSettings(failure_threshold=50, open_for=0.001, half_open_probes=2),
        counters=counters,
        max_models=8,
    )
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(2000):
                a = cb.admit("p", "r", f"m{(n + i) % 12}")
                if a.allowed:
                    cb.record(a, failure=i % 3 == 0)
                if i % 500 == 0:
                    cb.snapshot()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cb.snapshot()) <= 12
    for s in cb.snapshot():
        assert 0 <= s["probes_in_flight"] <= 2


def test_circuit_open_error_shape():
    err = circuit_open_error(3.2)  # a short wait: worth the client's automatic retry
    assert (err.status, err.message, err.type, err.code) == (
        503,
        "circuit breaker is open",
        "api_error",
        "service_unavailable",
    )
    resp = err.to_response()
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "4"
    assert "x-should-retry" not in resp.headers
    assert resp.headers["Content-Type"] == "application/json"
    assert json.loads(resp.content) == {
        "error": {
            "message": "circuit breaker is open",
            "type": "api_error",
            "param": None,
            "code": "service_unavailable",
        }
    }
    anthropic_body = json.loads(err.to_response(ANTHROPIC_ERRORS).content)
    assert anthropic_body["type"] == "error"
    assert anthropic_body["error"]["message"] == "circuit breaker is open"


def test_a_long_open_circuit_tells_the_client_not_to_retry_and_when_to_come_back():
    err = circuit_open_error(29.2)
    resp = err.to_response()
    assert "Retry-After" not in resp.headers  # said in the message; no client waits it out
    assert resp.headers["x-should-retry"] == "false"
    assert err.message == ("circuit breaker is open: the provider failed repeatedly, so the "
                           "bridge sends it nothing for the next 30 s; try again then")


def test_circuit_open_error_sdk_parse():
    err = circuit_open_error(1)
    ErrorObject.model_validate(err.body()["error"])
    parsed = ErrorResponse.model_validate(err.body(ANTHROPIC_ERRORS))
    assert (parsed.type, parsed.error.type) == ("error", "api_error")
