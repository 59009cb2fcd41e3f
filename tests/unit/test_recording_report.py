"""The usage report: grouping, filters, formats, and the `aibridge usage` command."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from aibridge.ops import cli
from aibridge.recording.codec import new_entry
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import upgrade
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import Record
from aibridge.recording.report import UsageRow, parse_since, render, usage_rows
from aibridge.recording.store import Store
from tests.conftest import interception

DAY1 = datetime(2026, 1, 1, 23, 30, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 1, 2, 0, 30, tzinfo=UTC).timestamp()


def seed() -> list[Record]:
    """Two days, two actors, two models; outcomes of every kind; 2 token records for one."""
    records: list[Record] = []
    records += interception(actor="alice", model="claude", started_at=DAY1)
    records += interception(actor="alice", model="claude", started_at=DAY1 + 60,
                             outcome="failed", tokens=(1, 2, 3, 4))
    records += interception(actor="alice", model="claude", started_at=DAY1 + 120,
                            outcome="cancelled", tokens=None)
    records += interception(actor="alice", model="gpt", started_at=DAY2, outcome="rejected",
                            tokens=None)
    second = interception(actor="bob", model="claude", started_at=DAY2 + 10, ended=False)
    records += [*second, second[1]]  # a second upstream call of the same interception
    # OpenAI reports input including the cached part and reasoning inside the output.
    records += interception(actor="carol", model="gpt-5", started_at=DAY2 + 20,
                            provider_type="openai", tokens=(1000, 300, 800, 0),
                            extra={"output_reasoning": 120})
    records += interception(actor="carol", model="gpt-5", started_at=DAY2 + 30,
                            provider_type="openai", outcome="warmup", tokens=None)
    return records


EXPECTED = [
    UsageRow("2026-01-01", "alice", "claude", 3, 1, 0, 101, 22, 8, 11, 0),
    UsageRow("2026-01-02", "alice", "gpt", 1, 1, 0, 0, 0, 0, 0, 0),
    UsageRow("2026-01-02", "bob", "claude", 1, 0, 0, 200, 40, 10, 14, 0),
    UsageRow("2026-01-02", "carol", "gpt-5", 1, 0, 1, 200, 300, 800, 0, 120),
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
        UsageRow("2026-01-01", "alice", "claude", 1, 0, 0, 0, 0, 0, 0, 0), *EXPECTED[1:]]
    assert rows(engine, actor="dave") == []


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


def test_table_is_aligned_with_a_total() -> None:
    text = render(EXPECTED, "table")
    lines = text.splitlines()
    assert lines[0].split() == ["day", "actor", "model", "requests", "failed", "warmups",
                                "input", "output", "cache_read", "cache_write", "reasoning"]
    assert lines[1].split() == ["2026-01-01", "alice", "claude", "3", "1", "0", "101", "22",
                                "8", "11", "0"]
    assert lines[-1].split() == ["total", "6", "2", "1", "501", "362", "818", "25", "120"]
    # Numbers are right-aligned under their header.
    assert {len(line) for line in lines} == {len(lines[0])}
    assert render([], "table") == "no recorded interceptions\n"


def test_json_and_csv() -> None:
    data = json.loads(render(EXPECTED, "json"))
    assert data[0] == {"day": "2026-01-01", "actor": "alice", "model": "claude", "requests": 3,
                       "failed": 1, "warmups": 0, "input": 101, "output": 22, "cache_read": 8,
                       "cache_write": 11, "reasoning": 0}
    parsed = list(csv.DictReader(io.StringIO(render(EXPECTED, "csv"))))
    assert len(parsed) == 4 and parsed[2]["actor"] == "bob" and parsed[2]["input"] == "200"
    assert json.loads(render([], "json")) == []
    assert render([], "csv").strip() == ",".join(
        ["day", "actor", "model", "requests", "failed", "warmups", "input", "output",
         "cache_read", "cache_write", "reasoning"])


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
         "reasoning": 0}]
    assert cli.main(["usage", "--config", str(config), "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_usage_command_default_database(db: tuple[Path, sa.Engine], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path))
    assert cli.main(["usage", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4


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
