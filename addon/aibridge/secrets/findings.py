"""A finding: which rule matched where, what was done, and the keyed hash of the secret (to
count repeats), never the secret itself. What records, flow metadata and logs keep."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aibridge.secrets.scanner import HINT_CHARS

LOG, REDACT, BLOCK, OFF = "log", "redact", "block", "off"
ACTIONS = (LOG, REDACT, BLOCK, OFF)
REQUEST, RESPONSE = "request", "response"  # where a finding was: what was sent, or the answer


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    where: str  # "tool result of call toolu_1 in message 12"
    action: str  # log | redact | block
    digest: str  # keyed hash of the secret (scanner.DIGEST_CHARS hex digits)
    source: str = REQUEST

    @property
    def placeholder(self) -> str:
        return f"[REDACTED {self.rule} #{self.digest[:HINT_CHARS]}]"

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "where": self.where, "action": self.action,
                "placeholder": self.placeholder, "source": self.source}


def summary(items: Iterable[Finding | Mapping[str, str]]) -> str:
    """For a flow comment: "2 secrets redacted", "1 secret blocked", "1 secret in the output".
    Takes findings or their `to_dict()` (as flow metadata keeps them)."""
    counts: dict[tuple[str, str], int] = {}
    for item in items:
        d = item.to_dict() if isinstance(item, Finding) else item
        key = (d.get("source", REQUEST), d.get("action", ""))
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return ""  # most flows: nothing found
    parts = []
    for action, word in ((BLOCK, "blocked"), (REDACT, "redacted"), (LOG, "logged")):
        if n := counts.get((REQUEST, action), 0):
            parts.append(f"{n} secret{'s' if n > 1 else ''} {word}")
    if n := sum(v for (source, _), v in counts.items() if source == RESPONSE):
        parts.append(f"{n} secret{'s' if n > 1 else ''} in the output")
    return ", ".join(parts)
