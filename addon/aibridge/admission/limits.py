"""Rate limits: the admission step that refuses a request over a `[[limits]]` entry with 429.

Each limit matches requests like a budget (admission/matching.py) and bounds any of:

- `rpm`: requests admitted in the last 60 seconds (a sliding window; a refused request is not
  counted, nor is one a later admission step refused);
- `tpm`: input (cached or not) plus output tokens of the requests that *ended* in the last 60
  seconds. Tokens are known only at the end, so a request is admitted while the window is
  below the limit and charged when it ends: a burst may pass the limit by what was in flight;
- `concurrent`: requests in flight, given back when each ends.

A request's checks and their changes are a claim: one batch of the state store with the
budgets' reservations (admission/steps.py's `Quotas`), atomic, all or nothing, so concurrent
requests are counted exactly and a refused request takes nothing. `Retry-After` is the number
of seconds until the window admits a request again (rounded up); for `concurrent` it is 1, as
nobody knows when a request in flight ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aibridge.admission.matching import Matcher, RuleIndex
from aibridge.admission.pipeline import Candidate
from aibridge.admission.steps import take
from aibridge.config import LimitConfig
from aibridge.intercept import (
    OPENAI_ERR_CODE_RATE_LIMIT,
    OPENAI_ERR_TYPE_RATE_LIMIT,
    Actor,
    ResponseError,
    new_response_error,
)
from aibridge.state.ledger import NOTHING, Ending, Notice, Usage, finish
from aibridge.state.store import (
    Acquire,
    AdmitOp,
    Below,
    Charge,
    EndOp,
    Hit,
    Release,
    StateStore,
    Unhit,
)

WINDOW = 60.0  # seconds: requests and tokens are counted per minute
CONCURRENT_RETRY = 1.0  # seconds suggested when all concurrency slots are taken


@dataclass(frozen=True, eq=False)
class Limit:
    name: str
    matcher: Matcher
    rpm: int | None
    tpm: int | None
    concurrent: int | None
    fingerprint: str
    acquire: Acquire | None  # the same for every request
    rpm_key: str
    tpm_key: str

    @classmethod
    def build(cls, config: LimitConfig, team_key: str) -> Limit:
        matcher = Matcher.build(config.match, config.provider, config.model, team_key)
        fingerprint = matcher.fingerprint()
        acquire = (None if config.concurrent is None else
                   Acquire(_key("concurrent", config.name, fingerprint), config.concurrent))
        return cls(config.name, matcher, config.rpm, config.tpm, config.concurrent,
                   fingerprint, acquire, _key("rpm", config.name, fingerprint),
                   _key("tpm", config.name, fingerprint))

    def key(self, kind: str) -> str:
        return _key(kind, self.name, self.fingerprint)


def _key(kind: str, name: str, fingerprint: str) -> str:
    return f"{kind}:{name}:{fingerprint}"


class LimitBook:
    def __init__(self, configs: Sequence[LimitConfig], team_key: str,
                 state: StateStore) -> None:
        self.state = state
        self.limits = tuple(Limit.build(c, team_key) for c in configs)
        self.index: RuleIndex[Limit] = RuleIndex(self.limits, [lim.matcher for lim in self.limits])

    def claim(self, actor: Actor, provider: str, model: str,
              now: float | None = None) -> LimitClaim | None:
        """On every limit that applies, in order: a slot, an entry in the request window, a
        look at the token window (None: no limit applies)."""
        limits = self.index.find(actor, provider, model)
        if not limits:
            return None
        now = time.time() if now is None else now
        ops: list[AdmitOp] = []
        owners: list[Limit] = []
        for limit in limits:
            if limit.acquire is not None:
                ops.append(limit.acquire)
                owners.append(limit)
            if limit.rpm is not None:
                ops.append(Hit(limit.rpm_key, now, WINDOW, limit.rpm))
                owners.append(limit)
            if limit.tpm is not None:
                ops.append(Below(limit.tpm_key, now, WINDOW, limit.tpm))
                owners.append(limit)
        return LimitClaim(self.state, ops, owners)

    def admit(self, actor: Actor, provider: str, model: str,
              now: float | None = None) -> LimitHold | None:
        """A hold on every limit that applies, or `ResponseError` (429) for the first one the
        request would exceed (nothing stays taken then): the claim, run alone."""
        claim = self.claim(actor, provider, model, now)
        if claim is None:
            return None
        [hold] = take([claim]).parts
        assert isinstance(hold, LimitHold)
        return hold


@dataclass(eq=False, slots=True)
class LimitClaim:
    """What one request asks of its limits (an `admission.steps.Claim`)."""

    state: StateStore
    ops: list[AdmitOp]
    limits: list[Limit]  # the limit of each operation

    def refusal(self, index: int, result: object) -> ResponseError:
        op, limit = self.ops[index], self.limits[index]
        if type(op) is Acquire:
            return limit_error(limit, f"{limit.concurrent} request(s) in flight at most",
                               CONCURRENT_RETRY)
        if type(op) is Hit:
            assert isinstance(result, float)
            return limit_error(limit, f"{limit.rpm} request(s) per minute", result)
        assert isinstance(result, tuple)
        wait, used = result
        return limit_error(limit, f"{limit.tpm} tokens per minute ({used} used)", wait)

    def taken(self, results: Sequence[object]) -> list[LimitHold]:
        hold = LimitHold(self.state)
        for op, result in zip(self.ops, results, strict=True):
            kind = type(op)
            if kind is Acquire:
                hold.slots.append(op.key)
            elif kind is Hit:
                hold.hits.append((op.key, result))
            else:
                hold.tokens.append(op.key)
        return [hold]


@dataclass(eq=False)
class LimitHold:
    """What one request holds on its limits (a `state.ledger.Part`; alone, a `Hold`)."""

    state: StateStore
    slots: list[str] = field(default_factory=list)
    hits: list[tuple[str, object]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # tpm windows to charge at the end
    done: bool = False

    def ending(self, usage: Usage) -> Ending:
        if self.done:
            return NOTHING
        self.done = True
        ops: list[EndOp] = [Release(key) for key in self.slots]
        if usage.tokens > 0:
            ops += (Charge(key, usage.at, usage.tokens, WINDOW) for key in self.tokens)
        return Ending(tuple(ops))

    def giving_back(self) -> Ending:
        if self.done:
            return NOTHING
        self.done = True
        return Ending((*(Release(key) for key in self.slots),
                       *(Unhit(key, entry) for key, entry in self.hits)))

    def settle(self, usage: Usage) -> Sequence[Notice]:
        return finish(self.state, [self.ending(usage)])

    def release(self) -> None:
        finish(self.state, [self.giving_back()])


@dataclass
class RateLimits:
    """The rate-limit policy (an `admission.steps.Quota`, run by the `Quotas` step): a slot
    and a window entry on every matching limit, or 429."""

    book: LimitBook

    def claim(self, candidate: Candidate) -> LimitClaim | None:
        if candidate.actor is None or candidate.info is None:
            return None
        return self.book.claim(candidate.actor, candidate.provider.name, candidate.info.model)


def limit_error(limit: Limit, what: str, wait: float) -> ResponseError:
    seconds = max(1, math.ceil(wait))
    return new_response_error(
        f'rate limit "{limit.name}" ({limit.matcher.text}) exceeded: {what}; retry in '
        f"{seconds}s", OPENAI_ERR_TYPE_RATE_LIMIT, OPENAI_ERR_CODE_RATE_LIMIT, 429,
        retry_after=seconds)
