"""The state the admission policies share: the interface.

Three kinds of state, each keyed by a string the policies build (budget name and period, limit
name), and each operation a single atomic step, check and change together, so that concurrent
requests cannot both pass a check that only one of them fits:

- money: a budget's settled spend and the reservations of requests in flight, in integer
  nano-USD (exact, and what Redis' INCRBY can add);
- windows: sliding logs of (time, weight) entries, for requests and tokens per minute;
- slots: in-flight counters, for concurrency limits.

`MemoryState` (memory.py) implements it in the process. For several bridge processes a Redis
implementation would do each method as one Lua script (a hash per budget key, a sorted set per
window, a counter per slot key) and pass the same tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

NANO = 1_000_000_000  # nano-USD per USD


@dataclass(frozen=True, slots=True)
class Balance:
    spent: int  # nano-USD settled (the recorded cost of ended requests)
    reserved: int  # nano-USD held by requests in flight


class StateStore(Protocol):
    # -- money (budgets) ------------------------------------------------------------------
    def balance(self, key: str) -> Balance | None:
        """The balance, or None for a key nothing has primed or reserved yet."""

    def prime(self, key: str, spent: int, *, expires_at: float) -> Balance:
        """Set the spend of a key that does not exist yet (rebuilt from the records); an
        existing key keeps its own. Returns the balance now."""

    def reserve(self, key: str, amount: int, limit: int, *,
                expires_at: float) -> tuple[bool, Balance]:
        """If spent + reserved < limit, hold `amount` more. Returns whether it did and the
        balance before."""

    def settle(self, key: str, reserved: int, actual: int, *, expires_at: float) -> Balance:
        """A request ended: give back its reservation and add what it cost. Returns the
        balance after."""

    def unreserve(self, key: str, reserved: int) -> None:
        """A request holding a reservation never went upstream."""

    def mark_once(self, key: str, mark: str) -> bool:
        """True the first time `mark` is set on `key` (a warning sent once per period)."""

    # -- sliding windows (rate limits) ----------------------------------------------------
    def hit(self, key: str, now: float, window: float, limit: int) -> tuple[float, object]:
        """If fewer than `limit` entries are in the window, add one now. Returns (0.0, the
        entry) when it did, else (seconds until the window admits one, None)."""

    def unhit(self, key: str, entry: object) -> None:
        """Take back an entry `hit` added (the request was refused later)."""

    def charge(self, key: str, now: float, amount: int, window: float) -> None:
        """Add an entry of weight `amount` (tokens, known once a request ended)."""

    def wait(self, key: str, now: float, window: float, limit: int) -> float:
        """Seconds until the window's weight is below `limit` (0.0: it is now)."""

    def total(self, key: str, now: float, window: float) -> int:
        """The window's weight now."""

    # -- slots (concurrency) ---------------------------------------------------------------
    def acquire(self, key: str, limit: int) -> bool:
        """Take a slot if fewer than `limit` are taken."""

    def release(self, key: str) -> None:
        """Give a slot back."""

    def in_use(self, key: str) -> int:
        """Slots taken now."""


def to_nanos(usd: Decimal | int) -> int:
    """USD in whole nano-USD, rounded up: a budget never counts less than was spent."""
    return int((Decimal(usd) * NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANO
