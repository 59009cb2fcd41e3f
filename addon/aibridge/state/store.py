"""The state the admission policies share: the interface.

Three kinds of state, each keyed by a string the policies build (budget name and period, limit
name):

- money: a budget's settled spend and the reservations of requests in flight, in integer
  nano-USD (exact, and what Redis' INCRBY can add);
- windows: sliding logs of (time, weight) entries, for requests and tokens per minute;
- slots: in-flight counters, for concurrency limits.

A request's admission asks for several of these at once (a reservation on each budget that
applies, then a slot, a request-window entry and a token-window check on each limit): the
policies describe it as a batch of operations (`Reserve`, `Acquire`, `Hit`, `Below`) and the
store runs the batch as one atomic step, all or nothing: the first operation that refuses ends
it, and what the ones before it took is given back before anyone else can see it. So
concurrent requests cannot both pass a check only one of them fits, a refused request holds
nothing, and over Redis the whole admission is one round trip. Its end is one batch too
(`Settle`, `Unreserve`, `Release`, `Unhit`, `Charge`), which never refuses.

`MemoryState` (memory.py) runs a batch in the process under one lock, `RedisState` (redis.py)
as one Lua script. `OneAtATime` gives both the single operations (a batch of one), for tests
and tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import NamedTuple, Protocol

NANO = 1_000_000_000  # nano-USD per USD


@dataclass(frozen=True, slots=True)
class Balance:
    spent: int  # nano-USD settled (the recorded cost of ended requests)
    reserved: int  # nano-USD held by requests in flight


# -- admission: each may refuse ------------------------------------------------------------

class Reserve(NamedTuple):
    """If spent + reserved < limit, hold `amount` more. Result: the `Balance` before."""

    key: str
    amount: int
    limit: int
    expires_at: float  # the money key may go after this (epoch seconds)


class Acquire(NamedTuple):
    """Take a slot if fewer than `limit` are taken. Result: None."""

    key: str
    limit: int


class Hit(NamedTuple):
    """If fewer than `limit` entries are in the window, add one now. Result: the entry (to
    `Unhit` it), or, refused, the seconds until the window admits one."""

    key: str
    now: float
    window: float
    limit: int


class Below(NamedTuple):
    """Passes while the window's weight is below `limit`; changes nothing. Result: (seconds
    until it is below, 0.0 when it is now; the weight now)."""

    key: str
    now: float
    window: float
    limit: int


# -- the end of a request: never refuses ---------------------------------------------------

class Settle(NamedTuple):
    """Give back a reservation and add what the request cost. Each (mark, threshold) in
    `marks` the new spend crossed (before < threshold <= after) is set on the key, once per
    key. Result: `Settled`."""

    key: str
    reserved: int
    actual: int
    expires_at: float
    marks: tuple[tuple[str, int], ...] = ()


class Unreserve(NamedTuple):
    """A request holding a reservation never went upstream. Result: None."""

    key: str
    amount: int


class Release(NamedTuple):
    """Give a slot back. Result: None."""

    key: str


class Unhit(NamedTuple):
    """Take back an entry `Hit` added. Result: None."""

    key: str
    entry: object


class Charge(NamedTuple):
    """Add an entry of weight `amount` (tokens, known once a request ended). Result: None."""

    key: str
    now: float
    amount: int
    window: float


type AdmitOp = Reserve | Acquire | Hit | Below
type EndOp = Settle | Unreserve | Release | Unhit | Charge


class Settled(NamedTuple):
    balance: Balance  # after
    marks: tuple[str, ...]  # the marks this settlement set (crossed for the first time)


class Outcome(NamedTuple):
    refused: int | None  # the index of the operation that refused; None: all passed
    results: list[object]  # one per operation run, the refusing one last


class StateStore(Protocol):
    def admit(self, ops: Sequence[AdmitOp]) -> Outcome:
        """Run `ops` in order as one atomic step. The first that refuses ends the batch and
        what the ones before it took is given back: all taken, or nothing."""

    def end(self, ops: Sequence[EndOp]) -> list[object]:
        """Run `ops` as one step; one result each."""

    def balance(self, key: str) -> Balance | None:
        """The balance, or None for a key nothing has primed or reserved yet."""

    def prime(self, key: str, spent: int, *, expires_at: float) -> Balance:
        """Set the spend of a key that does not exist yet (rebuilt from the records); an
        existing key keeps its own. Returns the balance now."""

    def mark_once(self, key: str, mark: str) -> bool:
        """True the first time `mark` is set on `key` (a warning sent once per period)."""

    def total(self, key: str, now: float, window: float) -> int:
        """The window's weight now."""

    def in_use(self, key: str) -> int:
        """Slots taken now."""


class OneAtATime:
    """Single operations as batches of one, for a `StateStore` (tests, tools, start-up)."""

    def admit(self, ops: Sequence[AdmitOp]) -> Outcome:
        raise NotImplementedError

    def end(self, ops: Sequence[EndOp]) -> list[object]:
        raise NotImplementedError

    def reserve(self, key: str, amount: int, limit: int, *,
                expires_at: float) -> tuple[bool, Balance]:
        """Whether it reserved, and the balance before."""
        out = self.admit((Reserve(key, amount, limit, expires_at),))
        before = out.results[0]
        assert isinstance(before, Balance)
        return out.refused is None, before

    def settle(self, key: str, reserved: int, actual: int, *, expires_at: float) -> Balance:
        """The balance after."""
        [settled] = self.end((Settle(key, reserved, actual, expires_at),))
        assert isinstance(settled, Settled)
        return settled.balance

    def unreserve(self, key: str, reserved: int) -> None:
        self.end((Unreserve(key, reserved),))

    def hit(self, key: str, now: float, window: float, limit: int) -> tuple[float, object]:
        """(0.0, the entry) when it added one, else (seconds until it would, None)."""
        out = self.admit((Hit(key, now, window, limit),))
        if out.refused is None:
            return 0.0, out.results[0]
        wait = out.results[0]
        assert isinstance(wait, int | float)
        return float(wait), None

    def unhit(self, key: str, entry: object) -> None:
        self.end((Unhit(key, entry),))

    def charge(self, key: str, now: float, amount: int, window: float) -> None:
        self.end((Charge(key, now, amount, window),))

    def wait(self, key: str, now: float, window: float, limit: int) -> float:
        """Seconds until the window's weight is below `limit` (0.0: it is now)."""
        result = self.admit((Below(key, now, window, limit),)).results[0]
        assert isinstance(result, tuple)
        return result[0]

    def acquire(self, key: str, limit: int) -> bool:
        return self.admit((Acquire(key, limit),)).refused is None

    def release(self, key: str) -> None:
        self.end((Release(key),))


def to_nanos(usd: Decimal | int) -> int:
    """USD in whole nano-USD, rounded up: a budget never counts less than was spent."""
    return int((Decimal(usd) * NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANO
