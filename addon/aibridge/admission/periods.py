"""Budget periods: UTC calendar days, ISO weeks (Monday to Monday) and months.

A budget's spend belongs to the period its request started in; a new period starts from zero.
`Period.span(now)` is asked on every request, so the current span is kept until it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WORDS = {"day": "today", "week": "this week", "month": "this month"}


@dataclass(frozen=True, slots=True)
class Span:
    start: float  # epoch seconds, inclusive
    end: float  # epoch seconds, exclusive: when the budget resets
    label: str  # 2026-11-29 | 2026-W48 | 2026-11

    @property
    def resets(self) -> str:
        return iso(self.end)


class Period:
    def __init__(self, kind: str) -> None:
        if kind not in WORDS:
            raise ValueError(f"unknown period {kind!r}")
        self.kind = kind
        self.words = WORDS[kind]
        self._current: Span | None = None

    def span(self, now: float) -> Span:
        current = self._current
        if current is None or not current.start <= now < current.end:
            current = self._current = span_of(self.kind, now)
        return current


def span_of(kind: str, now: float) -> Span:
    moment = datetime.fromtimestamp(now, UTC)
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if kind == "day":
        start, end, label = day, day + timedelta(days=1), f"{day:%Y-%m-%d}"
    elif kind == "week":
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        end, label = start + timedelta(days=7), f"{year}-W{week:02d}"
    else:
        start = day.replace(day=1)
        end = (start.replace(year=start.year + 1, month=1) if start.month == 12
               else start.replace(month=start.month + 1))
        label = f"{start:%Y-%m}"
    return Span(start.timestamp(), end.timestamp(), label)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
