"""Circuit breakers per (provider, route, model) (departures from Coder: docs/behaviour.md §13).

A breaker is closed (requests flow, failures are counted in a sliding window), open (requests are
refused without touching the provider) or half-open (a few probe requests decide). Which outcomes
are failures is the caller's call: a final status in `failure_statuses`, a connect failure or a
timeout. Mid-stream errors arrive after the status was sent and are not the breaker's business.

Every admitted request gets an `Admission` that must come back through `record` (or `release` when
the flow ended without a verdict). The admission carries the breaker's generation: an outcome only
counts against the state that admitted it, so a slow request admitted while closed cannot close a
breaker that opened in the meantime, and a late probe cannot decide for a later half-open round.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aibridge.counters import Registry
from aibridge.errors.envelope import OPENAI_ERR_TYPE_API, ResponseError, new_response_error
from aibridge.keys.sharing import BreakerView, SharedCircuits

CIRCUIT_OPEN_MESSAGE = "circuit breaker is open"
CIRCUIT_OPEN_CODE = "service_unavailable"
# Back-off suggested while half-open with every probe slot taken: the probes answer soon.
HALF_OPEN_RETRY_AFTER = 1.0

BreakerKey = tuple[str, str, str]  # provider, route, model


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    window: float = 10.0
    open_for: float = 30.0
    half_open_probes: int = 3
    failure_statuses: frozenset[int] = frozenset({503, 504, 529})

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be at least 1")
        if not self.window > 0 or not self.open_for >= 0:
            raise ValueError("window must be positive and open_for not negative")


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# The exported gauge: 0 closed, 0.5 half-open, 1 open.
_GAUGE = {State.CLOSED: 0.0, State.HALF_OPEN: 0.5, State.OPEN: 1.0}
# Generations are unique across breakers, so an admission from an evicted and re-created breaker
# is recognised as stale too.
_generations = itertools.count(1)


@dataclass(frozen=True)
class Admission:
    """The verdict of `admit`; hand it back to `record` once the outcome is known."""

    allowed: bool
    retry_after: float = 0.0  # seconds until a request may be admitted again; 0 when allowed
    key: BreakerKey = ("", "", "")
    generation: int = 0
    probe: bool = False  # admitted as a half-open probe, holding one of the probe slots


@dataclass(eq=False)
class _Breaker:
    state: State = State.CLOSED
    generation: int = field(default_factory=lambda: next(_generations))
    failures: deque[float] = field(default_factory=deque)  # closed: failure times in the window
    opened_at: float = 0.0
    probes_out: int = 0
    last_probe_at: float = 0.0
    shared_generation: int = 0  # the shared store's generation of this state ([state] url)


class CircuitBreakers:
    """All breakers of the bridge, keyed by (provider, route, model); thread-safe."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        counters: Registry | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_models: int = 1000,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self._counters = counters
        self._clock = clock
        self._max = max(1, max_models)
        self._breakers: OrderedDict[BreakerKey, _Breaker] = OrderedDict()
        self._lock = threading.Lock()
        # Other bridge processes ([state] url, keys/sharing.py): closed breakers and open ones
        # within open_for are decided here; failures, probes and transitions are shared.
        self.shared: SharedCircuits | None = None
        self._wallclock = time.time

    def is_failure_status(self, status: int) -> bool:
        return status in self.settings.failure_statuses

    def admit(self, provider: str, route: str, model: str) -> Admission:
        key = (provider, route, model)
        now = self._clock()
        with self._lock:
            b = self._breakers.get(key)
            if b is None:
                self._evict(room_for=1)
                b = self._breakers[key] = _Breaker()
            else:
                self._breakers.move_to_end(key)
            self._advance(key, b, now)
            if b.state is State.CLOSED:
                return Admission(True, key=key, generation=b.generation)
            if self.shared is not None and b.state is State.HALF_OPEN:
                shared = self._shared_probe(key, b, now)
                if shared is not None:
                    return shared
            if b.state is State.HALF_OPEN:
                # A probe that never reported (flow killed, caller bug) must not wedge the
                # breaker: after another open_for without any answer its slot is presumed lost.
                if b.probes_out >= self.settings.half_open_probes and (
                    now - b.last_probe_at >= self.settings.open_for
                ):
                    b.probes_out = 0
                if b.probes_out < self.settings.half_open_probes:
                    b.probes_out += 1
                    b.last_probe_at = now
                    return Admission(True, key=key, generation=b.generation, probe=True)
                retry_after = HALF_OPEN_RETRY_AFTER
            else:
                retry_after = b.opened_at + self.settings.open_for - now
            self._count("circuit_rejects", key)
            return Admission(False, retry_after=retry_after, key=key, generation=b.generation)

    def record(self, admission: Admission, *, failure: bool) -> None:
        """The outcome of an admitted request; stale and refused admissions are ignored."""
        if not admission.allowed:
            return
        now = self._clock()
        with self._lock:
            b = self._breakers.get(admission.key)
            if b is None or b.generation != admission.generation:
                return
            if self.shared is not None and self._shared_record(admission, b, failure, now):
                return
            if b.state is State.HALF_OPEN:
                b.probes_out = max(0, b.probes_out - 1)
                self._transition(admission.key, b, State.OPEN if failure else State.CLOSED, now)
            elif b.state is State.CLOSED and failure:
                # Sliding window: successes do not reset it ("5 failures within 10 s").
                b.failures.append(now)
                self._prune(b, now)
                if len(b.failures) >= self.settings.failure_threshold:
                    self._transition(admission.key, b, State.OPEN, now)

    def release(self, admission: Admission) -> None:
        """Give back a probe slot for a flow that ended without a verdict (client went away)."""
        if not (admission.allowed and admission.probe):
            return
        with self._lock:
            b = self._breakers.get(admission.key)
            if b is not None and b.generation == admission.generation:
                b.probes_out = max(0, b.probes_out - 1)
                if self.shared is not None:
                    self.shared.circuit_release(admission.key, b.shared_generation)

    def state(self, provider: str, route: str, model: str) -> State:
        with self._lock:
            b = self._breakers.get((provider, route, model))
            if b is None:
                return State.CLOSED
            self._advance((provider, route, model), b, self._clock())
            return b.state

    def snapshot(self) -> list[dict[str, Any]]:
        """Plain data for a health endpoint: every tracked breaker, least recently used first."""
        now = self._clock()
        out = []
        with self._lock:
            for key, b in self._breakers.items():
                self._advance(key, b, now)
                if b.state is State.CLOSED:
                    self._prune(b, now)
                out.append(
                    {
                        "provider": key[0],
                        "endpoint": key[1],
                        "model": key[2],
                        "state": b.state.value,
                        "failures": len(b.failures),
                        "probes_in_flight": b.probes_out,
                        "retry_after": max(0.0, b.opened_at + self.settings.open_for - now)
                        if b.state is State.OPEN
                        else 0.0,
                    }
                )
        return out

    # -- sharing with other processes ------------------------------------------------------

    def apply_shared(self, key: BreakerKey, view: BreakerView) -> None:
        """A transition another process made (or the merged result of ours)."""
        with self._lock:
            self._apply_view(key, view, self._clock())

    def _apply_view(self, key: BreakerKey, view: BreakerView, now: float, *,
                    answer: bool = False) -> _Breaker | None:
        """`answer`: the store's answer to this process's own call, which stands even when
        its generation is not newer (a breaker the store forgot is closed)."""
        b = self._breakers.get(key)
        if b is None:
            if view.state == State.CLOSED.value:
                return None  # nothing to learn about a breaker this process never used
            self._evict(room_for=1)
            b = self._breakers[key] = _Breaker()
        if view.generation <= b.shared_generation and not (
                answer and view.state != b.state.value):
            return b  # already applied, or older than what this process knows
        b.shared_generation = view.generation
        to = State(view.state)
        if to is not b.state:
            self._transition(key, b, to, now)
        if to is State.OPEN:
            b.opened_at = now - max(0.0, self._wallclock() - view.opened_at)
            self._advance(key, b, now)
        return b

    def _shared_probe(self, key: BreakerKey, b: _Breaker, now: float) -> Admission | None:
        """Half-open here: the probe slots are shared. None when the store is unreachable."""
        assert self.shared is not None
        result = self.shared.circuit_probe(key, self._wallclock(), self.settings.open_for,
                                           self.settings.half_open_probes)
        if result is None:
            return None
        admitted, retry_after, view = result
        b = self._apply_view(key, view, now, answer=True) or b
        if admitted and b.state is State.HALF_OPEN:
            b.probes_out += 1
            b.last_probe_at = now
            return Admission(True, key=key, generation=b.generation, probe=True)
        if b.state is State.CLOSED:  # closed by another process's probe meanwhile
            return Admission(True, key=key, generation=b.generation)
        if b.state is State.HALF_OPEN:  # every probe slot taken: they answer soon
            retry_after = HALF_OPEN_RETRY_AFTER
        self._count("circuit_rejects", key)
        return Admission(False, retry_after=max(retry_after, 0.0), key=key,
                         generation=b.generation)

    def _shared_record(self, admission: Admission, b: _Breaker, failure: bool,
                       now: float) -> bool:
        """An outcome counted in the shared store; False when it is unreachable (then the
        local breaker decides)."""
        assert self.shared is not None
        key = admission.key
        if b.state is State.HALF_OPEN and admission.probe:
            view = self.shared.circuit_decided(key, b.shared_generation, failure,
                                               self._wallclock())
        elif b.state is State.CLOSED and failure:
            view = self.shared.circuit_failed(key, self._wallclock(), self.settings.window,
                                              self.settings.failure_threshold)
        else:
            return True  # a success while closed: nothing to share
        if view is None:
            return False
        if admission.probe:
            b.probes_out = max(0, b.probes_out - 1)
        self._apply_view(key, view, now, answer=True)
        return True

    # -- internals; callers hold the lock -------------------------------------------------

    def _advance(self, key: BreakerKey, b: _Breaker, now: float) -> None:
        # Open turns half-open lazily, on the first look after open_for.
        if b.state is State.OPEN and now - b.opened_at >= self.settings.open_for:
            self._transition(key, b, State.HALF_OPEN, now)

    def _prune(self, b: _Breaker, now: float) -> None:
        while b.failures and now - b.failures[0] > self.settings.window:
            b.failures.popleft()

    def _transition(self, key: BreakerKey, b: _Breaker, to: State, now: float) -> None:
        b.state = to
        b.generation = next(_generations)
        b.failures.clear()
        b.probes_out = 0
        if to is State.OPEN:
            b.opened_at = now
            self._count("circuit_trips", key)
        # The gauge is only written on transitions, so models that never tripped add no series.
        if self._counters is not None:
            self._counters.circuit_state.set(_GAUGE[to], **_labels(key))

    def _evict(self, room_for: int) -> None:
        # Bound the number of breakers (model strings come from clients): drop the least recently
        # used closed ones. Open and half-open breakers are kept; they matter and time out anyway.
        excess = len(self._breakers) + room_for - self._max
        if excess <= 0:
            return
        victims = []
        for key, b in self._breakers.items():  # least recently used first
            if b.state is State.CLOSED:
                victims.append(key)
                if len(victims) == excess:
                    break
        for key in victims:
            del self._breakers[key]

    def _count(self, counter: str, key: BreakerKey) -> None:
        if self._counters is not None:
            getattr(self._counters, counter).inc(**_labels(key))


def _labels(key: BreakerKey) -> dict[str, str]:
    return {"provider": key[0], "endpoint": key[1], "model": key[2]}


# A wait longer than this is not worth an automatic retry: the user should see why now.
RETRY_WORTH_WAITING = 5.0


def circuit_open_error(retry_after: float) -> ResponseError:
    """503 for a refused request. A short wait is a `Retry-After` (ceil seconds) for the
    client's automatic retry; a long one is said in the message with `x-should-retry: false`
    and no `Retry-After`, since clients that ignore the former (Codex) would otherwise wait
    out every retry in full before the user sees anything."""
    if retry_after <= RETRY_WORTH_WAITING:
        return new_response_error(CIRCUIT_OPEN_MESSAGE, OPENAI_ERR_TYPE_API, CIRCUIT_OPEN_CODE,
                                  503, retry_after)
    return new_response_error(
        f"{CIRCUIT_OPEN_MESSAGE}: the provider failed repeatedly, so the bridge sends it "
        f"nothing for the next {math.ceil(retry_after)} s; try again then",
        OPENAI_ERR_TYPE_API, CIRCUIT_OPEN_CODE, 503, should_retry=False)
