"""Rate-limit failed proxy logins (token guessing) without letting an attacker lock everyone out.

Failures are counted in three places, each over a sliding window of `window` seconds:

- per (client address, user name): at `per_user` failures that pair is refused — its next
  attempts are answered 407 without checking the token — until the count falls again;
- per client address, across user names: at `per_address` the address is refused for every
  user name that has not logged in successfully from it within `known_ttl` seconds;
- for the whole proxy: at `global_limit` every (address, user name) pair that has not logged in
  successfully within `known_ttl` is refused.

So guessing from one address under one name, under many names, or from many addresses is
bounded, while people behind the same NAT who logged in before keep logging in (unless someone
guesses under their exact user name from their address). A success clears only its own pair's
count and marks the pair known. Refused attempts are not counted, so a lockout ends on time.

The window is a sliding-window counter (the previous fixed window's count weighted by how much
of it still overlaps, plus the current one's): two numbers per key, so memory stays small and
bounded (least recently used keys are dropped beyond `max_keys`).

With `[state] url` the counts are shared by every bridge process (`SharedFailures`, one round
trip per login, state/redis_shared.py); the local counts are kept all the same and decide while
the shared store is unreachable.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Refusal = Literal["user", "address", "global"]


@dataclass(frozen=True)
class FailurePolicy:
    per_user: int = 10
    per_address: int = 100
    global_limit: int = 1000
    window: float = 60.0
    known_ttl: float = 86_400.0


class SharedFailures(Protocol):
    """The counts of every bridge process. Each method returns None when the shared store is
    unreachable (the local counts decide then)."""

    def auth_refused(self, address: str, user: str,
                     policy: FailurePolicy) -> tuple[Refusal | None] | None:
        """(why the attempt is not checked, or None to check it)."""

    def auth_failed(self, address: str, user: str,
                    policy: FailurePolicy) -> list[Refusal] | None:
        """Count a failure; the limits this one reached."""

    def auth_succeeded(self, address: str, user: str, policy: FailurePolicy) -> None: ...


class _Counter:
    """Failures in roughly the last `window` seconds."""

    __slots__ = ("current", "previous", "slot")

    def __init__(self) -> None:
        self.slot, self.current, self.previous = 0, 0, 0

    def estimate(self, now: float, window: float) -> float:
        self._roll(now, window)
        overlap = 1.0 - (now / window - self.slot)
        return self.previous * overlap + self.current

    def add(self, now: float, window: float) -> None:
        self._roll(now, window)
        self.current += 1

    def _roll(self, now: float, window: float) -> None:
        slot = int(now // window)
        if slot == self.slot:
            return
        self.previous = self.current if slot == self.slot + 1 else 0
        self.current, self.slot = 0, slot


class AuthFailureLimiter:
    def __init__(self, policy: FailurePolicy | None = None, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or FailurePolicy()
        self.max_keys, self._clock = max_keys, clock
        self._pairs: OrderedDict[tuple[str, str], _Counter] = OrderedDict()
        self._addresses: OrderedDict[str, _Counter] = OrderedDict()
        self._global = _Counter()
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()  # → last success
        self.shared: SharedFailures | None = None  # other bridge processes ([state] url)

    def configure(self, policy: FailurePolicy) -> None:
        """New limits (a config reload); the counts so far stay."""
        self.policy = policy

    def refused(self, address: str, user: str) -> Refusal | None:
        """Why an attempt from `address` as `user` is not even checked, or None to check it."""
        if self.shared is not None and (
                answer := self.shared.auth_refused(address, user, self.policy)) is not None:
            return answer[0]
        now, p = self._clock(), self.policy
        pair = (address, user)
        counter = self._pairs.get(pair)
        if counter is not None and counter.estimate(now, p.window) >= p.per_user:
            return "user"
        if self._is_known(pair, now):
            return None
        counter = self._addresses.get(address)
        if counter is not None and counter.estimate(now, p.window) >= p.per_address:
            return "address"
        if self._global.estimate(now, p.window) >= p.global_limit:
            return "global"
        return None

    def failed(self, address: str, user: str) -> list[Refusal]:
        """Record a failure; returns the limits this one reached (to log each once)."""
        now, p = self._clock(), self.policy
        reached: list[Refusal] = []
        for kind, counter, limit in (
                ("user", self._entry(self._pairs, (address, user)), p.per_user),
                ("address", self._entry(self._addresses, address), p.per_address),
                ("global", self._global, p.global_limit)):
            before = counter.estimate(now, p.window)
            counter.add(now, p.window)
            if before < limit <= before + 1:
                reached.append(kind)
        if self.shared is not None and (
                shared := self.shared.auth_failed(address, user, p)) is not None:
            return shared
        return reached

    def succeeded(self, address: str, user: str) -> None:
        if self.shared is not None:
            self.shared.auth_succeeded(address, user, self.policy)
        pair = (address, user)
        self._pairs.pop(pair, None)
        self._known[pair] = self._clock()
        self._known.move_to_end(pair)
        while len(self._known) > self.max_keys:
            self._known.popitem(last=False)

    def _is_known(self, pair: tuple[str, str], now: float) -> bool:
        since = self._known.get(pair)
        if since is None:
            return False
        if now - since > self.policy.known_ttl:
            del self._known[pair]
            return False
        return True

    def _entry[K](self, table: OrderedDict[K, _Counter], key: K) -> _Counter:
        counter = table.get(key)
        if counter is None:
            counter = table[key] = _Counter()
            while len(table) > self.max_keys:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return counter
