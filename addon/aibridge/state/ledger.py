"""What each interception in flight holds from admission, until it ends.

The admission steps that take something a request must give back when it is over (a budget
reservation, a concurrency slot, tokens to charge once usage is known) hand it over as a
`Hold`. Admitted, the holds are kept here under the interception's id; the one place an
interception ends (the reporter's `ended`, with the recorded cost) settles them. A request
refused before it went upstream never gets here: its steps' `release` gave everything back.

The budgets and rate limits of one request hold one `Held`: its parts (a budget's
reservation, the limits' slots and windows) say what their end does to the state store as
operations (an `Ending`), and the `Held` runs them all as one batch, one round trip to Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple, Protocol

from aibridge.state.store import EndOp, StateStore

logger = logging.getLogger("aibridge")
STALE_AFTER = 6 * 3600.0  # seconds; an interception is never open that long (a bug elsewhere)
SWEEP_EVERY = 1024  # keeps between sweeps for stale holds


@dataclass(frozen=True, slots=True)
class Usage:
    """How an interception ended, as the holds need it."""

    cost_usd: Decimal | None  # the recorded cost; None when unpriced or no usage was reported
    tokens: int  # input (cached or not) plus output; 0 when unknown
    at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a settlement crossed (a budget's warning threshold), for the log and
    telemetry."""

    name: str  # event name, e.g. "aibridge.budget.warning"
    message: str
    attributes: Mapping[str, str | int | float] = field(default_factory=dict)


class Hold(Protocol):
    def settle(self, usage: Usage) -> Sequence[Notice]:
        """The request ended: charge what it used and give back what it held."""

    def release(self) -> None:
        """The request never reached the provider: give everything back, charge nothing."""


class Ending(NamedTuple):
    """What one part of a hold does to the state store when its request ends: operations,
    and how their results read (the notices they give)."""

    ops: tuple[EndOp, ...] = ()
    read: Callable[[Sequence[object]], Sequence[Notice]] | None = None


NOTHING = Ending()


class Part(Protocol):
    """One policy's share of what a request holds (each ends once: later calls give
    NOTHING)."""

    def ending(self, usage: Usage) -> Ending:
        """The request ended: what to charge and give back."""

    def giving_back(self) -> Ending:
        """It never reached the provider: what to give back, charging nothing."""


def finish(state: StateStore, endings: Sequence[Ending]) -> list[Notice]:
    """Run the endings' operations as one batch and read their results."""
    ops: list[EndOp] = []
    for ending in endings:
        ops += ending.ops
    if not ops:
        return []
    results = state.end(ops)
    notices: list[Notice] = []
    at = 0
    for ops_of, read in endings:
        n = len(ops_of)
        if read is not None:
            try:
                notices.extend(read(results[at:at + n]))
            except Exception:  # a notice that cannot be made must not cost the others
                logger.exception("aibridge: reading a settlement failed")
        at += n
    return notices


@dataclass(eq=False, slots=True)
class Held:
    """What one request's budgets and rate limits hold in one store (a `Hold`): settled, or
    given back, as one batch."""

    state: StateStore
    parts: Sequence[Part]

    def settle(self, usage: Usage) -> Sequence[Notice]:
        return finish(self.state, _endings(self.parts, lambda part: part.ending(usage)))

    def release(self) -> None:
        finish(self.state, _endings(self.parts, lambda part: part.giving_back()))


def _endings(parts: Sequence[Part], end: Callable[[Part], Ending]) -> list[Ending]:
    endings = []
    for part in parts:
        try:
            endings.append(end(part))
        except Exception:  # one broken part must not keep the others' slots taken
            logger.exception("aibridge: settling an admission hold failed")
    return endings


class Ledger:
    def __init__(self) -> None:
        self._held: dict[str, tuple[float, Sequence[Hold]]] = {}
        self._keeps = 0

    def keep(self, interception_id: str, holds: Sequence[Hold]) -> None:
        if not holds:
            return
        self._held[interception_id] = (time.monotonic(), tuple(holds))
        self._keeps += 1
        if self._keeps % SWEEP_EVERY == 0:
            self.sweep(STALE_AFTER)

    def __contains__(self, interception_id: str) -> bool:
        """Whether the interception holds anything (most requests match no budget or limit)."""
        return interception_id in self._held

    def settle(self, interception_id: str, usage: Usage) -> list[Notice]:
        entry = self._held.pop(interception_id, None)
        if entry is None:
            return []
        notices: list[Notice] = []
        for hold in entry[1]:
            try:
                notices.extend(hold.settle(usage))
            except Exception:  # one broken hold must not keep the others' slots taken
                logger.exception("aibridge: settling an admission hold failed")
        return notices

    def release(self, interception_id: str) -> None:
        entry = self._held.pop(interception_id, None)
        for hold in entry[1] if entry else ():
            hold.release()

    def sweep(self, max_age: float) -> int:
        """Release holds older than `max_age` seconds: an interception that never ended would
        otherwise keep its concurrency slots and reservations for good."""
        edge = time.monotonic() - max_age
        stale = [i for i, (since, _) in self._held.items() if since < edge]
        for interception_id in stale:
            logger.warning(f"aibridge: interception {interception_id} held admission state for "
                           f"over {max_age:g}s without ending; releasing it")
            self.release(interception_id)
        return len(stale)

    def __len__(self) -> int:
        return len(self._held)
