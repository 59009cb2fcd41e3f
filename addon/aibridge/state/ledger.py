"""What each interception in flight holds from admission, until it ends.

The admission steps that take something a request must give back when it is over (a budget
reservation, a concurrency slot, tokens to charge once usage is known) hand it over as a
`Hold`. Admitted, the holds are kept here under the interception's id; the one place an
interception ends (the reporter's `ended`, with the recorded cost) settles them. A request
refused before it went upstream never gets here: its steps' `release` gave everything back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

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
