"""Entries: a record plus the key it is stored under, and their JSON-lines form for the spool.

The key is chosen once, when the record is submitted, and travels with it through the queue,
the spool and every retry: that is what makes writes idempotent. Interception and passthrough
records use their id; usage records get a fresh time-ordered UUID (ids.py): two usage records
may be identical in content, e.g. two stream deltas, and both must count.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aibridge.ids import new_id
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    McpRound,
    Passthrough,
    PromptUsage,
    Record,
    SecretFinding,
    TokenUsage,
    ToolUsage,
)

KINDS: dict[str, type[Record]] = {
    "started": InterceptionStarted,
    "ended": InterceptionEnded,
    "token": TokenUsage,
    "prompt": PromptUsage,
    "tool": ToolUsage,
    "passthrough": Passthrough,
    "finding": SecretFinding,
    "mcp": McpRound,
}
_KIND_OF: dict[type, str] = {cls: kind for kind, cls in KINDS.items()}
# Fields holding money: Decimal in records, exact text in the spool.
_DECIMALS = frozenset({"cost_usd"})  # of InterceptionEnded


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    key: str
    record: Record


def new_entry(record: Record) -> Entry:
    """Wrap a freshly submitted record. Raises TypeError for anything that is not a Record."""
    kind = _KIND_OF.get(type(record))
    if kind is None:
        raise TypeError(f"not a recording record: {type(record).__name__}")
    if isinstance(record, InterceptionStarted | InterceptionEnded | Passthrough):
        return Entry(kind, record.id, record)
    if not record.created_at:
        # The addon may leave created_at unset; the submit time is the best stand-in.
        record = dataclasses.replace(record, created_at=time.time())
    return Entry(kind, new_id(), record)


def encode(entry: Entry) -> bytes:
    """One spool line. ASCII-only JSON, so odd text (lone surrogates) cannot break the file.
    Money (Decimal) is written as its exact decimal text, never as a JSON number (a float)."""
    fields = {f.name: getattr(entry.record, f.name) for f in dataclasses.fields(entry.record)}
    return (json.dumps({"kind": entry.kind, "key": entry.key, "record": fields},
                       separators=(",", ":"), default=_exact) + "\n").encode("ascii")


def _exact(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")  # positional, exact: 0.000000075, never 7.5E-8
    raise TypeError(f"cannot spool a {type(value).__name__}")


def decode(line: bytes) -> Entry:
    """Parse one spool line. Raises ValueError for a line that is not a valid entry (e.g. a
    line torn by a crash). Unknown fields are ignored so an older spool stays readable."""
    try:
        data = json.loads(line)
        cls = KINDS[data["kind"]]
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data["record"].items() if k in names}
        for name in _DECIMALS & values.keys():
            if values[name] is not None:
                values[name] = _decimal(values[name])
        return Entry(data["kind"], str(data["key"]), cls(**values))
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as e:
        raise ValueError(f"invalid spool line: {type(e).__name__}") from None


def _decimal(value: object) -> Decimal:
    if not isinstance(value, str):  # a number would have passed through a float
        raise ValueError("money must be decimal text")
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError("money must be finite")
    return result
