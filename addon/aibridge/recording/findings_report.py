"""The findings report (`aibridge usage --findings`): secrets found in what agents sent, per
actor and rule, from the recording database.

Counts by action (`log`, `redact`, `block`; `output` for secrets the model produced), the
number of distinct secrets (by their keyed hash: the same secret counts once, as long as the
bridge kept the same key, see `[secrets] salt_env`) and of requests, and the last time. Never a
secret: the table holds none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from aibridge.recording.connection import recording_connection
from aibridge.recording.schema import findings, interceptions
from aibridge.recording.tabular import json_or_csv
from aibridge.textsafe import printable


@dataclass(frozen=True)
class FindingRow:
    actor: str
    rule: str
    log: int
    redact: int
    block: int
    output: int  # found in the model's answer (recorded only)
    secrets: int  # distinct secrets (keyed hashes)
    requests: int  # distinct interceptions
    last: str  # UTC, to the second


def read_findings(url: str | None, base_dir: Path | None = None, *,
                  since: datetime | None = None, actor: str | None = None) -> list[FindingRow]:
    """The report from the database a config's `[recording] url` names. Raises
    RecordingError with a message for the user."""
    with recording_connection(url, base_dir) as connection:
        assert connection is not None
        return finding_rows(connection, since=since, actor=actor)


def finding_rows(connection: sa.Connection, *, since: datetime | None = None,
                 actor: str | None = None) -> list[FindingRow]:
    f, i = findings, interceptions
    if not sa.inspect(connection).has_table(f.name):
        return []  # written by a bridge older than secret scanning

    def count(action: str) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case(((f.c.source == "request") & (f.c.action == action), 1),
                                   else_=0))

    who = sa.func.coalesce(i.c.actor_id, "?")
    query = (sa.select(who.label("actor"), f.c.rule, count("log"), count("redact"),
                       count("block"),
                       sa.func.sum(sa.case((f.c.source == "response", 1), else_=0)),
                       sa.func.count(sa.distinct(f.c.secret_hash)),
                       sa.func.count(sa.distinct(f.c.interception_id)),
                       sa.func.max(f.c.created_at))
             .select_from(f.outerjoin(i, i.c.id == f.c.interception_id))
             .group_by(who, f.c.rule)
             .order_by(who, f.c.rule))
    if since is not None:
        query = query.where(f.c.created_at >= since.astimezone(UTC))
    if actor is not None:
        query = query.where(i.c.actor_id == actor)
    return [FindingRow(str(a), str(rule), *(int(n or 0) for n in numbers), _when(last))
            for a, rule, *numbers, last in connection.execute(query)]


def _when(value: object) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "")[:19]


def render(rows: Sequence[FindingRow], fmt: str) -> str:
    header = [f.name for f in fields(FindingRow)]
    if (text := json_or_csv(fmt, header, (astuple(row) for row in rows))) is not None:
        return text
    if not rows:
        return "no recorded findings\n"
    body = [[printable(str(v), limit=200) for v in astuple(row)] for row in rows]
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]
    numeric = range(2, len(header) - 1)

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if c in numeric else cell.ljust(w)
                         for c, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), *(line(cells) for cells in body)]) + "\n"
