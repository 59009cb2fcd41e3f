"""What one bridge process tells the others of a key or a circuit breaker (keys/sharing.py).

Times are wall-clock epoch seconds: processes on several machines share no monotonic clock, so
each turns them into its own clock on arrival.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyView:
    cooling_until: float  # 0.0: not cooling
    dead: bool
    dead_since: float  # marked dead, or the last probe lease handed out
    changed: float  # the last change of `dead` (the later change wins)


@dataclass(frozen=True, slots=True)
class BreakerView:
    state: str  # "closed" | "open" | "half_open"
    opened_at: float
    generation: int  # the shared generation: changes on every shared transition
