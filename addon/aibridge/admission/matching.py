"""Which budgets and limits apply to a request: by actor (id, team, metadata) and target
(provider, model).

A rule's `match` names an actor id, a team (the actor metadata key `team_key` names) and/or
metadata values; all that are given must hold, and an empty match holds for everyone. A
metadata value with commas is a list (an OIDC group claim becomes "ml,platform") and matches
when any item equals the wanted value. `provider` and `model` are globs (`claude-*`), the model
compared without regard to case.

The answer depends only on (actor, provider, model), so `RuleIndex` remembers it per triple
(bounded): a request pays one dictionary lookup however many rules are configured.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aibridge.config import MatchConfig
from aibridge.intercept import Actor

CACHE_SIZE = 8192  # (actor, provider, model) triples remembered


class Who(Protocol):
    """An actor, or one as the records keep it."""

    @property
    def id(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Matcher:
    actor: str | None
    metadata: tuple[tuple[str, str], ...]  # team folded in under its key
    provider: re.Pattern[str] | None
    model: re.Pattern[str] | None
    text: str  # for messages and the report: 'team=ml', 'actor=alice', 'everyone'

    @classmethod
    def build(cls, match: MatchConfig, provider: str | None, model: str | None,
              team_key: str) -> Matcher:
        metadata = dict(match.metadata)
        if match.team is not None:
            metadata[team_key] = match.team
        parts = [f"actor={match.actor}"] if match.actor is not None else []
        if match.team is not None:
            parts.append(f"team={match.team}")
        parts += [f"{k}={v}" for k, v in match.metadata.items()]
        parts += [f"provider={provider}"] if provider else []
        parts += [f"model={model}"] if model else []
        return cls(
            actor=match.actor,
            metadata=tuple(sorted((k, str(v)) for k, v in metadata.items())),
            provider=_glob(provider, ignore_case=False),
            model=_glob(model, ignore_case=True),
            text=", ".join(parts) or "everyone")

    def applies(self, actor: Who, provider: str, model: str) -> bool:
        if self.actor is not None and actor.id != self.actor:
            return False
        for key, wanted in self.metadata:
            if not value_matches(actor.metadata.get(key), wanted):
                return False
        if self.provider is not None and not self.provider.fullmatch(provider):
            return False
        return self.model is None or self.model.fullmatch(model) is not None

    def fingerprint(self, *extra: object) -> str:
        """A short stable id of what the rule counts, for state keys: a reload that keeps the
        rule keeps its state; one that changes whom it counts starts it anew."""
        raw = json.dumps([self.actor, self.metadata, _pattern(self.provider),
                          _pattern(self.model), *extra], default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


def value_matches(value: str | None, wanted: str) -> bool:
    if value is None:
        return False
    if value == wanted:
        return True
    return "," in value and any(item.strip() == wanted for item in value.split(","))


class RuleIndex[T]:
    """Rules (each with a `matcher`) by the (actor, provider, model) they apply to."""

    def __init__(self, rules: Sequence[T], matchers: Sequence[Matcher]) -> None:
        self.rules = tuple(rules)
        self._pairs = tuple(zip(rules, matchers, strict=True))
        self._cache: dict[tuple[Actor, str, str], tuple[T, ...]] = {}

    def find(self, actor: Actor, provider: str, model: str) -> tuple[T, ...]:
        key = (actor, provider, model)
        found = self._cache.get(key)
        if found is None:
            found = tuple(rule for rule, m in self._pairs if m.applies(actor, provider, model))
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()  # rare; a fresh start is cheaper than an LRU's bookkeeping
            self._cache[key] = found
        return found


def _glob(pattern: str | None, *, ignore_case: bool) -> re.Pattern[str] | None:
    if pattern is None or pattern == "*":
        return None
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0)


def _pattern(p: re.Pattern[str] | None) -> str | None:
    return p.pattern if p is not None else None


def describe_actor(actor: Actor, team_key: str) -> Mapping[str, str]:
    """The actor as notices name it: id and team."""
    team = actor.metadata.get(team_key)
    return {"actor": actor.id, **({"team": team} if team is not None else {})}
