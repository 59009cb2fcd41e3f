"""What the records say budgets and rate limits have used: spend per day, actor, provider and
model (budgets are rebuilt from it at start, and `aibridge budgets` reports it), and the
requests of the last minutes (what `aibridge budgets` shows for rate limits).

Spend is the recorded `cost_usd` of interceptions, on the UTC day they started; unpriced ones
(cost NULL) count nothing. PostgreSQL sums the NUMERIC column itself; SQLite keeps costs as
decimal text, which its SUM would turn into floats, so they are added up here with Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from aibridge.providers.catalog import PROVIDER_APIS
from aibridge.recording.schema import interception_ends, interceptions, token_usages

INPUT_INCLUDES_CACHE = frozenset(t for t, api in PROVIDER_APIS.items() if api.input_includes_cache)


@dataclass(frozen=True)
class SpendRow:
    day: str  # YYYY-MM-DD, UTC, the requests started on
    actor_id: str
    actor_metadata: dict[str, str]
    provider: str
    model: str
    cost_usd: Decimal


@dataclass(frozen=True)
class RecentRequest:
    started_at: float  # epoch seconds
    ended_at: float | None  # None: no end recorded (in flight, or the bridge stopped)
    actor_id: str
    actor_metadata: dict[str, str]
    provider: str
    model: str
    tokens: int  # input (cached or not) plus output
    outcome: str | None  # None while no end is recorded


def spend_rows(connection: sa.Connection, since: datetime) -> list[SpendRow]:
    """Recorded cost per (day, actor, provider, model) of interceptions started since `since`."""
    i, e = interceptions, interception_ends
    joined = i.join(e, e.c.id == i.c.id)
    where = sa.and_(i.c.started_at >= since.astimezone(UTC), e.c.cost_usd.is_not(None))
    if connection.dialect.name == "postgresql":
        day = sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), i.c.started_at), sa.Date)
        query = (sa.select(day, i.c.actor_id, i.c.actor_metadata, i.c.provider, i.c.model,
                           sa.func.sum(e.c.cost_usd))
                 .select_from(joined).where(where)
                 .group_by(day, i.c.actor_id, i.c.actor_metadata, i.c.provider, i.c.model))
        return [SpendRow(str(d), a, dict(m or {}), p, mo, Decimal(c))
                for d, a, m, p, mo, c in connection.execute(query)]
    query = (sa.select(sa.func.date(i.c.started_at), i.c.actor_id, i.c.actor_metadata,
                       i.c.provider, i.c.model, e.c.cost_usd)
             .select_from(joined).where(where))
    sums: dict[tuple[str, str, str, str, str], tuple[dict[str, str], Decimal]] = {}
    for day, actor, metadata, provider, model, cost in connection.execute(query):
        key = (str(day), actor, _key(metadata), provider, model)
        known = sums.get(key)
        sums[key] = (dict(metadata or {}), (known[1] if known else Decimal(0)) + Decimal(cost))
    return [SpendRow(d, a, m, p, mo, total)
            for (d, a, _, p, mo), (m, total) in sums.items()]


def recent_requests(connection: sa.Connection, since: datetime) -> list[RecentRequest]:
    """Interceptions started since `since` (a few minutes back), with their token totals."""
    i, e, t = interceptions, interception_ends, token_usages
    tokens = (sa.select(t.c.interception_id,
                        sa.func.sum(t.c.input_tokens).label("input"),
                        sa.func.sum(t.c.output_tokens).label("output"),
                        sa.func.sum(t.c.cache_read_tokens).label("cache_read"),
                        sa.func.sum(t.c.cache_write_tokens).label("cache_write"))
              .group_by(t.c.interception_id).subquery())
    query = (sa.select(i.c.started_at, e.c.ended_at, e.c.outcome, i.c.actor_id,
                       i.c.actor_metadata, i.c.provider, i.c.provider_type, i.c.model,
                       tokens.c.input,
                       tokens.c.output, tokens.c.cache_read, tokens.c.cache_write)
             .select_from(i.outerjoin(e, e.c.id == i.c.id)
                          .outerjoin(tokens, tokens.c.interception_id == i.c.id))
             .where(i.c.started_at >= since.astimezone(UTC)))
    out = []
    for (started, ended, outcome, actor, metadata, provider, ptype, model, inp, output, read,
         write) in connection.execute(query):
        inp, output, read, write = (int(n or 0) for n in (inp, output, read, write))
        total_input = inp if ptype in INPUT_INCLUDES_CACHE else inp + read + write
        out.append(RecentRequest(_epoch(started), _epoch(ended) if ended else None, actor,
                                 dict(metadata or {}), provider, model, total_input + output,
                                 outcome))
    return out


def _epoch(moment: Any) -> float:
    if isinstance(moment, str):  # SQLite without type information
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _key(metadata: Any) -> str:
    return repr(sorted((metadata or {}).items()))
