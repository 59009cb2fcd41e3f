"""Finding secrets in a text, remembering texts already scanned, and the placeholders that
replace them.

Agents send the whole conversation every turn, so nearly every text block of a request was
scanned before. `Scanner.scan` keys each block by a hash of its content and remembers what it
held (bounded, least recently used out first): which rule matched where, and a keyed hash of
each secret. Never the secret: a block seen before is redacted again from its positions alone.

Placeholders name the kind and six hex digits of an HMAC of the secret, `[REDACTED
aws-access-key #1f3a9c]`: the same secret gets the same placeholder in every turn (the
provider's prompt cache still hits) and two secrets of one kind can be told apart, while the
digits cannot be turned back into the secret without the key. The key is random per process
unless `[secrets] salt_env` names a variable holding one (then placeholders and the findings'
hashes stay the same across restarts and on every bridge sharing it).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from aibridge.secrets.rules import Rule

MIN_TEXT = 10  # shorter texts hold no secret any rule finds
GATED_TEXT = 256  # characters up to which one search for all the rules' needles comes first
DIGEST_CHARS = 12  # of the keyed hash, as findings keep it (48 bits: repeats, not a lookup)
HINT_CHARS = 6  # of the keyed hash, in a placeholder
_PROCESS_KEY = os.urandom(32)  # placeholders stay the same while the process lives


class Hit(NamedTuple):
    """One secret in one text: the rule, where it is, and the keyed hash of its value."""

    rule: str
    start: int
    end: int
    digest: str


def placeholder(hit: Hit) -> str:
    """What replaces the secret: no JSON or regex metacharacters, so it can go anywhere a
    secret was, a JSON-encoded string included."""
    return f"[REDACTED {hit.rule} #{hit.digest[:HINT_CHARS]}]"


PLACEHOLDER = re.compile(r"\[REDACTED ([a-z0-9-]+) #([0-9a-f]{6})\]")


def redact(text: str, hits: Sequence[Hit]) -> str:
    """`text` with every hit replaced by its placeholder (hits sorted, not overlapping)."""
    if not hits:
        return text
    parts, at = [], 0
    for hit in hits:
        parts.append(text[at:hit.start])
        parts.append(placeholder(hit))
        at = hit.end
    parts.append(text[at:])
    return "".join(parts)


def key_from_salt(salt: str | None) -> bytes:
    """The placeholders' key: from the operator's salt, else this process's random one."""
    if salt is None:
        return _PROCESS_KEY
    return hashlib.sha256(b"aibridge secrets placeholders\0" + salt.encode()).digest()


class Detector:
    """The rules and the allowlist, over one text; no memory."""

    def __init__(self, rules: Sequence[Rule], allow: Sequence[str] = (), *,
                 examples: bool = False, key: bytes | None = None) -> None:
        self.rules = tuple(rules)
        self.allow = tuple(re.compile(a) for a in allow)
        self.examples = examples
        self._key = key if key is not None else _PROCESS_KEY
        # On a short text the rules' fixed cost (about 0.5 µs each) is most of the work, and
        # most short texts (ids, names, a short answer) hold none of the strings the rules
        # need (`Rule.needles`): one search for all of them picks the rules worth running
        # (a 32-character answer: 14.5 → 1.5 µs). Past GATED_TEXT every rule runs: Python's
        # regex tries every alternative at every position, and each rule's own literal
        # search wins (measured: even at 512 characters of code full of "//").
        needs: dict[str, set[int]] = {}
        self._always: frozenset[int] = frozenset(
            position for position, rule in enumerate(self.rules) if rule.needles() is None)
        for position, rule in enumerate(self.rules):
            for needle in rule.needles() or ():
                needs.setdefault(needle, set()).add(position)
        # A needle found counts for every needle inside it (the search finds the longest of
        # those that start at one place): the rules each found needle stands for.
        self._rules_of = {found: frozenset().union(*(positions for needle, positions
                                                     in needs.items() if needle in found))
                          for found in needs}
        self._gate = re.compile("|".join(re.escape(n) for n in sorted(needs, key=len,
                                                                       reverse=True))) \
            if needs else None

    def digest(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).hexdigest()[:DIGEST_CHARS]

    def find(self, text: str) -> tuple[Hit, ...]:
        if len(text) < MIN_TEXT:
            return ()
        rules = self.rules
        if len(text) <= GATED_TEXT and self._gate is not None:
            rules = self._worth_running(text)
        found: list[Hit] = []
        for rule in rules:
            for start, end in rule.spans(text):
                secret = text[start:end]
                if not self.examples and rule.examples is not None \
                        and rule.examples.search(secret):
                    continue
                if any(a.search(secret) for a in self.allow):
                    continue
                found.append(Hit(rule.id, start, end, self.digest(secret)))
        return _disjoint(found)


    def _worth_running(self, text: str) -> tuple[Rule, ...]:
        """The rules (in their order) that need no needle, or one `text` holds. Needles may
        overlap ("aws" and "sk-" in "awsk-…"), so the search resumes one character after each
        match, not at its end; of several needles starting at one place the longest is found,
        and the others are the ones it contains."""
        chosen = set(self._always)
        seen: set[str] = set()
        search, rules_of = self._gate.search, self._rules_of  # type: ignore[union-attr]
        at = 0
        while (match := search(text, at)) is not None:
            if (hit := match.group()) not in seen:
                seen.add(hit)
                chosen |= rules_of[hit]
            at = match.start() + 1
        return tuple(self.rules[i] for i in sorted(chosen))


def _disjoint(hits: list[Hit]) -> tuple[Hit, ...]:
    """Overlapping hits (a JWT inside a connection string) become the one that starts first,
    the longest of those: it covers most of what the others would hide."""
    if len(hits) < 2:
        return tuple(hits)
    hits.sort(key=lambda h: (h.start, -h.end))
    kept = [hits[0]]
    for hit in hits[1:]:
        last = kept[-1]
        if hit.start >= last.end:
            kept.append(hit)
        elif hit.end > last.end:  # partly overlapping: widen the first to cover both
            kept[-1] = last._replace(end=hit.end)
    return tuple(kept)


class Scanner:
    """A detector with the memory of the blocks it has scanned."""

    def __init__(self, detector: Detector, cache_entries: int = 50_000) -> None:
        self.detector = detector
        self.rules = {rule.id: rule for rule in detector.rules}
        self._limit = cache_entries
        self._seen: OrderedDict[tuple[int, int], tuple[Hit, ...]] = OrderedDict()
        self.hits = self.misses = 0  # cache statistics (benchmark, health)

    def scan(self, text: str) -> tuple[Hit, ...]:
        if len(text) < MIN_TEXT:
            return ()
        if not self._limit:
            return self.detector.find(text)
        # Python's string hash (SipHash, keyed per process) and the length: three times faster
        # than SHA-256 on a 60 KB block, and a collision (about 2^-64 per pair) could at worst
        # let one block pass as another already scanned; scanning guards against accidents,
        # not against someone set on hiding a secret (who could simply encode it).
        key = (hash(text), len(text))
        seen = self._seen
        found = seen.get(key)
        if found is not None:
            seen.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        found = self.detector.find(text)
        seen[key] = found
        if len(seen) > self._limit:
            seen.popitem(last=False)
        return found

    def mask(self, text: str) -> str:
        """`text` with every secret the rules find replaced by its placeholder (what records
        and logs keep, whatever the action)."""
        return redact(text, self.scan(text))

    def mask_all(self, texts: Iterable[str | None]) -> list[str | None]:
        return [None if t is None else self.mask(t) for t in texts]

    def clear(self) -> None:
        self._seen.clear()
