"""The usage report: requests and tokens per day, actor and model, from the recording database.

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
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from aibridge.providers.catalog import PROVIDER_APIS
from aibridge.recording.db_errors import RecordingError, describe_error
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import current_revision
from aibridge.recording.paths import RecordingUrlError, display_url, resolve_url
from aibridge.recording.schema import interception_ends, interceptions, token_usages
from aibridge.textsafe import printable

FAILED_OUTCOMES = ("failed", "rejected")
WARMUP = "warmup"
# Where the raw input count includes cached input, the report subtracts it.
INPUT_INCLUDES_CACHE = tuple(t for t, api in PROVIDER_APIS.items() if api.input_includes_cache)
REASONING_EXTRAS = ("completion_reasoning", "output_reasoning")  # chat, responses
FORMATS = ("table", "json", "csv")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CELL_LIMIT = 1024  # longer than any model name the bridge records; escaping may lengthen it


@dataclass(frozen=True)
class UsageRow:
    day: str  # YYYY-MM-DD, UTC
    actor: str
    model: str
    requests: int
    failed: int
    warmups: int
    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int


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
               since: datetime | None = None, actor: str | None = None) -> list[UsageRow]:
    """The report from the database a config's `[recording] url` names (None: the default
    SQLite file). Raises RecordingError with a message for the user."""
    try:
        resolved = resolve_url(url, base_dir)
    except RecordingUrlError as e:
        raise RecordingError(str(e)) from None
    sqlite = resolved.get_backend_name() == "sqlite"
    where = resolved.database or "" if sqlite else display_url(resolved)
    if sqlite and not Path(where).is_file():
        raise RecordingError(f"no recording database at {where} "
                             "(the proxy creates it when it first starts)")
    engine = make_engine(resolved, create_dir=False)
    try:
        with engine.connect() as connection:
            if current_revision(connection) is None:
                raise RecordingError(f"{where} holds no aibridge records "
                                     "(the proxy creates the tables when it first starts)")
            return usage_rows(connection, since=since, actor=actor)
    except sa.exc.SQLAlchemyError as e:
        raise RecordingError(f"recording database {where}: {describe_error(e)}") from None
    finally:
        engine.dispose()


def usage_rows(connection: sa.Connection, *, since: datetime | None = None,
               actor: str | None = None) -> list[UsageRow]:
    i, e, t = interceptions, interception_ends, token_usages
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
    day = _utc_day(connection.dialect.name, i.c.started_at)
    query = (sa.select(day.label("day"), i.c.actor_id, i.c.model,
                       sa.func.sum(sa.case((e.c.outcome == WARMUP, 0), else_=1)),
                       sa.func.sum(sa.case((e.c.outcome.in_(FAILED_OUTCOMES), 1), else_=0)),
                       sa.func.sum(sa.case((e.c.outcome == WARMUP, 1), else_=0)),
                       *(sa.func.coalesce(sa.func.sum(column), 0)
                         for column in (uncached, tokens.c.output, tokens.c.cache_read,
                                        tokens.c.cache_write, tokens.c.reasoning)))
             .select_from(i.outerjoin(e, e.c.id == i.c.id)
                          .outerjoin(tokens, tokens.c.interception_id == i.c.id))
             .group_by(day, i.c.actor_id, i.c.model)
             .order_by(day, i.c.actor_id, i.c.model))
    if since is not None:
        query = query.where(i.c.started_at >= since.astimezone(UTC))
    if actor is not None:
        query = query.where(i.c.actor_id == actor)
    return [UsageRow(str(d), a, m, *(int(n or 0) for n in numbers))
            for d, a, m, *numbers in connection.execute(query)]


def _utc_day(dialect: str, column: sa.ColumnElement[datetime]) -> sa.ColumnElement[object]:
    if dialect == "postgresql":
        # Explicitly UTC whatever the session time zone; a literal (not a bound parameter)
        # so the GROUP BY expression is identical to the selected one.
        return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), column), sa.Date)
    return sa.func.date(column)  # SQLite keeps UTC text 'YYYY-MM-DD HH:MM:SS...'


def render(rows: Sequence[UsageRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(row) for row in rows], indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(f.name for f in fields(UsageRow))
        writer.writerows(astuple(row) for row in rows)
        return out.getvalue()
    return _table(rows)


def _table(rows: Sequence[UsageRow]) -> str:
    header = [f.name for f in fields(UsageRow)]
    if not rows:
        return "no recorded interceptions\n"
    # Actor ids and model names come from clients: no control character or ANSI escape may
    # reach the terminal (JSON escapes them itself; CSV keeps the stored text for programs).
    body = [[printable(str(v), limit=_CELL_LIMIT) for v in astuple(row)] for row in rows]
    totals = [sum(getattr(row, name) for row in rows) for name in header[3:]]
    body.append(["total", "", "", *(str(n) for n in totals)])
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]
    numeric = [False, False, False, *([True] * (len(header) - 3))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if num else cell.ljust(w)
                         for cell, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(header), *(line(cells) for cells in body)]) + "\n"
