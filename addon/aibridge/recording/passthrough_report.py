"""The passthrough report: requests on provider paths that are no model call (`/v1/models`,
`/v1/files`, `/api/...`), per UTC day, actor and provider, from the recording database.

Apart from the usage report (recording.report) on purpose: a passthrough is never a model
request and has no tokens. `failed` counts requests that ended `failed` or `rejected`;
`central` those sent (or refused) with a central key; the bytes are request bodies sent upstream
and response bodies the clients got.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from aibridge.recording.connection import recording_connection
from aibridge.recording.report import FAILED_OUTCOMES, _utc_day
from aibridge.recording.schema import passthroughs
from aibridge.recording.tabular import json_or_csv
from aibridge.textsafe import printable


@dataclass(frozen=True)
class PassthroughRow:
    day: str  # YYYY-MM-DD, UTC
    actor: str
    provider: str
    requests: int
    failed: int
    central: int
    bytes_in: int
    bytes_out: int


def read_passthroughs(url: str | None, base_dir: Path | None = None, *,
                      since: datetime | None = None,
                      actor: str | None = None) -> list[PassthroughRow]:
    """The report from the database a config's `[recording] url` names (None: the default
    SQLite file). Raises RecordingError with a message for the user."""
    with recording_connection(url, base_dir) as connection:
        assert connection is not None  # must_exist: an error otherwise
        return passthrough_rows(connection, since=since, actor=actor)


def passthrough_rows(connection: sa.Connection, *, since: datetime | None = None,
                     actor: str | None = None) -> list[PassthroughRow]:
    p = passthroughs
    if not sa.inspect(connection).has_table(p.name):
        return []  # a database no proxy with passthrough records has written to yet
    day = _utc_day(connection.dialect.name, p.c.started_at)
    query = (sa.select(day.label("day"), p.c.actor_id, p.c.provider,
                       sa.func.count().label("requests"),
                       sa.func.sum(sa.case((p.c.outcome.in_(FAILED_OUTCOMES), 1), else_=0)),
                       sa.func.sum(sa.case((p.c.credential_kind == "centralized", 1), else_=0)),
                       sa.func.coalesce(sa.func.sum(p.c.request_bytes), 0),
                       sa.func.coalesce(sa.func.sum(p.c.response_bytes), 0))
             .group_by(day, p.c.actor_id, p.c.provider)
             .order_by(day, p.c.actor_id, p.c.provider))
    if since is not None:
        query = query.where(p.c.started_at >= since.astimezone(UTC))
    if actor is not None:
        query = query.where(p.c.actor_id == actor)
    return [PassthroughRow(str(d), a, prov, *(int(n or 0) for n in numbers))
            for d, a, prov, *numbers in connection.execute(query)]


def render(rows: Sequence[PassthroughRow], fmt: str) -> str:
    header = [f.name for f in fields(PassthroughRow)]
    if (text := json_or_csv(fmt, header, (astuple(row) for row in rows))) is not None:
        return text
    if not rows:
        return "no recorded passthroughs\n"
    # Actor ids come from configuration, provider names too, but never trust a terminal.
    body = [[printable(str(v), limit=1024) for v in astuple(row)] for row in rows]
    body.append(["total", "", "", *(str(sum(getattr(row, name) for row in rows))
                                    for name in header[3:])])
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if c >= 3 else cell.ljust(w)
                         for c, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), *(line(cells) for cells in body)]) + "\n"
