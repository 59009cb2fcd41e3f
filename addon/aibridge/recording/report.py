"""The usage report: requests, tokens and cost per day, actor, team, model or provider (any
combination), from the recording database.

A request counts on the UTC day it started; `failed` counts interceptions that ended `failed`
or `rejected` (a client's own cancel is not a failure). Warm-ups (a Responses WebSocket
`response.create` with `generate: false`, which produces nothing) are counted apart, in
`warmups`, and are not requests. Tokens are summed per interception
first, then per group, so an interception with many usage records is still one request.

Token columns mean the same for every provider, whatever each API reports (the records keep
the raw figures): `input` is input *not* read from the cache (OpenAI's prompt tokens include
cached ones, Anthropic's do not), `cache_read` and `cache_write` are the cached input, `output`
is all output including reasoning, and `reasoning` is the part of the output spent thinking
where the API reports it (OpenAI).

Cost is the sum of the recorded costs (USD, exact: `Decimal`, never a float) of the group's
priced requests; `None` when none was priced. A request whose model had no price is never
counted as $0: it is counted in `unpriced`, and its tokens in `unpriced_tokens`. (Interceptions
recorded before costs were, schema revision 0003, count as unpriced.) A team is the value of
the actor metadata key `Team` (or the key the caller names); actors without one have none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aibridge.pricing import TEAM_KEY
from aibridge.providers.catalog import PROVIDER_APIS
from aibridge.recording.connection import recording_connection
from aibridge.recording.schema import interception_ends, interceptions, token_usages
from aibridge.recording.tabular import json_or_csv
from aibridge.textsafe import printable

FAILED_OUTCOMES = ("failed", "rejected")
WARMUP = "warmup"
# Where the raw input count includes cached input, the report subtracts it.
INPUT_INCLUDES_CACHE = tuple(t for t, api in PROVIDER_APIS.items() if api.input_includes_cache)
REASONING_EXTRAS = ("completion_reasoning", "output_reasoning")  # chat, responses
FORMATS = ("table", "json", "csv", "html")
DIMENSIONS = ("day", "actor", "team", "model", "provider")
DEFAULT_BY = ("day", "actor", "model")
COUNTS = ("requests", "failed", "warmups", "input", "output", "cache_read", "cache_write",
          "reasoning")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CELL_LIMIT = 1024  # longer than any model name the bridge records; escaping may lengthen it
_TABLE_CENTS = Decimal("0.000001")  # the table shows micro-dollars; JSON and CSV are exact


@dataclass(frozen=True)
class UsageRow:
    """One group. Dimensions the report is not grouped by are None (so is a team an actor
    does not have). Fields keep the order they had before teams and providers (day, actor,
    model, the counts), so positional construction still means the same."""

    day: str | None = None  # YYYY-MM-DD, UTC
    actor: str | None = None
    model: str | None = None
    requests: int = 0
    failed: int = 0
    warmups: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cost: Decimal | None = None  # USD of the priced requests; None: none was priced
    unpriced: int = 0  # requests whose model had no price
    unpriced_tokens: int = 0  # their tokens (input, output, cache read and write)
    team: str | None = None
    provider: str | None = None

    def key(self, by: Sequence[str]) -> tuple[str | None, ...]:
        return tuple(getattr(self, name) for name in by)

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    @property
    def cache_share(self) -> float | None:
        """The share of input served from the cache (read), None without input."""
        total = self.input + self.cache_read + self.cache_write
        return self.cache_read / total if total else None


def parse_by(text: str) -> tuple[str, ...]:
    """`day,actor,model` (any of DIMENSIONS, comma-separated, in the order wanted). Raises
    ValueError."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--by needs one or more of {', '.join(DIMENSIONS)}")
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown --by {', '.join(unknown)}: choose from "
                         f"{', '.join(DIMENSIONS)}")
    return tuple(dict.fromkeys(names))


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`YYYY-MM-DD` (midnight UTC), an ISO date-time, or a duration back from now such as
    `7d`, `24h`, `30m`, `2w`. Raises ValueError."""
    text = text.strip()
    if match := _DURATION.match(text):
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a date (YYYY-MM-DD) nor a duration "
                         "(e.g. 7d, 24h)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_usage(url: str | None, base_dir: Path | None = None, *,
               since: datetime | None = None, actor: str | None = None,
               by: Sequence[str] = DEFAULT_BY, team_key: str = TEAM_KEY) -> list[UsageRow]:
    """The report from the database a config's `[recording] url` names (None: the default
    SQLite file). Raises RecordingError with a message for the user."""
    with recording_connection(url, base_dir) as connection:
        assert connection is not None  # must_exist: an error otherwise
        return usage_rows(connection, since=since, actor=actor, by=by, team_key=team_key)


def usage_rows(connection: sa.Connection, *, since: datetime | None = None,
               actor: str | None = None, by: Sequence[str] = DEFAULT_BY,
               team_key: str = TEAM_KEY) -> list[UsageRow]:
    i, e, t = interceptions, interception_ends, token_usages
    dialect = connection.dialect.name
    tokens = (sa.select(t.c.interception_id,
                        sa.func.sum(t.c.input_tokens).label("input"),
                        sa.func.sum(t.c.output_tokens).label("output"),
                        sa.func.sum(t.c.cache_read_tokens).label("cache_read"),
                        sa.func.sum(t.c.cache_write_tokens).label("cache_write"),
                        sa.func.sum(sum((sa.func.coalesce(t.c.extra[name].as_integer(), 0)
                                         for name in REASONING_EXTRAS), sa.literal(0)))
                        .label("reasoning"))
              .group_by(t.c.interception_id).subquery())
    uncached = sa.case((i.c.provider_type.in_(INPUT_INCLUDES_CACHE),
                        tokens.c.input - tokens.c.cache_read), else_=tokens.c.input)
    all_tokens = (sa.func.coalesce(uncached, 0) + sa.func.coalesce(tokens.c.output, 0)
                  + sa.func.coalesce(tokens.c.cache_read, 0)
                  + sa.func.coalesce(tokens.c.cache_write, 0))
    unpriced = sa.and_(e.c.id.is_not(None), e.c.cost_usd.is_(None), e.c.outcome != WARMUP)
    columns = {"day": _utc_day(dialect, i.c.started_at), "actor": i.c.actor_id,
               "team": i.c.actor_metadata[team_key].as_string(), "model": i.c.model,
               "provider": i.c.provider}
    groups = [columns[name] for name in by]
    query = (sa.select(*groups,
                       sa.func.sum(sa.case((e.c.outcome == WARMUP, 0), else_=1)),
                       sa.func.sum(sa.case((e.c.outcome.in_(FAILED_OUTCOMES), 1), else_=0)),
                       sa.func.sum(sa.case((e.c.outcome == WARMUP, 1), else_=0)),
                       *(sa.func.coalesce(sa.func.sum(column), 0)
                         for column in (uncached, tokens.c.output, tokens.c.cache_read,
                                        tokens.c.cache_write, tokens.c.reasoning)),
                       _cost_sum(dialect, e.c.cost_usd),
                       sa.func.sum(sa.case((unpriced, 1), else_=0)),
                       sa.func.sum(sa.case((unpriced, all_tokens), else_=0)))
             .select_from(i.outerjoin(e, e.c.id == i.c.id)
                          .outerjoin(tokens, tokens.c.interception_id == i.c.id))
             .group_by(*groups))
    if since is not None:
        query = query.where(i.c.started_at >= since.astimezone(UTC))
    if actor is not None:
        query = query.where(i.c.actor_id == actor)
    rows = []
    for record in connection.execute(query):
        keys, numbers = record[:len(by)], record[len(by):]
        *counts, cost, unpriced_count, unpriced_tokens = numbers
        rows.append(UsageRow(
            **{name: None if value is None else str(value) for name, value in zip(
                by, keys, strict=True)},
            **dict(zip(COUNTS, (int(n or 0) for n in counts), strict=True)),
            cost=_cost_value(cost), unpriced=int(unpriced_count or 0),
            unpriced_tokens=int(unpriced_tokens or 0)))
    return sorted(rows, key=lambda row: _sort_key(row, by))


def _cost_sum(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    if dialect == "postgresql":
        return sa.func.sum(column)  # NUMERIC: exact
    # SQLite keeps the decimals as text and its SUM would add floats: the texts are joined
    # and added up in Python, exactly (`_cost_value`).
    return sa.func.group_concat(column, ",")


def _cost_value(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        return sum_usd(value.split(","))
    raise TypeError(f"a cost sum came back as {type(value).__name__}")


def sum_usd(values: Iterable[Decimal | str | None]) -> Decimal | None:
    """The exact sum of costs (as Decimal or their text), None when there is none."""
    total: Decimal | None = None
    for value in values:
        if value is None or value == "":
            continue
        total = (total or Decimal(0)) + (value if isinstance(value, Decimal) else Decimal(value))
    return total


def _sort_key(row: UsageRow, by: Sequence[str]) -> tuple[str, ...]:
    return tuple(value or "" for value in row.key(by))


def merge(rows: Iterable[UsageRow], by: Sequence[str]) -> list[UsageRow]:
    """Regroup finer rows by `by` (a subset of the dimensions they carry)."""
    groups: dict[tuple[str | None, ...], UsageRow] = {}
    for row in rows:
        key = row.key(by)
        head = UsageRow(**dict(zip(by, key, strict=True)))
        groups[key] = add(groups.get(key, head), row)
    return sorted(groups.values(), key=lambda row: _sort_key(row, by))


def add(a: UsageRow, b: UsageRow) -> UsageRow:
    """The sums of two rows' figures, keeping `a`'s dimensions."""
    return replace(a, **{name: getattr(a, name) + getattr(b, name) for name in COUNTS},
                   cost=sum_usd((a.cost, b.cost)), unpriced=a.unpriced + b.unpriced,
                   unpriced_tokens=a.unpriced_tokens + b.unpriced_tokens)


def total(rows: Iterable[UsageRow]) -> UsageRow:
    result = UsageRow()
    for row in rows:
        result = add(result, row)
    return result


def _utc_day(dialect: str, column: sa.ColumnElement[datetime]) -> sa.ColumnElement[object]:
    if dialect == "postgresql":
        # Explicitly UTC whatever the session time zone; a literal (not a bound parameter)
        # so the GROUP BY expression is identical to the selected one.
        return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), column), sa.Date)
    return sa.func.date(column)  # SQLite keeps UTC text 'YYYY-MM-DD HH:MM:SS...'


# -- rendering ---------------------------------------------------------------------------------

def columns(by: Sequence[str]) -> list[str]:
    return [*by, *COUNTS, "cost", "unpriced", "unpriced_tokens"]


def as_record(row: UsageRow, by: Sequence[str]) -> dict[str, Any]:
    """A row as JSON values: the cost as exact decimal text (a JSON number is a float)."""
    values: dict[str, Any] = {name: getattr(row, name) for name in columns(by)}
    values["cost"] = None if row.cost is None else str(row.cost)
    return values


def render(rows: Sequence[UsageRow], fmt: str, by: Sequence[str] = DEFAULT_BY) -> str:
    """table (with a total), json or csv (the groups only; programs add up themselves)."""
    text = json_or_csv(fmt, columns(by), (list(as_record(row, by).values()) for row in rows))
    if text is not None:
        return text
    if fmt == "table":
        return _table(rows, by)
    raise ValueError(f"unknown format {fmt!r}")


def _table(rows: Sequence[UsageRow], by: Sequence[str]) -> str:
    header = columns(by)
    if not rows:
        return "no recorded interceptions\n"

    def cells(row: UsageRow, keys: Sequence[str]) -> list[str]:
        # Actor ids and model names come from clients: no control character or ANSI escape
        # may reach the terminal (JSON escapes them itself; CSV keeps the stored text).
        return [*(printable("-" if k is None else str(k), limit=_CELL_LIMIT) for k in keys),
                *(str(getattr(row, name)) for name in COUNTS), table_usd(row.cost),
                str(row.unpriced), str(row.unpriced_tokens)]

    body = [cells(row, row.key(by)) for row in rows]
    body.append(cells(total(rows), ["total", *([""] * (len(by) - 1))]))
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]
    numeric = [False] * len(by) + [True] * (len(header) - len(by))

    def line(values: list[str]) -> str:
        return "  ".join(cell.rjust(w) if num else cell.ljust(w)
                         for cell, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(header), *(line(values) for values in body)]) + "\n"


def table_usd(value: Decimal | None) -> str:
    """Dollars to the micro-dollar (one token of a cheap model is less; JSON/CSV are exact)."""
    if value is None:
        return "-"
    return f"${value.quantize(_TABLE_CENTS):f}"
