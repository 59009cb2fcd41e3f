"""`aibridge budgets --config FILE`: each budget and rate limit of a configuration, with what
the records say was used of it, its share and when it resets.

Read from the recording database (`[recording] url`, default the local SQLite file), so it
works on any machine that reaches the database, with or without a bridge running:

- a budget: the recorded cost of the requests it matches in its current UTC period, as the
  bridge rebuilds it at start (requests in flight are not in the records yet);
- a limit: for `rpm`, the requests admitted in the last minute; for `tpm`, the tokens of those
  that ended in the last minute; for `concurrent`, the requests started in the last hour with
  no end recorded. These are what the records show: a bridge's own windows may differ by
  the requests in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from aibridge.admission.budgets import Budget, money, spend_from
from aibridge.admission.limits import WINDOW, Limit
from aibridge.admission.periods import iso
from aibridge.config import BridgeConfig
from aibridge.recording.spend import RecentRequest, recent_requests, spend_rows
from aibridge.state.store import to_nanos
from aibridge.textsafe import printable

FORMATS = ("table", "json")
IN_FLIGHT_HORIZON = 3600.0  # seconds: an older request without an end is not in flight
COLUMNS = ("name", "kind", "match", "period", "spent", "limit", "share", "resets")


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # budget | rpm | tpm | concurrent
    match: str
    period: str  # day | week | month | 60s | now
    spent: str  # USD for budgets ("0.021"), a count for limits
    limit: str
    share: float  # spent / limit
    period_start: str | None
    resets_at: str | None  # when the budget resets / the window admits again; None: now

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        if self.kind == "budget":
            out["spent_usd"], out["limit_usd"] = out.pop("spent"), out.pop("limit")
        else:
            out["used"], out["limit"] = int(out.pop("spent")), int(self.limit)
        return out


def report(config: BridgeConfig, connection: sa.Connection | None,
           now: float | None = None) -> list[Row]:
    """The rows for `config`, from a recording connection (None: no records yet)."""
    now = time.time() if now is None else now
    team_key = config.budgets_settings.team_key
    budgets = [Budget.build(b, team_key) for b in config.budgets]
    limits = [Limit.build(lim, team_key) for lim in config.limits]
    rows: list[Row] = []
    if budgets:
        since = min(b.period.span(now).start for b in budgets)
        spent = spend_from(spend_rows(connection, datetime.fromtimestamp(since, UTC))
                           if connection is not None else [])
        for b in budgets:
            span = b.period.span(now)
            usd = spent(b, span)
            rows.append(Row(b.name, "budget", b.matcher.text, b.period.kind, str(usd),
                            str(b.limit_usd), _share(usd, b.limit_usd), iso(span.start),
                            span.resets))
    if limits:
        recent = (recent_requests(connection, datetime.fromtimestamp(now - IN_FLIGHT_HORIZON,
                                                                     UTC))
                  if connection is not None else [])
        for lim in limits:
            mine = [r for r in recent if lim.matcher.applies(_Who(r), r.provider, r.model)]
            rows += _limit_rows(lim, mine, now)
    return rows


def _limit_rows(lim: Limit, mine: Sequence[RecentRequest], now: float) -> list[Row]:
    rows = []
    edge = now - WINDOW
    if lim.rpm is not None:
        admitted = sorted(r.started_at for r in mine
                          if r.started_at > edge and r.outcome != "rejected")
        resets = (iso(admitted[len(admitted) - lim.rpm] + WINDOW)
                  if len(admitted) >= lim.rpm else None)
        rows.append(Row(lim.name, "rpm", lim.matcher.text, f"{WINDOW:g}s", str(len(admitted)),
                        str(lim.rpm), _share(len(admitted), lim.rpm), None, resets))
    if lim.tpm is not None:
        ended = sorted((r.ended_at, r.tokens) for r in mine
                       if r.ended_at is not None and r.ended_at > edge)
        used = sum(tokens for _, tokens in ended)
        resets, left = None, used
        for at, tokens in ended:
            if left < lim.tpm:
                break
            left -= tokens
            resets = iso(at + WINDOW)
        rows.append(Row(lim.name, "tpm", lim.matcher.text, f"{WINDOW:g}s", str(used),
                        str(lim.tpm), _share(used, lim.tpm), None, resets))
    if lim.concurrent is not None:
        open_now = len([r for r in mine if r.ended_at is None])
        rows.append(Row(lim.name, "concurrent", lim.matcher.text, "now", str(open_now),
                        str(lim.concurrent), _share(open_now, lim.concurrent), None, None))
    return rows


@dataclass(frozen=True)
class _Who:
    request: RecentRequest

    @property
    def id(self) -> str:
        return self.request.actor_id

    @property
    def metadata(self) -> dict[str, str]:
        return self.request.actor_metadata


def _share(used: Decimal | int, limit: Decimal | int) -> float:
    return round(float(Decimal(used) / Decimal(limit)), 4) if limit else 0.0


def render(rows: Sequence[Row], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([row.as_json() for row in rows], indent=2) + "\n"
    if not rows:
        return "no [[budgets]] or [[limits]] in this configuration\n"
    body = [[printable(cell, limit=200) for cell in _cells(row)] for row in rows]
    widths = [max(len(line[c]) for line in [list(COLUMNS), *body]) for c in range(len(COLUMNS))]
    numeric = [False, False, False, False, True, True, True, False]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if num else cell.ljust(w)
                         for cell, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(COLUMNS), *(line(cells) for cells in body)]) + "\n"


def _cells(row: Row) -> list[str]:
    if row.kind == "budget":
        spent = money(to_nanos(Decimal(row.spent)))
        limit = money(to_nanos(Decimal(row.limit)))
    else:
        spent, limit = row.spent, row.limit
    share = f"{row.share:.1%}" if 0 < row.share < 0.1 else f"{row.share:.0%}"
    return [row.name, row.kind, row.match, row.period, spent, limit, share,
            row.resets_at or "now"]
