"""Rate-limit proxy-authentication failures per client address (token guessing).

After `limit` failures within `window` seconds an address is refused without checking its
credentials until the window has passed; a success clears its record. Memory is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class AuthFailureLimiter:
    def __init__(self, limit: int = 10, window: float = 60.0, *, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_addresses, self._clock = (
            limit, window, max_addresses, clock)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, address: str) -> bool:
        failures = self._failures.get(address)
        if failures is None:
            return False
        self._prune(failures)
        return len(failures) >= self.limit

    def failed(self, address: str) -> bool:
        """Record a failure; returns True when this one crossed the limit (log it once)."""
        failures = self._failures.setdefault(address, deque())
        self._failures.move_to_end(address)
        self._prune(failures)
        failures.append(self._clock())
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return len(failures) == self.limit

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _prune(self, failures: deque[float]) -> None:
        horizon = self._clock() - self.window
        while failures and failures[0] < horizon:
            failures.popleft()
