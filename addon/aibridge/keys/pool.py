"""Centralized provider keys: an ordered pool per provider with failover (docs/behaviour.md §7).

Each key is `valid`, `cooling` (rate-limited until a deadline) or `dead` (refused
authentication). States are derived lazily from the clock, never by timers. Unlike Coder's
AI Bridge, a dead key is not dead until restart: once `dead_retry_after` has passed, one request
at a time may use it as a probe; a 2xx brings it back, a 401/403 kills it for another interval.

A request walks the pool with an `Attempt`: `next()` hands out usable keys it has not tried yet,
the caller reports each upstream answer with `pool.mark()`, and fails over while
`pool.should_fail_over(status)` says so. When nothing is left `next()` raises `KeyPoolError`.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from aibridge.counters import Registry
from aibridge.intercept import CredentialInfo, CredentialKind, mask_secret, new_credential_info
from aibridge.keys.retry_delay import cooldown_after_429, quota_exhausted_for
from aibridge.keys.sharing import KeyView, SharedKeys, key_id
from aibridge.model import KeyPoolError, PoolErrorKind

Strategy = Literal["priority", "round_robin"]
STRATEGIES: tuple[Strategy, ...] = ("priority", "round_robin")
DEFAULT_DEAD_RETRY_AFTER = 600.0
_FAIL_OVER = frozenset({401, 403, 429})


class KeyState(enum.StrEnum):
    VALID = "valid"
    COOLING = "cooling"
    DEAD = "dead"


@dataclass(frozen=True)
class Key:
    index: int
    secret: str

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"Key(index={self.index})"

    def info(self, header: str) -> CredentialInfo:
        """The key's masked info, made once per header name and kept with the key."""
        infos = self.__dict__.setdefault("_infos", {})
        info = infos.get(header)
        if info is None:
            info = infos[header] = new_credential_info(CredentialKind.CENTRALIZED, self.secret,
                                                       header)
        return info


@dataclass
class _Health:
    """Mutable per-key state; only touched under the pool lock. Times are on the pool clock."""

    cooling_until: float = 0.0
    dead: bool = False
    dead_since: float = 0.0  # when marked dead, or when the last probe was handed out
    probing: bool = False  # a request holds this dead key as a probe; its 2xx revives it
    changed: float = 0.0  # wall clock of the last change of `dead` (shared state: later wins)

    def state(self, now: float) -> KeyState:
        if self.dead:  # dead beats cooling
            return KeyState.DEAD
        return KeyState.COOLING if now < self.cooling_until else KeyState.VALID


class KeyPool:
    def __init__(
        self,
        provider: str,
        secrets: list[str],
        *,
        strategy: Strategy = "priority",
        dead_retry_after: float = DEFAULT_DEAD_RETRY_AFTER,
        counters: Registry | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        """`dead_retry_after` may be `math.inf` for keys that stay dead until restart (Coder's way).
        `clock` orders state changes (monotonic); `wallclock` dates provider reset headers."""
        if not secrets:
            raise ValueError(f"provider {provider!r}: no keys provided")
        if len(set(secrets)) != len(secrets):
            raise ValueError(f"provider {provider!r}: duplicate key")
        if strategy not in STRATEGIES:
            raise ValueError(f"provider {provider!r}: unknown key strategy {strategy!r}")
        if not dead_retry_after > 0:
            raise ValueError(f"provider {provider!r}: dead_retry_after must be positive")
        self.provider = provider
        self.keys = [Key(i, s) for i, s in enumerate(secrets)]
        self.strategy: Strategy = strategy
        self.dead_retry_after = dead_retry_after
        self.counters = counters if counters is not None else Registry()
        self._clock = clock
        self._wallclock = wallclock
        self._health = [_Health() for _ in secrets]
        self._cursor = 0  # round_robin: where the next attempt starts
        self._lock = threading.Lock()
        # Other bridge processes ([state] url): told of every change, heard via apply_shared.
        self.shared: SharedKeys | None = None
        self.key_ids = [key_id(s) for s in secrets]

    # -- sharing with other processes (keys/sharing.py) -------------------------------------

    def apply_shared(self, key: str, view: KeyView) -> None:
        """What the shared store says of a key (another process's change, or a merge)."""
        try:
            index = self.key_ids.index(key)
        except ValueError:
            return  # not one of this pool's keys (another config, or a reload in between)
        with self._lock:
            health, now, wall = self._health[index], self._clock(), self._wallclock()
            if view.cooling_until > wall:
                health.cooling_until = max(health.cooling_until, now + view.cooling_until - wall)
            if view.changed >= health.changed:
                if health.dead and not view.dead:
                    health.probing = False
                health.dead, health.changed = view.dead, view.changed
            if view.dead:
                health.dead_since = max(health.dead_since, now + view.dead_since - wall)

    def shared_view(self, index: int) -> KeyView:
        """This process's view of a key, in wall-clock time, for the shared store."""
        with self._lock:
            return self._view(self._health[index])

    def _view(self, health: _Health) -> KeyView:
        offset = self._wallclock() - self._clock()
        cooling = health.cooling_until + offset if health.cooling_until else 0.0
        return KeyView(cooling, health.dead, health.dead_since + offset, health.changed)

    def _publish(self, index: int) -> None:
        shared = self.shared
        if shared is None:
            return
        merged = shared.publish_key(self.provider, self.key_ids[index], self.shared_view(index))
        if merged is not None:
            self.apply_shared(self.key_ids[index], merged)

    def __len__(self) -> int:
        return len(self.keys)

    # -- selection -------------------------------------------------------------------------

    def attempt(self) -> Attempt:
        """A walker for one request (or one upstream call of an agentic loop)."""
        return Attempt(self)

    def select(self) -> Key:
        """The first usable key of a fresh walk; for callers that do not fail over."""
        return self.attempt().next()

    def has_valid_besides(self, key: Key) -> bool:
        """Whether a retry right now would get a different, healthy key."""
        with self._lock:
            now = self._clock()
            return any(h.state(now) is KeyState.VALID
                       for k, h in zip(self.keys, self._health, strict=True) if k != key)

    def exhaustion(self) -> KeyPoolError:
        """The error for a request that finds no usable key now (counted as an exhaustion)."""
        with self._lock:
            error = self._exhausted(self._clock())
        self.counters.key_exhaustions.inc(provider=self.provider, outcome=str(error.kind))
        return error

    def should_fail_over(self, status: int) -> bool:
        """Only key-specific refusals move on to the next key; 5xx and 529 go back as is."""
        return status in _FAIL_OVER

    def _order(self) -> list[int]:
        n = len(self.keys)
        if self.strategy == "priority":
            return list(range(n))
        start = self._cursor
        self._cursor = (start + 1) % n
        return [(start + i) % n for i in range(n)]

    def _take(self, order: list[int], tried: set[int]) -> Key:
        """Under the lock: the next usable key in `order` outside `tried`, or raise."""
        now = self._clock()
        for i in order:
            if i in tried:
                continue
            health = self._health[i]
            state = health.state(now)
            if state is KeyState.VALID:
                return self.keys[i]
            if state is KeyState.DEAD and now >= health.dead_since + self.dead_retry_after:
                # Restarting the interval is the probe's lease: no other request gets this key
                # until it has passed again, even if this probe's outcome is never reported.
                # With other processes the lease is theirs too (None: unreachable, local only).
                if self.shared is not None and self.shared.take_probe(
                        self.provider, self.key_ids[i], self._wallclock(),
                        self.dead_retry_after) is False:
                    health.dead_since = now
                    continue
                health.dead_since, health.probing = now, True
                return self.keys[i]
        error = self._exhausted(now)
        self.counters.key_exhaustions.inc(provider=self.provider, outcome=str(error.kind))
        raise error

    def _exhausted(self, now: float) -> KeyPoolError:
        states = [h.state(now) for h in self._health]
        if KeyState.VALID in states:  # freed while this walk ran: a retry now will find it
            return KeyPoolError(PoolErrorKind.RATE_LIMITED, 0.0)
        cooling = [h.cooling_until - now for h, s in zip(self._health, states, strict=True)
                   if s is KeyState.COOLING]
        if cooling:
            return KeyPoolError(PoolErrorKind.RATE_LIMITED, min(cooling))
        # All dead: 502 either way; the delay to the next re-probe is informational.
        reprobe = min(h.dead_since + self.dead_retry_after - now for h in self._health)
        return KeyPoolError(PoolErrorKind.AUTH_FAILED, reprobe if math.isfinite(reprobe) else 0.0)

    # -- marking ---------------------------------------------------------------------------

    def mark(self, key: Key, status: int, headers: Mapping[str, str], *,
             now: float | None = None, body: bytes | None = None) -> str | None:
        """Record the upstream answer to a request made with `key`.

        `now` is wall-clock epoch seconds for dating reset headers (default: the pool's
        wallclock). Returns the reason of the state transition, if there was one; the counter
        `key_transitions` counts exactly these.
        """
        health = self._health[self._index(key)]
        wall = self._wallclock() if now is None else now
        # Header parsing is pure: done before taking the lock.
        rest: float | None = None
        if status == 429:
            rest = cooldown_after_429(headers, wall, body=body)  # body: Google's RetryInfo
        elif status not in (401, 403):
            rest = quota_exhausted_for(headers, wall)
        with self._lock:
            before = (health.cooling_until, health.dead)
            reasons = self._apply(health, status, rest, self._clock())
            changed = before != (health.cooling_until, health.dead)
            if changed and before[1] != health.dead:
                health.changed = self._wallclock()
        if changed:
            self._publish(key.index)
        for reason in reasons:
            self.counters.key_transitions.inc(provider=self.provider, reason=reason)
        return reasons[-1] if reasons else None

    @staticmethod
    def _apply(health: _Health, status: int, rest: float | None, now: float) -> list[str]:
        """Under the lock: the state change for `status`, `rest` being the cooldown it calls for;
        returns the transition reasons in order."""
        reasons: list[str] = []
        if status in (401, 403):
            was_dead = health.dead
            # A failed probe or a late refusal: dead again, and the re-probe clock restarts.
            health.dead, health.dead_since, health.probing = True, now, False
            return [] if was_dead else ["unauthorized" if status == 401 else "forbidden"]
        if health.dead:
            if not health.probing:
                return []  # a late answer from before the key died proves nothing
            health.probing = False
            # The provider checks credentials before limits, so a 429 also proves the key works.
            if not (200 <= status < 300 or status == 429):
                return []  # inconclusive (5xx, 400…): stays dead until the next probe
            health.dead = False
            if status != 429:
                reasons.append("recovered")
        if rest is not None:
            was_cooling = health.state(now) is KeyState.COOLING
            health.cooling_until = max(health.cooling_until, now + rest)  # never shorten
            if not was_cooling:
                reasons.append("rate_limited" if status == 429 else "quota_exhausted")
        return reasons

    # -- inspection ------------------------------------------------------------------------

    def state(self, key: Key) -> KeyState:
        index = self._index(key)
        with self._lock:
            return self._health[index].state(self._clock())

    def snapshot(self) -> list[dict[str, object]]:
        """Per key: index, masked hint, state and seconds until usable. Never the secret."""
        with self._lock:
            now = self._clock()
            rows = []
            for key, health in zip(self.keys, self._health, strict=True):
                state = health.state(now)
                if state is KeyState.DEAD:
                    wait = health.dead_since + self.dead_retry_after - now
                elif state is KeyState.COOLING:
                    wait = health.cooling_until - now
                else:
                    wait = 0.0
                rows.append({"index": key.index, "hint": mask_secret(key.secret),
                             "state": str(state), "usable_in": max(0.0, wait),
                             "probing": health.probing})
            return rows

    def _index(self, key: Key) -> int:
        if not 0 <= key.index < len(self.keys) or self.keys[key.index] != key:
            raise ValueError(f"{key!r} is not a key of provider {self.provider!r}")
        return key.index


class Attempt:
    """One request's walk over the pool: each key at most once, shared state respected.

    Not meant to be shared between threads; the pool it reads is.
    """

    def __init__(self, pool: KeyPool) -> None:
        self.pool = pool
        self.attempts = 0
        self.last: Key | None = None
        self._tried: set[int] = set()
        self._order: list[int] | None = None  # fixed on first use so idle attempts don't rotate
        self._finished = False

    def next(self) -> Key:
        """The next usable key not yet tried; `KeyPoolError` when none is left."""
        pool = self.pool
        with pool._lock:
            if self._order is None:
                self._order = pool._order()
            key = pool._take(self._order, self._tried)
        self._tried.add(key.index)
        self.attempts += 1
        self.last = key
        return key

    def finish(self) -> None:
        """Observe how many keys this walk used, once (nothing if it used none)."""
        if self._finished:
            return
        self._finished = True
        if self.attempts:
            self.pool.counters.failover_attempts.observe(self.attempts,
                                                         provider=self.pool.provider)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
