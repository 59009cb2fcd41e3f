"""Budgets and limits from the records: the spend per day, actor and model (exact decimals on
SQLite and PostgreSQL), budgets primed from it at start, and `aibridge budgets`."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aibridge.admission.budgets import BudgetBook, prime_from_records
from aibridge.config import BudgetsSettings, load_config
from aibridge.ops import cli
from aibridge.ops.budgets import render, report
from aibridge.recording.codec import new_entry
from aibridge.recording.connection import recording_connection
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import upgrade
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import InterceptionEnded, Record
from aibridge.recording.spend import SpendRow, recent_requests, spend_rows
from aibridge.recording.store import Store
from aibridge.state.memory import MemoryState
from tests.conftest import interception

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()
NOV_28 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC).timestamp()
OCT_31 = datetime(2026, 10, 31, 23, 0, tzinfo=UTC).timestamp()
CONFIG = """
[recording]
url = "{url}"

[[budgets]]
name = "ml-monthly"
match = {{ team = "ml" }}
limit_usd = 1

[[budgets]]
name = "alice-today"
match = {{ actor = "alice" }}
period = "day"
limit_usd = 0.5

[[limits]]
name = "alice"
match = {{ actor = "alice" }}
rpm = 2
tpm = 100
concurrent = 3
"""


def costed(records: list[Record], cost: str | None) -> list[Record]:
    return [dataclasses.replace(r, cost_usd=Decimal(cost) if cost else None)
            if isinstance(r, InterceptionEnded) else r for r in records]


def seed() -> list[Record]:
    out: list[Record] = []
    out += costed(interception("a1", actor="alice", model="claude", started_at=NOW - 30), "0.1")
    out += costed(interception("a2", actor="alice", model="claude", started_at=NOW - 20),
                  "0.000000001")
    out += costed(interception("a3", actor="alice", model="gpt", started_at=NOV_28), "0.3")
    out += costed(interception("b1", actor="bob", model="claude", started_at=NOW - 10), "0.2")
    out += costed(interception("b2", actor="bob", model="claude", started_at=NOW - 5), None)
    out += costed(interception("o1", actor="alice", model="claude", started_at=OCT_31), "9")
    out += interception("f1", actor="alice", model="claude", started_at=NOW - 2, ended=False)
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'aibridge.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(resolve_url(url))
    upgrade(engine, "test")
    Store(engine).write([new_entry(r) for r in seed()])
    engine.dispose()
    yield url


def test_spend_rows_are_exact_per_day_actor_and_model(url):
    with recording_connection(url) as connection:
        rows = spend_rows(connection, datetime.fromtimestamp(NOV_28 - 3600, UTC))
    by = {(r.day, r.actor_id, r.model): r.cost_usd for r in rows}
    assert by == {("2026-11-29", "alice", "claude"): Decimal("0.100000001"),
                  ("2026-11-28", "alice", "gpt"): Decimal("0.3"),
                  ("2026-11-29", "bob", "claude"): Decimal("0.2")}  # unpriced b2 adds nothing
    assert all(r.actor_metadata == {"Username": r.actor_id, "Team": "ml"} for r in rows)


def test_budgets_start_from_the_recorded_spend(url, tmp_path):
    config = config_for(url, tmp_path)
    book = BudgetBook(config.budgets, BudgetsSettings(), MemoryState(), None)
    assert prime_from_records(book, url, None, now=NOW) == 2
    ml, alice = (book.state.balance(b.key(b.period.span(NOW))) for b in book.budgets)
    assert ml.spent == 600_000_001  # this month's, everyone in team ml
    assert alice.spent == 100_000_001  # today's, alice only
    assert prime_from_records(book, url, None, now=NOW) == 0  # held: a reload keeps them


def test_the_report_of_budgets_and_limits(url, tmp_path):
    config = config_for(url, tmp_path)
    with recording_connection(url) as connection:
        rows = report(config, connection, now=NOW)
        recent = recent_requests(connection, datetime.fromtimestamp(NOW - 60, UTC))
    assert {r.outcome for r in recent} == {"completed", None}
    table = {(r.name, r.kind): r for r in rows}
    ml = table[("ml-monthly", "budget")]
    assert (ml.spent, ml.limit, ml.share) == ("0.600000001", "1", 0.6)
    assert ml.resets_at == "2026-12-01T00:00:00Z" and ml.period_start == "2026-11-01T00:00:00Z"
    today = table[("alice-today", "budget")]
    assert (today.spent, today.share, today.resets_at) == ("0.100000001", 0.2,
                                                           "2026-11-30T00:00:00Z")
    rpm = table[("alice", "rpm")]
    assert (rpm.spent, rpm.limit, rpm.share) == ("3", "2", 1.5)  # a1, a2, f1 in the minute
    assert rpm.resets_at == "2026-11-29T12:00:40Z"  # a2 leaves, then two are left
    tpm = table[("alice", "tpm")]
    assert tpm.spent == str(2 * (100 + 20 + 5 + 7))  # anthropic input excludes the cache
    concurrent = table[("alice", "concurrent")]
    assert (concurrent.spent, concurrent.limit) == ("1", "3")  # f1 has no end
    text = render(rows, "table")
    assert text.splitlines()[0].split() == ["name", "kind", "match", "period", "spent", "limit",
                                            "share", "resets"]
    assert re.search(r"ml-monthly\s+budget\s+team=ml\s+month\s+\$0\.60\s+\$1\.00\s+60%\s+"
                     r"2026-12-01T00:00:00Z", text), text
    data = json.loads(render(rows, "json"))
    assert data[0]["spent_usd"] == "0.600000001" and data[0]["limit_usd"] == "1"
    assert data[2]["used"] == 3 and data[2]["limit"] == 2


def test_the_command(tmp_path, capsys):
    db = tmp_path / "aibridge.db"
    engine = make_engine(resolve_url(f"sqlite:///{db}"))
    upgrade(engine, "test")
    Store(engine).write([new_entry(r) for r in seed()])
    engine.dispose()
    config = tmp_path / "aibridge.toml"
    config.write_text(CONFIG.format(url=f"sqlite:///{db}"))
    assert cli.main(["budgets", "--config", str(config), "--format", "json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert names == ["ml-monthly", "alice-today", "alice", "alice", "alice"]
    config.write_text(CONFIG.format(url=f"sqlite:///{tmp_path / 'none.db'}"))
    assert cli.main(["budgets", "--config", str(config)]) == 0  # no records yet: all zero
    assert "$0.00" in capsys.readouterr().out
    config.write_text("[[budgets]]\nname = 1\n")
    assert cli.main(["budgets", "--config", str(config)]) == 1
    assert "aibridge budgets:" in capsys.readouterr().err


def test_missing_database_is_none_when_allowed(tmp_path):
    with recording_connection(f"sqlite:///{tmp_path / 'x.db'}", must_exist=False) as c:
        assert c is None
    assert SpendRow("2026-11-29", "a", {}, "p", "m", Decimal(1)).cost_usd == 1


def config_for(url: str, tmp_path: Path):
    path = tmp_path / "aibridge.toml"
    path.write_text(CONFIG.format(url=url))
    return load_config(path)[0]
