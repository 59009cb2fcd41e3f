"""The usage report: grouping, filters, formats, and the `aibridge usage` command."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from aibridge.ops import cli
from aibridge.recording.codec import new_entry
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import upgrade
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import InterceptionEnded, InterceptionStarted, Record
from aibridge.recording.report import (
    COUNTS,
    DIMENSIONS,
    UsageRow,
    merge,
    parse_by,
    parse_since,
    render,
    sum_usd,
    total,
    usage_rows,
)
from aibridge.recording.report_html import render_html
from aibridge.recording.store import Store
from tests.conftest import interception

DAY1 = datetime(2026, 1, 1, 23, 30, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 1, 2, 0, 30, tzinfo=UTC).timestamp()


COSTS = {  # interception id -> recorded cost (None: the model had no price)
    "a1": Decimal("0.1"), "a2": Decimal("0.000001"), "a3": Decimal(0), "a4": None,
    "c1": Decimal("0.2"), "c2": Decimal(0), "d1": None}
TEAMS = {"alice": "ml", "bob": "ml", "carol": "web"}  # dave has none


def seed() -> list[Record]:
    """Two days, four actors, three teams (one actor without), four models; outcomes of every
    kind; 2 token records for one; priced, free, unpriced and never-ended interceptions."""
    records: list[Record] = []
    records += interception("a1", actor="alice", model="claude", started_at=DAY1)
    records += interception("a2", actor="alice", model="claude", started_at=DAY1 + 60,
                            outcome="failed", tokens=(1, 2, 3, 4))
    records += interception("a3", actor="alice", model="claude", started_at=DAY1 + 120,
                            outcome="cancelled", tokens=None)
    records += interception("a4", actor="alice", model="gpt", started_at=DAY2,
                            outcome="rejected", tokens=None)
    second = interception("b1", actor="bob", model="claude", started_at=DAY2 + 10, ended=False)
    records += [*second, second[1]]  # a second upstream call of the same interception
    # OpenAI reports input including the cached part and reasoning inside the output.
    records += interception("c1", actor="carol", model="gpt-5", started_at=DAY2 + 20,
                            provider_type="openai", tokens=(1000, 300, 800, 0),
                            extra={"output_reasoning": 120})
    records += interception("c2", actor="carol", model="gpt-5", started_at=DAY2 + 30,
                            provider_type="openai", outcome="warmup", tokens=None)
    records += interception("d1", actor="dave", model="local", started_at=DAY2 + 40,
                            tokens=(50, 10, 0, 0))
    out: list[Record] = []
    for record in records:
        if isinstance(record, InterceptionEnded):
            cost = COSTS[record.id]
            record = replace(record, cost_usd=cost,
                             price_source=None if cost is None else "operator:test")
        elif isinstance(record, InterceptionStarted):
            team = TEAMS.get(record.actor_id)
            record = replace(record, actor_metadata={"Username": record.actor_id}
                             | ({"Team": team} if team else {}))
        out.append(record)
    return out


def row(day: str, actor: str, model: str, *counts: int, cost: Decimal | None,
        unpriced: int = 0, unpriced_tokens: int = 0) -> UsageRow:
    return UsageRow(day=day, actor=actor, model=model,
                    **dict(zip(COUNTS, counts, strict=True)), cost=cost, unpriced=unpriced,
                    unpriced_tokens=unpriced_tokens)


EXPECTED = [
    row("2026-01-01", "alice", "claude", 3, 1, 0, 101, 22, 8, 11, 0, cost=Decimal("0.100001")),
    row("2026-01-02", "alice", "gpt", 1, 1, 0, 0, 0, 0, 0, 0, cost=None, unpriced=1),
    row("2026-01-02", "bob", "claude", 1, 0, 0, 200, 40, 10, 14, 0, cost=None),  # no end yet
    row("2026-01-02", "carol", "gpt-5", 1, 0, 1, 200, 300, 800, 0, 120, cost=Decimal("0.2")),
    row("2026-01-02", "dave", "local", 1, 0, 0, 50, 10, 0, 0, 0, cost=None, unpriced=1,
        unpriced_tokens=60),
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, sa.Engine]]:
    path = tmp_path / "aibridge.db"
    engine = make_engine(resolve_url(f"sqlite:///{path}"))
    upgrade(engine, "test")
    Store(engine).write([new_entry(r) for r in seed()])
    yield path, engine
    engine.dispose()


def rows(engine: sa.Engine, **filters: object) -> list[UsageRow]:
    with engine.connect() as connection:
        return usage_rows(connection, **filters)  # type: ignore[arg-type]


def test_groups_by_day_actor_model(db: tuple[Path, sa.Engine]) -> None:
    assert rows(db[1]) == EXPECTED


def test_filters(db: tuple[Path, sa.Engine]) -> None:
    engine = db[1]
    assert rows(engine, actor="bob") == EXPECTED[2:3]
    assert rows(engine, since=datetime(2026, 1, 2, tzinfo=UTC)) == EXPECTED[1:]
    assert rows(engine, since=datetime.fromtimestamp(DAY1 + 61, UTC)) == [
        row("2026-01-01", "alice", "claude", 1, 0, 0, 0, 0, 0, 0, 0, cost=Decimal(0)),
        *EXPECTED[1:]]
    assert rows(engine, actor="nobody") == []


def test_costs_are_exact_and_unpriced_is_never_zero(db: tuple[Path, sa.Engine]) -> None:
    """Decimal sums (SQLite keeps the text; adding floats would give 0.30000100000000004) and
    unpriced requests counted apart, with their tokens."""
    everything = total(rows(db[1]))
    assert everything.cost == Decimal("0.300001")
    assert (everything.unpriced, everything.unpriced_tokens) == (2, 60)
    assert sum_usd(["0.1", None, Decimal("0.2"), ""]) == Decimal("0.3")
    assert sum_usd([None]) is None


@pytest.mark.parametrize("by", [("team",), ("team", "model"), ("provider",), ("model", "day"),
                                ("actor", "team", "provider")])
def test_any_grouping_equals_regrouping_the_finest(db: tuple[Path, sa.Engine], by) -> None:
    finest = rows(db[1], by=DIMENSIONS)
    assert rows(db[1], by=by) == merge(finest, by)
    assert total(rows(db[1], by=by)) == total(EXPECTED)


def test_grouped_by_team(db: tuple[Path, sa.Engine]) -> None:
    teams = {r.team: r for r in rows(db[1], by=("team",))}
    assert set(teams) == {"ml", "web", None}  # dave's metadata names no team
    assert (teams["ml"].requests, teams["ml"].cost, teams["ml"].unpriced) == (
        5, Decimal("0.100001"), 1)
    assert (teams["web"].cost, teams["web"].warmups) == (Decimal("0.2"), 1)
    assert (teams[None].cost, teams[None].unpriced_tokens) == (None, 60)
    # Another metadata key names the team when the config says so.
    users = {r.team for r in rows(db[1], by=("team",), team_key="Username")}
    assert users == {"alice", "bob", "carol", "dave"}


def test_parse_by() -> None:
    assert parse_by("team,model") == ("team", "model")
    assert parse_by(" Day , actor,day ") == ("day", "actor")
    for bad in ("", "team,colour", ","):
        with pytest.raises(ValueError):
            parse_by(bad)


def test_parse_since() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-03-01T10:00:00+02:00") == datetime(2026, 3, 1, 8, tzinfo=UTC)
    for bad in ("yesterday", "7x", "-1d", ""):
        with pytest.raises(ValueError):
            parse_since(bad)


HEADER = ["day", "actor", "model", "requests", "failed", "warmups", "input", "output",
          "cache_read", "cache_write", "reasoning", "cost", "unpriced", "unpriced_tokens"]


def test_table_is_aligned_with_a_total() -> None:
    text = render(EXPECTED, "table")
    lines = text.splitlines()
    assert lines[0].split() == HEADER
    assert lines[1].split() == ["2026-01-01", "alice", "claude", "3", "1", "0", "101", "22",
                                "8", "11", "0", "$0.100001", "0", "0"]
    assert lines[2].split()[-3:] == ["-", "1", "0"]  # unpriced: no cost, not $0
    assert lines[-1].split() == ["total", "7", "2", "1", "551", "372", "818", "25", "120",
                                 "$0.300001", "2", "60"]
    # Numbers are right-aligned under their header.
    assert {len(line) for line in lines} == {len(lines[0])}
    assert render([], "table") == "no recorded interceptions\n"
    by_team = render(merge(EXPECTED, ("actor",)), "table", ("actor",)).splitlines()
    assert by_team[0].split()[:2] == ["actor", "requests"]
    assert by_team[-1].split()[0] == "total"


def test_table_cells_cannot_drive_the_terminal() -> None:
    """Model names come from clients: ANSI escapes, BEL, CR and bidi overrides are shown
    escaped, and the columns stay aligned."""
    hostile = row("2026-01-01", "alice", "gpt\x1b[2J\x1b]0;owned\x07\r\u202e", 1, 0, 0,
                  1, 1, 0, 0, 0, cost=None)
    text = render([hostile, EXPECTED[0]], "table")
    assert not any(c in text for c in "\x1b\x07\r\u202e")
    assert "gpt\\x1b[2J\\x1b]0;owned\\x07\\x0d\\u202e" in text
    lines = text.splitlines()
    assert {len(line) for line in lines[:2]} == {len(lines[0])}
    # JSON escapes control characters itself; CSV keeps the stored text for programs.
    assert json.loads(render([hostile], "json"))[0]["model"] == hostile.model


def test_json_and_csv() -> None:
    data = json.loads(render(EXPECTED, "json"))
    assert data[0] == {"day": "2026-01-01", "actor": "alice", "model": "claude", "requests": 3,
                       "failed": 1, "warmups": 0, "input": 101, "output": 22, "cache_read": 8,
                       "cache_write": 11, "reasoning": 0, "cost": "0.100001", "unpriced": 0,
                       "unpriced_tokens": 0}
    assert data[1]["cost"] is None and data[1]["unpriced"] == 1  # null, never 0
    parsed = list(csv.DictReader(io.StringIO(render(EXPECTED, "csv"))))
    assert len(parsed) == 5 and parsed[2]["actor"] == "bob" and parsed[2]["input"] == "200"
    assert parsed[0]["cost"] == "0.100001" and parsed[1]["cost"] == ""
    assert json.loads(render([], "json")) == []
    assert render([], "csv").strip() == ",".join(HEADER)
    teams = json.loads(render(merge(EXPECTED, ("model",)), "json", ("model",)))
    assert list(teams[0])[:2] == ["model", "requests"]


def test_html_report_is_self_contained_with_the_charts(db: tuple[Path, sa.Engine]) -> None:
    page = render_html(rows(db[1], by=DIMENSIONS),
                       generated_at=datetime(2026, 1, 3, tzinfo=UTC))
    for chart in ("spend-per-day", "top-actors", "tokens-and-cost-per-model",
                  "cache-hit-share"):
        assert f'data-chart="{chart}"' in page
    assert 'data-legend="ml"' in page and 'data-legend="web"' in page
    assert 'data-value="carol">$0.20</text>' in page  # top actors by spend
    assert 'data-cost="local">- unpriced</text>' in page  # never $0
    assert 'data-table=unpriced' in page and "<td>local</td>" in page
    assert "$0.30" in page  # total spend tile
    # Nothing is loaded from anywhere: no script, no external URL, no web font or image.
    lowered = page.lower()
    for forbidden in ("<script", "http:", "https:", "//", "@import", "url(", "<img",
                      "<link", "src="):
        assert forbidden not in lowered.replace("<!doctype html>", ""), forbidden
    assert "default-src 'none'" in page  # and the browser is told so


def test_html_escapes_what_clients_named() -> None:
    hostile = UsageRow(day="2026-01-01", actor="<script>alert(1)</script>",
                       team='"><img src=x onerror=alert(1)>', model="m\x1b[2J<b>", provider="p",
                       requests=1, input=10, output=5, cost=Decimal("0.5"))
    page = render_html([hostile])
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page
    empty = render_html([])
    assert "No recorded interceptions" in empty


def test_columns_follow_counts() -> None:
    assert COUNTS == ("requests", "failed", "warmups", "input", "output", "cache_read",
                      "cache_write", "reasoning")


def write_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "conf" / "aibridge.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(f'[recording]\nurl = "{url}"\n')
    return config


def test_usage_command(db: tuple[Path, sa.Engine], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    # A relative path resolves against the config file's directory, as in the proxy.
    config = write_config(tmp_path, "sqlite:///../aibridge.db")
    assert cli.main(["usage", "--config", str(config)]) == 0
    assert capsys.readouterr().out == render(EXPECTED, "table")
    assert cli.main(["usage", "--config", str(config), "--format", "json",
                     "--actor", "alice", "--since", "2026-01-02"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"day": "2026-01-02", "actor": "alice", "model": "gpt", "requests": 1, "failed": 1,
         "warmups": 0, "input": 0, "output": 0, "cache_read": 0, "cache_write": 0,
         "reasoning": 0, "cost": None, "unpriced": 1, "unpriced_tokens": 0}]
    assert cli.main(["usage", "--config", str(config), "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert cli.main(["usage", "--config", str(config), "--by", "team,model",
                     "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["team"], r["model"]) for r in data] == [
        (None, "local"), ("ml", "claude"), ("ml", "gpt"), ("web", "gpt-5")]
    out = tmp_path / "report.html"
    assert cli.main(["usage", "--config", str(config), "--format", "html",
                     "--output", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    assert out.read_text().startswith("<!doctype html>")


def test_usage_command_default_database(db: tuple[Path, sa.Engine], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path))
    assert cli.main(["usage", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


def test_usage_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = write_config(tmp_path, "sqlite:///nothing-here.db")
    assert cli.main(["usage", "--config", str(missing)]) == 1
    assert "no recording database at" in capsys.readouterr().err
    assert not (tmp_path / "conf" / "nothing-here.db").exists()  # a report creates nothing

    empty = tmp_path / "empty.db"
    import sqlite3
    sqlite3.connect(empty).close()
    assert cli.main(["usage", "--config", str(write_config(tmp_path, f"sqlite:///{empty}"))]) == 1
    assert "holds no aibridge records" in capsys.readouterr().err

    assert cli.main(["usage", "--config", str(tmp_path / "nope.toml")]) == 1
    assert "cannot read config" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        cli.main(["usage", "--since", "last tuesday"])
    assert exited.value.code == 2
    assert "neither a date" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        cli.main(["usage", "--by", "team,colour"])
    assert exited.value.code == 2
    assert "unknown --by colour" in capsys.readouterr().err
