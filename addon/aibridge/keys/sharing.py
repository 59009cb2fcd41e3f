"""What key pools and circuit breakers tell other bridge processes, and hear from them.

A pool or a set of breakers decides on its own state in the process (no round trip on the fast
path); a `Shared*` object, when one is attached (`[state] url`, state/redis_shared.py), is told
of every state change, merges it atomically with what the other processes said, and hands the
merged view back. What other processes change arrives through `apply_shared`. Every method of
these protocols may return None: the shared store is unreachable and the caller decides on its
local state alone.

The views (state/views.py) are in wall-clock time; each process turns them into its own clock.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from aibridge.state.views import BreakerView, KeyView

__all__ = ["BreakerView", "KeyView", "SharedCircuits", "SharedKeys", "key_id"]


def key_id(secret: str) -> str:
    """A key's name outside the process: a short hash, never the key or its hint."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:20]


class SharedKeys(Protocol):
    def publish_key(self, provider: str, key: str, view: KeyView) -> KeyView | None:
        """Merge this process's view of a key into the shared one (cooling never shortened,
        the later dead/alive change wins); returns the merged view."""

    def take_probe(self, provider: str, key: str, now: float,
                   retry_after: float) -> bool | None:
        """The lease to probe a dead key: True for exactly one process per interval."""


class SharedCircuits(Protocol):
    def circuit_failed(self, key: tuple[str, str, str], now: float, window: float,
                       threshold: int) -> BreakerView | None:
        """Count a failure of a closed breaker across processes; opens it at `threshold`."""

    def circuit_probe(self, key: tuple[str, str, str], now: float, open_for: float,
                      probes: int) -> tuple[bool, float, BreakerView] | None:
        """An open breaker past `open_for`, or a half-open one: take a probe slot if one is
        free. Returns (admitted, retry_after, view)."""

    def circuit_decided(self, key: tuple[str, str, str], generation: int, failure: bool,
                        now: float) -> BreakerView | None:
        """A probe's outcome: closes or re-opens the breaker of that shared generation."""

    def circuit_release(self, key: tuple[str, str, str], generation: int) -> None:
        """A probe ended without a verdict: give its slot back."""
