"""In-process counters the resilience code keeps, for the telemetry exporter to read.

Deliberately tiny: labelled monotonic counters, gauges and bucketed histograms, thread-safe,
with a `snapshot()` that returns plain data. OpenTelemetry instruments are fed from these.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Sequence

Labels = tuple[tuple[str, str], ...]


def labels(**kv: object) -> Labels:
    if len(kv) == 1:  # the usual single label needs no sorting
        ((k, v),) = kv.items()
        return ((k, str(v)),)
    return tuple(sorted((k, str(v)) for k, v in kv.items()))


class Counter:
    def __init__(self, name: str) -> None:
        self.name = name
        self._values: dict[Labels, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **kv: object) -> None:
        with self._lock:
            self._values[labels(**kv)] += amount

    def value(self, **kv: object) -> float:
        with self._lock:
            return self._values.get(labels(**kv), 0.0)

    def snapshot(self) -> dict[Labels, float]:
        with self._lock:
            return dict(self._values)


class Gauge(Counter):
    def set(self, value: float, **kv: object) -> None:
        with self._lock:
            self._values[labels(**kv)] = value


class Histogram:
    def __init__(self, name: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = defaultdict(float)
        self._lock = threading.Lock()

    def observe(self, value: float, **kv: object) -> None:
        key = labels(**kv)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] += value

    def count(self, **kv: object) -> int:
        with self._lock:
            return sum(self._counts.get(labels(**kv), ()))

    def sum(self, **kv: object) -> float:
        with self._lock:
            return self._sums.get(labels(**kv), 0.0)

    def snapshot(self) -> dict[Labels, tuple[list[int], float]]:
        with self._lock:
            return {k: (list(v), self._sums[k]) for k, v in self._counts.items()}


class Registry:
    """The bridge's counters (named as Coder's AI Bridge names its metrics, so dashboards carry
    over)."""

    def __init__(self) -> None:
        self.key_transitions = Counter("key_pool_state_transitions_total")  # provider, reason
        self.key_exhaustions = Counter("key_pool_exhaustions_total")  # provider, outcome
        self.failover_attempts = Histogram("key_pool_failover_attempts",  # provider
                                           (1, 2, 3, 4, 5, 10, 25))
        self.circuit_state = Gauge("circuit_breaker_state")  # provider, endpoint, model
        self.circuit_trips = Counter("circuit_breaker_trips_total")  # provider, endpoint, model
        self.circuit_rejects = Counter("circuit_breaker_rejects_total")  # provider, endpoint, model
