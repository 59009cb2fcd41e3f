"""`MemoryState`: the admission state in this process (see store.py for the contract).

One lock around every batch: the hooks run on mitmproxy's event loop, but the contract is
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
from collections.abc import Callable, Sequence
from typing import Any

from aibridge.state.store import (
    Acquire,
    AdmitOp,
    Balance,
    Below,
    Charge,
    EndOp,
    Hit,
    OneAtATime,
    Outcome,
    Release,
    Reserve,
    Settle,
    Settled,
    Unhit,
    Unreserve,
)

SWEEP_EVERY = 4096  # batches between sweeps of expired keys
MARKS_TTL = 86_400.0  # seconds a key created only to hold a mark is kept


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


class MemoryState(OneAtATime):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._money: dict[str, _Money] = {}
        self._windows: dict[str, _Window] = {}
        self._slots: dict[str, int] = {}
        self._batches = 0

    # -- batches ----------------------------------------------------------------------------

    def admit(self, ops: Sequence[AdmitOp]) -> Outcome:
        results: list[object] = []
        with self._lock:
            self._tick()
            for i, op in enumerate(ops):
                passed, result = _ADMIT[type(op)](self, op)
                results.append(result)
                if not passed:
                    for j in range(i - 1, -1, -1):  # nothing stays taken
                        _UNDO[type(ops[j])](self, ops[j], results[j])
                    return Outcome(i, results)
        return Outcome(None, results)

    def end(self, ops: Sequence[EndOp]) -> list[object]:
        with self._lock:
            return [_END[type(op)](self, op) for op in ops]

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

    def mark_once(self, key: str, mark: str) -> bool:
        with self._lock:
            return self._mark(key, mark)

    def _mark(self, key: str, mark: str) -> bool:
        m = self._money.get(key)
        if m is None:
            m = self._money[key] = _Money(0, time.time() + MARKS_TTL)
        if mark in m.marks:
            return False
        m.marks.add(mark)
        return True

    def _reserve(self, op: Reserve) -> tuple[bool, Balance]:
        m = self._money.get(op.key)
        if m is None:
            m = self._money[op.key] = _Money(0, op.expires_at)
        before = Balance(m.spent, m.reserved)
        if m.spent + m.reserved >= op.limit:
            return False, before
        m.reserved += op.amount
        return True, before

    def _unreserve(self, op: Unreserve | Reserve, _: object = None) -> None:
        m = self._money.get(op.key)
        if m is not None:
            m.reserved = max(0, m.reserved - op.amount)

    def _settle(self, op: Settle) -> Settled:
        m = self._money.get(op.key)
        if m is None:  # swept while the request ran (it outlived its period's margin)
            m = self._money[op.key] = _Money(0, op.expires_at)
        m.reserved = max(0, m.reserved - op.reserved)
        before = m.spent
        m.spent += op.actual
        crossed = [mark for mark, threshold in op.marks if before < threshold <= m.spent]
        return Settled(Balance(m.spent, m.reserved),
                       tuple(mark for mark in crossed if self._mark(op.key, mark))
                       if crossed else ())

    # -- windows ----------------------------------------------------------------------------

    def _window(self, key: str, now: float, window: float) -> _Window:
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window(window)
        w.prune(now, window)
        return w

    def _hit(self, op: Hit) -> tuple[bool, object]:
        w = self._window(op.key, op.now, op.window)
        if w.sum >= op.limit:
            return False, w.wait(op.now, op.limit)
        entry = [op.now, 1]
        w.entries.append(entry)
        w.sum += 1
        return True, entry

    def _unhit(self, op: Unhit | Hit, entry: object) -> None:
        w = self._windows.get(op.key)
        if w is None:
            return
        # Most likely the newest entry: search from the end.
        for i in range(len(w.entries) - 1, -1, -1):
            if w.entries[i] is entry:
                del w.entries[i]
                w.sum -= 1
                return

    def _below(self, op: Below) -> tuple[bool, tuple[float, int]]:
        w = self._windows.get(op.key)
        if w is None:
            return True, (0.0, 0)
        w.prune(op.now, op.window)
        wait = w.wait(op.now, op.limit)
        return wait <= 0, (wait, w.sum)

    def _charge(self, op: Charge) -> None:
        if op.amount <= 0:
            return
        w = self._window(op.key, op.now, op.window)
        w.entries.append([op.now, op.amount])
        w.sum += op.amount

    def total(self, key: str, now: float, window: float) -> int:
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                return 0
            w.prune(now, window)
            return w.sum

    # -- slots ------------------------------------------------------------------------------

    def _acquire(self, op: Acquire) -> tuple[bool, None]:
        taken = self._slots.get(op.key, 0)
        if taken >= op.limit:
            return False, None
        self._slots[op.key] = taken + 1
        return True, None

    def _release(self, op: Release | Acquire, _: object = None) -> None:
        taken = self._slots.get(op.key, 0) - 1
        if taken > 0:
            self._slots[op.key] = taken
        else:
            self._slots.pop(op.key, None)

    def in_use(self, key: str) -> int:
        with self._lock:
            return self._slots.get(key, 0)

    def hold_slots(self, keys: Sequence[str]) -> None:
        """Count slots taken elsewhere (in Redis) as this process's, with no limit."""
        with self._lock:
            for key in keys:
                self._slots[key] = self._slots.get(key, 0) + 1

    def slot_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._slots)

    def with_slot_counts(self, use: Callable[[dict[str, int]], None]) -> None:
        """`use(counts)` while no slot is taken or given back here."""
        with self._lock:
            use(dict(self._slots))

    # -- housekeeping -----------------------------------------------------------------------

    def forget_all_but_slots(self) -> None:
        """Drop money and windows (stale once the shared state is back); keep the slots,
        which are what this process holds."""
        with self._lock:
            self._money.clear()
            self._windows.clear()

    def _tick(self) -> None:
        """Called with the lock held."""
        self._batches += 1
        if self._batches % SWEEP_EVERY == 0:
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


def _nothing(state: MemoryState, op: object, result: object) -> None:
    return None


# What each operation does, and (admission) how it is undone when a later one refuses.
_ADMIT: dict[type, Callable[[MemoryState, Any], tuple[bool, object]]] = {
    Reserve: MemoryState._reserve, Acquire: MemoryState._acquire, Hit: MemoryState._hit,
    Below: MemoryState._below}
_UNDO: dict[type, Callable[[MemoryState, Any, object], None]] = {
    Reserve: MemoryState._unreserve, Acquire: MemoryState._release, Hit: MemoryState._unhit,
    Below: _nothing}
_END: dict[type, Callable[[MemoryState, Any], object]] = {
    Settle: MemoryState._settle, Unreserve: MemoryState._unreserve,
    Release: MemoryState._release, Unhit: lambda s, op: s._unhit(op, op.entry),
    Charge: MemoryState._charge}
