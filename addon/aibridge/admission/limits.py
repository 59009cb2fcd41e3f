"""Rate limits: the admission step that refuses a request over a `[[limits]]` entry with 429.

Each limit matches requests like a budget (admission/matching.py) and bounds any of:

- `rpm`: requests admitted in the last 60 seconds (a sliding window; a refused request is not
  counted, nor is one a later admission step refused);
- `tpm`: input (cached or not) plus output tokens of the requests that *ended* in the last 60
  seconds. Tokens are known only at the end, so a request is admitted while the window is
  below the limit and charged when it ends: a burst may pass the limit by what was in flight;
- `concurrent`: requests in flight, given back when each ends.

Every check and its change is one atomic operation of the state store, so concurrent requests
are counted exactly. `Retry-After` is the number of seconds until the window admits a request
again (rounded up); for `concurrent` it is 1, as nobody knows when a request in flight ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aibridge.admission.matching import Matcher, RuleIndex
from aibridge.admission.pipeline import Candidate
from aibridge.config import LimitConfig
from aibridge.intercept import (
    OPENAI_ERR_CODE_RATE_LIMIT,
    OPENAI_ERR_TYPE_RATE_LIMIT,
    Actor,
    ResponseError,
    new_response_error,
)
from aibridge.state.ledger import Notice, Usage
from aibridge.state.store import StateStore

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

    @classmethod
    def build(cls, config: LimitConfig, team_key: str) -> Limit:
        matcher = Matcher.build(config.match, config.provider, config.model, team_key)
        return cls(config.name, matcher, config.rpm, config.tpm, config.concurrent,
                   matcher.fingerprint())

    def key(self, kind: str) -> str:
        return f"{kind}:{self.name}:{self.fingerprint}"


class LimitBook:
    def __init__(self, configs: Sequence[LimitConfig], team_key: str,
                 state: StateStore) -> None:
        self.state = state
        self.limits = tuple(Limit.build(c, team_key) for c in configs)
        self.index: RuleIndex[Limit] = RuleIndex(self.limits, [lim.matcher for lim in self.limits])

    def admit(self, actor: Actor, provider: str, model: str,
              now: float | None = None) -> LimitHold | None:
        """A hold on every limit that applies, or `ResponseError` (429) for the first one the
        request would exceed (nothing stays taken then)."""
        limits = self.index.find(actor, provider, model)
        if not limits:
            return None
        now = time.time() if now is None else now
        hold = LimitHold(self.state)
        try:
            for limit in limits:
                self._take(limit, hold, now)
        except ResponseError:
            hold.release()
            raise
        return hold

    def _take(self, limit: Limit, hold: LimitHold, now: float) -> None:
        state = self.state
        if limit.concurrent is not None:
            key = limit.key("concurrent")
            if not state.acquire(key, limit.concurrent):
                raise limit_error(limit, f"{limit.concurrent} request(s) in flight at most",
                                  CONCURRENT_RETRY)
            hold.slots.append(key)
        if limit.rpm is not None:
            key = limit.key("rpm")
            wait, entry = state.hit(key, now, WINDOW, limit.rpm)
            if entry is None:
                raise limit_error(limit, f"{limit.rpm} request(s) per minute", wait)
            hold.hits.append((key, entry))
        if limit.tpm is not None:
            key = limit.key("tpm")
            wait = state.wait(key, now, WINDOW, limit.tpm)
            if wait > 0:
                used = state.total(key, now, WINDOW)
                raise limit_error(limit, f"{limit.tpm} tokens per minute ({used} used)", wait)
            hold.tokens.append(key)


@dataclass(eq=False)
class LimitHold:
    """What one request holds on its limits (a `state.ledger.Hold`)."""

    state: StateStore
    slots: list[str] = field(default_factory=list)
    hits: list[tuple[str, object]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # tpm windows to charge at the end
    done: bool = False

    def settle(self, usage: Usage) -> Sequence[Notice]:
        if self.done:
            return ()
        self.done = True
        for key in self.slots:
            self.state.release(key)
        for key in self.tokens:
            self.state.charge(key, usage.at, usage.tokens, WINDOW)
        return ()

    def release(self) -> None:
        if self.done:
            return
        self.done = True
        for key in self.slots:
            self.state.release(key)
        for key, entry in self.hits:
            self.state.unhit(key, entry)


@dataclass
class RateLimits:
    """The admission step: take a slot and a window entry on every matching limit, or 429."""

    book: LimitBook

    def admit(self, candidate: Candidate) -> None:
        if candidate.actor is None or candidate.info is None:
            return
        hold = self.book.admit(candidate.actor, candidate.provider.name, candidate.info.model)
        if hold is not None:
            candidate.holds.append(hold)

    def release(self, candidate: Candidate) -> None:
        for hold in [h for h in candidate.holds if isinstance(h, LimitHold)]:
            hold.release()
            candidate.holds.remove(hold)


def limit_error(limit: Limit, what: str, wait: float) -> ResponseError:
    seconds = max(1, math.ceil(wait))
    return new_response_error(
        f'rate limit "{limit.name}" ({limit.matcher.text}) exceeded: {what}; retry in '
        f"{seconds}s", OPENAI_ERR_TYPE_RATE_LIMIT, OPENAI_ERR_CODE_RATE_LIMIT, 429,
        retry_after=seconds)
