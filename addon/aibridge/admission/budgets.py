"""Budgets: the admission step that refuses a request whose budget is spent.

A budget (`[[budgets]]` in the config) counts the recorded cost of the requests it matches over
a UTC calendar period (admission/periods.py). Its state is a balance in the shared state store
(state/store.py): what ended requests cost (`spent`) and what requests in flight may still cost
(`reserved`).

A request is admitted while `spent + reserved < limit`, and then reserves its worst case: its
estimated input (the body's size, `BYTES_PER_TOKEN` bytes a token) and all the output it may
ask for (`max_tokens`, `max_output_tokens`, `max_completion_tokens`, else `[budgets_settings]
default_output_tokens`) at the model's price. When it ends, the reservation is replaced by the
recorded cost (state/ledger.py). So a burst of concurrent requests cannot overshoot a budget by
more than the worst cases of the requests in flight when it ran out. The reservations are a
claim (admission/steps.py's `Quotas` runs them with the rate limits' as one batch of the
state store), and their settlement is one batch with the limits' too.

A model without a price reserves nothing and is charged nothing (its cost is recorded as
unknown, never as zero), unless `[budgets_settings] unpriced = "refuse"`, which refuses it
wherever a budget applies.

Crossing a `warn_at` share (and the limit itself) logs once per budget and period, becomes a
notice for telemetry, and may be POSTed to `[budgets_settings] webhook_url` (off the request
path: `notify` only queues it).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from aibridge.admission.matching import Matcher, RuleIndex, describe_actor
from aibridge.admission.periods import Period, Span, iso
from aibridge.admission.pipeline import Candidate
from aibridge.admission.steps import take
from aibridge.config import BudgetConfig, BudgetsSettings
from aibridge.intercept import OPENAI_ERR_TYPE_PERMISSION, Actor, ResponseError, new_response_error
from aibridge.pricing import PriceBook
from aibridge.recording.connection import recording_connection
from aibridge.recording.spend import SpendRow, spend_rows
from aibridge.state.ledger import NOTHING, Ending, Notice, Usage, finish
from aibridge.state.store import (
    Balance,
    Reserve,
    Settle,
    Settled,
    StateStore,
    Unreserve,
    from_nanos,
    to_nanos,
)

logger = logging.getLogger("aibridge")
BYTES_PER_TOKEN = 4  # what a token of English text or JSON takes, roughly
OUTPUT_FIELDS = ("max_tokens", "max_output_tokens", "max_completion_tokens")
KEY_MARGIN = 86_400.0  # seconds a period's balance is kept after it ends (late settlements)
WARNING, SPENT = "aibridge.budget.warning", "aibridge.budget.spent"
BUDGET_EXCEEDED, UNPRICED_MODEL = "budget_exceeded", "budget_unpriced_model"

Notify = Callable[[Mapping[str, object]], None]


@dataclass(frozen=True, eq=False)
class Budget:
    name: str
    matcher: Matcher
    period: Period
    limit: int  # nano-USD
    limit_usd: Decimal
    warn_at: tuple[float, ...]
    fingerprint: str  # of what it counts (whom, which models, which period)
    marks: tuple[tuple[str, int], ...]  # (mark, nano-USD): crossings noticed once a period

    @classmethod
    def build(cls, config: BudgetConfig, team_key: str) -> Budget:
        matcher = Matcher.build(config.match, config.provider, config.model, team_key)
        limit = to_nanos(config.limit_usd)
        marks = tuple((f"warn:{share}", _threshold(limit, share)) for share in config.warn_at)
        return cls(name=config.name, matcher=matcher, period=Period(config.period),
                   limit=limit, limit_usd=config.limit_usd, warn_at=tuple(config.warn_at),
                   fingerprint=matcher.fingerprint(config.period),
                   marks=(*marks, ("spent", limit)))

    def key(self, span: Span) -> str:
        return f"budget:{self.name}:{self.fingerprint}:{span.label}"


class BudgetBook:
    """The configured budgets over the shared state: reserve, settle, warn."""

    def __init__(self, configs: Sequence[BudgetConfig], settings: BudgetsSettings,
                 state: StateStore, prices: PriceBook | None, *,
                 notify: Notify | None = None) -> None:
        self.settings, self.state, self.prices, self.notify = settings, state, prices, notify
        self.budgets = tuple(Budget.build(c, settings.team_key) for c in configs)
        self.index: RuleIndex[Budget] = RuleIndex(self.budgets,
                                                  [b.matcher for b in self.budgets])

    def prime(self, spent: Callable[[Budget, Span], Decimal], now: float | None = None) -> int:
        """Start each budget whose current period the state does not hold yet (a start, or a
        reload that added or changed it) from `spent` (the recorded cost). Thresholds already
        crossed are marked as warned, so a restart does not warn again. Returns how many."""
        now = time.time() if now is None else now
        primed = 0
        for budget in self.budgets:
            span = budget.period.span(now)
            key = budget.key(span)
            if self.state.balance(key) is not None:
                continue
            balance = self.state.prime(key, to_nanos(spent(budget, span)),
                                       expires_at=span.end + KEY_MARGIN)
            for mark, threshold in budget.marks:
                if balance.spent >= threshold:
                    self.state.mark_once(key, mark)
            primed += 1
        return primed

    def claim(self, actor: Actor, provider: str, provider_type: str, model: str,
              body: Mapping[str, object], body_bytes: int,
              now: float | None = None) -> BudgetClaim | None:
        """A reservation at the request's worst case on every budget that applies (None:
        none does), or `ResponseError` (403) at once for an unpriced model under
        `unpriced = "refuse"`."""
        budgets = self.index.find(actor, provider, model)
        if not budgets:
            return None
        now = time.time() if now is None else now
        amount = self.worst_case(provider, provider_type, model, body, body_bytes, now)
        if amount is None and self.settings.unpriced == "refuse":
            raise new_response_error(
                f'model "{model}" has no price, and budget "{budgets[0].name}" applies to this '
                "request: the bridge cannot count it (ask for a [prices] entry)",
                OPENAI_ERR_TYPE_PERMISSION, UNPRICED_MODEL, 403, should_retry=False)
        spans, ops = [], []
        for budget in budgets:
            span = budget.period.span(now)
            spans.append(span)
            ops.append(Reserve(budget.key(span), amount or 0, budget.limit,
                               span.end + KEY_MARGIN))
        return BudgetClaim(self, self.state, actor, budgets, spans, ops)

    def reserve(self, actor: Actor, provider: str, provider_type: str, model: str,
                body: Mapping[str, object], body_bytes: int,
                now: float | None = None) -> list[Reservation]:
        """Reservations on every budget that applies, or `ResponseError` (403) for the first
        that is spent (nothing stays reserved then): the claim, run alone."""
        claim = self.claim(actor, provider, provider_type, model, body, body_bytes, now)
        if claim is None:
            return []
        return [part for part in take([claim]).parts
                if isinstance(part, Reservation)]

    def worst_case(self, provider: str, provider_type: str, model: str,
                   body: Mapping[str, object], body_bytes: int, now: float) -> int | None:
        """The most the request may cost in nano-USD, or None when its model has no price."""
        rates = self.prices.rates(provider, provider_type, model, at=now) if self.prices else None
        if rates is None:
            return None
        output = output_bound(body, self.settings.default_output_tokens)
        return to_nanos(rates.worst_case(math.ceil(body_bytes / BYTES_PER_TOKEN), output))

    def ending(self, reservation: Reservation, usage: Usage) -> Ending:
        """The reservation replaced by the recorded cost; a threshold the spend crossed (the
        store marks it once per period) becomes a notice."""
        actual = _nanos(usage.cost_usd) if usage.cost_usd is not None else 0
        marks = reservation.budget.marks if actual > 0 else ()
        settle = Settle(reservation.key, reservation.amount, actual,
                        reservation.span.end + KEY_MARGIN, marks)

        def read(results: Sequence[object]) -> list[Notice]:
            [settled] = results
            assert isinstance(settled, Settled)
            spent = settled.balance.spent
            return [self._notice(SPENT, reservation, 1.0, spent) if mark == "spent" else
                    self._notice(WARNING, reservation, float(mark.removeprefix("warn:")), spent)
                    for mark in settled.marks]
        return Ending((settle,), read if marks else None)

    def _notice(self, name: str, reservation: Reservation, share: float,
                spent: int) -> Notice:
        budget, span = reservation.budget, reservation.span
        what = f"crossed {share:.0%}" if name == WARNING else "is spent"
        message = (f'budget "{budget.name}" ({budget.matcher.text}) {what}: {money(spent)} of '
                   f"{money(budget.limit)} {budget.period.words}; resets {span.resets}")
        attributes: dict[str, str | int | float] = {
            "budget": budget.name, "match": budget.matcher.text, "share": share,
            "spent_usd": str(from_nanos(spent)), "limit_usd": str(budget.limit_usd),
            "period": budget.period.kind, "period_start": iso(span.start),
            "resets_at": span.resets,
            **describe_actor(reservation.actor, self.settings.team_key)}
        logger.warning(f"aibridge: {message}")
        if self.notify is not None:
            try:
                self.notify({"event": name.removeprefix("aibridge."), "message": message,
                             "at": iso(time.time()), **attributes})
            except Exception:  # a full queue or a bug: the notice is logged all the same
                logger.exception("aibridge: queueing a budget webhook failed")
        return Notice(name, message, attributes)


def prime_from_records(book: BudgetBook, url: str | None, base_dir: Path | None,
                       now: float | None = None) -> int:
    """Start the budgets the state does not hold yet from the recorded cost of their current
    period (`[recording] url`). Returns how many were started. Raises RecordingError."""
    now = time.time() if now is None else now
    pending = [b for b in book.budgets if book.state.balance(b.key(b.period.span(now))) is None]
    if not pending:
        return 0
    since = datetime.fromtimestamp(min(b.period.span(now).start for b in pending), UTC)
    with recording_connection(url, base_dir, must_exist=False) as connection:
        rows = spend_rows(connection, since) if connection is not None else []
    return book.prime(spend_from(rows), now)


def spend_from(rows: Sequence[SpendRow]) -> Callable[[Budget, Span], Decimal]:
    """A budget's recorded spend in a period, from spend rows (per day, actor, model)."""
    def spent(budget: Budget, span: Span) -> Decimal:
        first, end = _day(span.start), _day(span.end)
        return sum((row.cost_usd for row in rows
                    if first <= row.day < end and budget.matcher.applies(
                        _Recorded(row.actor_id, row.actor_metadata), row.provider, row.model)),
                   Decimal(0))
    return spent


@dataclass(frozen=True)
class _Recorded:
    id: str
    metadata: Mapping[str, str]


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


@dataclass(eq=False, slots=True)
class BudgetClaim:
    """The reservations one request asks for (an `admission.steps.Claim`)."""

    book: BudgetBook
    state: StateStore
    actor: Actor
    budgets: Sequence[Budget]
    spans: list[Span]
    ops: list[Reserve]

    def refusal(self, index: int, result: object) -> ResponseError:
        assert isinstance(result, Balance)
        return spent_error(self.budgets[index], self.spans[index], result.spent,
                           result.reserved)

    def taken(self, results: Sequence[object]) -> list[Reservation]:
        return [Reservation(self.book, budget, span, op.key, op.amount, self.actor)
                for budget, span, op in zip(self.budgets, self.spans, self.ops, strict=True)]


@dataclass(eq=False)
class Reservation:
    """One budget's hold on one request (a `state.ledger.Part`; alone, a `Hold`)."""

    book: BudgetBook
    budget: Budget
    span: Span
    key: str
    amount: int  # nano-USD reserved
    actor: Actor
    done: bool = False

    def ending(self, usage: Usage) -> Ending:
        if self.done:
            return NOTHING
        self.done = True
        return self.book.ending(self, usage)

    def giving_back(self) -> Ending:
        if self.done:
            return NOTHING
        self.done = True
        return Ending((Unreserve(self.key, self.amount),))

    def settle(self, usage: Usage) -> Sequence[Notice]:
        return finish(self.book.state, [self.ending(usage)])

    def release(self) -> None:
        finish(self.book.state, [self.giving_back()])


@dataclass
class Budgets:
    """The budget policy (an `admission.steps.Quota`, run by the `Quotas` step): reserve on
    every matching budget, or refuse with 403."""

    book: BudgetBook

    def claim(self, candidate: Candidate) -> BudgetClaim | None:
        if candidate.actor is None or candidate.info is None or candidate.body is None:
            return None
        provider = candidate.provider
        return self.book.claim(candidate.actor, provider.name, provider.type,
                               candidate.info.model, candidate.body, body_size(candidate))


def spent_error(budget: Budget, span: Span, spent: int, reserved: int) -> ResponseError:
    held = (f" (and {money(reserved)} held by requests in flight)"
            if reserved and spent < budget.limit else "")
    return new_response_error(
        f'budget "{budget.name}" is spent: {money(spent)} of {money(budget.limit)} '
        f"{budget.period.words}{held}; resets {span.resets}",
        OPENAI_ERR_TYPE_PERMISSION, BUDGET_EXCEEDED, 403, should_retry=False)


def output_bound(body: Mapping[str, object], default: int) -> int:
    """The output a request may produce: the largest token limit it names, else `default`."""
    named = [v for f in OUTPUT_FIELDS
             if isinstance(v := body.get(f), int) and not isinstance(v, bool) and v > 0]
    return max(named) if named else default


def body_size(candidate: Candidate) -> int:
    """The request body's size in bytes, uncompressed."""
    if candidate.body_bytes is not None:
        return candidate.body_bytes
    request = candidate.request
    if request is not None and request.raw_content is not None \
            and "content-encoding" not in request.headers:
        return len(request.raw_content)
    return len(json.dumps(candidate.body, separators=(",", ":"), ensure_ascii=False)
               .encode()) if candidate.body is not None else 0


def money(nanos: int) -> str:
    """$500.12; sub-dollar amounts keep four decimals ($0.0042), so a few cents' budget still
    reads right."""
    usd = from_nanos(nanos)
    if abs(usd) >= 1 or usd == 0:
        return f"${usd.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)}"
    text = str(usd.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))
    while text[-1] == "0" and len(text.partition(".")[2]) > 2:
        text = text[:-1]
    return f"${text}"


# The same cost settles every budget of a request: converted once.
_nanos = functools.lru_cache(maxsize=64)(to_nanos)


def _threshold(limit: int, share: float) -> int:
    return math.ceil(limit * Decimal(str(share)))
