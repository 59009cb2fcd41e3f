"""`MemoryState`: the admission state in this process (see store.py for the contract).

One lock around every operation: the hooks run on mitmproxy's event loop, but the contract is
"atomic", and a lock costs a fraction of a microsecond. Windows are sliding logs (a deque of
[time, weight] entries and their running sum), exact rather than bucketed, so a Retry-After is
the moment the window really admits again; a log holds at most `limit` entries for request
counts and one per ended request for tokens. Expired budget keys and empty windows are swept
now and then, so state does not grow with the periods and actors that come and go.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from aibridge.state.store import Balance

SWEEP_EVERY = 4096  # operations between sweeps of expired keys


class _Money:
    __slots__ = ("expires_at", "marks", "reserved", "spent")

    def __init__(self, spent: int, expires_at: float) -> None:
        self.spent, self.reserved, self.expires_at = spent, 0, expires_at
        self.marks: set[str] = set()


class _Window:
    __slots__ = ("entries", "sum", "window")

    def __init__(self, window: float) -> None:
        self.entries: deque[list[float]] = deque()  # [time, weight], oldest first
        self.sum = 0
        self.window = window

    def prune(self, now: float, window: float) -> None:
        self.window = window
        entries, edge = self.entries, now - window
        while entries and entries[0][0] <= edge:
            self.sum -= int(entries.popleft()[1])

    def wait(self, now: float, limit: int) -> float:
        """Seconds until the weight is below `limit`: the oldest entries leave first."""
        left = self.sum
        if left < limit:
            return 0.0
        for at, weight in self.entries:
            left -= int(weight)
            if left < limit:
                return max(0.0, at + self.window - now)
        return self.window


class MemoryState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._money: dict[str, _Money] = {}
        self._windows: dict[str, _Window] = {}
        self._slots: dict[str, int] = {}
        self._ops = 0

    # -- money ------------------------------------------------------------------------------

    def balance(self, key: str) -> Balance | None:
        with self._lock:
            m = self._money.get(key)
            return Balance(m.spent, m.reserved) if m is not None else None

    def prime(self, key: str, spent: int, *, expires_at: float) -> Balance:
        with self._lock:
            m = self._money.get(key)
            if m is None:
                m = self._money[key] = _Money(spent, expires_at)
            return Balance(m.spent, m.reserved)

    def reserve(self, key: str, amount: int, limit: int, *,
                expires_at: float) -> tuple[bool, Balance]:
        with self._lock:
            self._tick()
            m = self._money.get(key)
            if m is None:
                m = self._money[key] = _Money(0, expires_at)
            before = Balance(m.spent, m.reserved)
            if m.spent + m.reserved >= limit:
                return False, before
            m.reserved += amount
            return True, before

    def settle(self, key: str, reserved: int, actual: int, *, expires_at: float) -> Balance:
        with self._lock:
            m = self._money.get(key)
            if m is None:  # swept while the request ran (it outlived its period's margin)
                m = self._money[key] = _Money(0, expires_at)
            m.reserved = max(0, m.reserved - reserved)
            m.spent += actual
            return Balance(m.spent, m.reserved)

    def unreserve(self, key: str, reserved: int) -> None:
        with self._lock:
            m = self._money.get(key)
            if m is not None:
                m.reserved = max(0, m.reserved - reserved)

    def mark_once(self, key: str, mark: str) -> bool:
        with self._lock:
            m = self._money.get(key)
            if m is None:
                m = self._money[key] = _Money(0, time.time() + 86_400)
            if mark in m.marks:
                return False
            m.marks.add(mark)
            return True

    # -- windows ----------------------------------------------------------------------------

    def hit(self, key: str, now: float, window: float, limit: int) -> tuple[float, object]:
        with self._lock:
            self._tick()
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window(window)
            w.prune(now, window)
            if w.sum >= limit:
                return w.wait(now, limit), None
            entry = [now, 1]
            w.entries.append(entry)
            w.sum += 1
            return 0.0, entry

    def unhit(self, key: str, entry: object) -> None:
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                return
            # Most likely the newest entry: search from the end.
            for i in range(len(w.entries) - 1, -1, -1):
                if w.entries[i] is entry:
                    del w.entries[i]
                    w.sum -= 1
                    return

    def charge(self, key: str, now: float, amount: int, window: float) -> None:
        if amount <= 0:
            return
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window(window)
            w.prune(now, window)
            w.entries.append([now, amount])
            w.sum += amount

    def wait(self, key: str, now: float, window: float, limit: int) -> float:
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                return 0.0
            w.prune(now, window)
            return w.wait(now, limit)

    def total(self, key: str, now: float, window: float) -> int:
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                return 0
            w.prune(now, window)
            return w.sum

    # -- slots ------------------------------------------------------------------------------

    def acquire(self, key: str, limit: int) -> bool:
        with self._lock:
            taken = self._slots.get(key, 0)
            if taken >= limit:
                return False
            self._slots[key] = taken + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            taken = self._slots.get(key, 0) - 1
            if taken > 0:
                self._slots[key] = taken
            else:
                self._slots.pop(key, None)

    def in_use(self, key: str) -> int:
        with self._lock:
            return self._slots.get(key, 0)

    # -- housekeeping -----------------------------------------------------------------------

    def _tick(self) -> None:
        """Called with the lock held."""
        self._ops += 1
        if self._ops % SWEEP_EVERY == 0:
            self._sweep(time.time())

    def _sweep(self, now: float) -> None:
        for key in [k for k, m in self._money.items()
                    if m.expires_at < now and m.reserved == 0]:
            del self._money[key]
        for key in list(self._windows):
            w = self._windows[key]
            w.prune(now, w.window)
            if not w.entries:
                del self._windows[key]

    def sizes(self) -> dict[str, int]:
        """How many keys of each kind are held (tests, health)."""
        with self._lock:
            return {"money": len(self._money), "windows": len(self._windows),
                    "slots": len(self._slots)}
