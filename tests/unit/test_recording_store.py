"""The SQLite store: migrations, WAL, every record type round-trips, idempotent writes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from aibridge.recording import schema
from aibridge.recording.codec import Entry, new_entry
from aibridge.recording.db_errors import MigrationError
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import current_revision, head_revision, upgrade
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
)
from aibridge.recording.store import Store
from tests.conftest import interception

TABLES = {InterceptionStarted: schema.interceptions, InterceptionEnded: schema.interception_ends,
          TokenUsage: schema.token_usages, PromptUsage: schema.prompt_usages,
          ToolUsage: schema.tool_usages}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(resolve_url("sqlite:///db/aibridge.db", tmp_path))
    upgrade(engine, "test")
    yield engine
    engine.dispose()


def entries(records: list[Record]) -> list[Entry]:
    return [new_entry(r) for r in records]


def read_back(engine: sa.Engine, entry: Entry) -> dict[str, object]:
    table = TABLES[type(entry.record)]
    with engine.connect() as connection:
        row = connection.execute(sa.select(table).where(table.c.id == entry.key)).one()
    return dict(row._mapping)


def as_epoch(value: object) -> float:
    assert isinstance(value, datetime)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_migrations_create_the_schema_and_are_idempotent(engine: sa.Engine) -> None:
    upgrade(engine, "test")  # a restart: nothing to do, no error
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        assert head_revision() is not None and int(head_revision()) >= 2  # 0002: passthroughs
        names = set(sa.inspect(connection).get_table_names())
        # The migrations create exactly what schema.py describes (no drift between the two).
        diff = compare_metadata(MigrationContext.configure(connection), schema.metadata)
    assert names == {*schema.metadata.tables, "alembic_version"}
    assert diff == []


def test_indexes_for_the_usage_report(engine: sa.Engine) -> None:
    indexes = {i["name"]: i["column_names"]
               for i in sa.inspect(engine).get_indexes("interceptions")}
    assert indexes["ix_interceptions_started_at"] == ["started_at"]
    assert indexes["ix_interceptions_actor_started_at"] == ["actor_id", "started_at"]
    assert indexes["ix_interceptions_model_started_at"] == ["model", "started_at"]


def test_wal_mode(engine: sa.Engine, tmp_path: Path) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o700


def test_every_record_type_round_trips(engine: sa.Engine) -> None:
    batch = entries(interception())
    Store(engine).write(batch)
    for entry in batch:
        row = read_back(engine, entry)
        for field in dataclasses.fields(entry.record):
            value = getattr(entry.record, field.name)
            if field.name.endswith("_at"):
                assert as_epoch(row[field.name]) == pytest.approx(value, abs=1e-6)
            else:
                assert row[field.name] == value, field.name


def test_end_before_start_and_one_join_for_the_outcome(engine: sa.Engine) -> None:
    started, *usage, ended = entries(interception("iid-late-start", outcome="failed"))
    store = Store(engine)
    store.write([ended])  # the end's batch happened to be written first
    store.write([*usage, started])
    i, e = schema.interceptions, schema.interception_ends
    query = (sa.select(i.c.id, i.c.actor_id, e.c.outcome, e.c.error_type)
             .select_from(i.outerjoin(e, e.c.id == i.c.id)))
    with engine.connect() as connection:
        assert connection.execute(query).all() == [
            ("iid-late-start", "alice", "failed", "server_error")]


def test_duplicates_are_ignored(engine: sa.Engine) -> None:
    batch = entries(interception()) + entries(interception())
    store = Store(engine)
    store.write(batch + batch[:3])  # a replay meeting its original inside one batch
    store.write(batch)  # and again later
    store.write(list(reversed(batch)))
    assert {t.name: count(engine, t) for t in schema.metadata.sorted_tables} == {
        "interceptions": 2, "interception_ends": 2, "token_usages": 2, "prompt_usages": 2,
        "tool_usages": 2, "passthroughs": 0, "findings": 0, "mcp_rounds": 0}


def test_identical_usage_records_both_count(engine: sa.Engine) -> None:
    token = interception()[1]
    Store(engine).write([new_entry(token), new_entry(token)])
    assert count(engine, schema.token_usages) == 2


def test_text_postgres_would_refuse_is_repaired(engine: sa.Engine) -> None:
    prompt = dataclasses.replace(interception()[2], prompt="a\x00b \ud800c")
    entry = new_entry(prompt)
    Store(engine).write([entry])
    assert read_back(engine, entry)["prompt"] == "ab ?c"


def test_write_each_sets_aside_only_the_bad_record(engine: sa.Engine) -> None:
    good = entries(interception())
    bad = new_entry(dataclasses.replace(interception()[2], created_at="not a time"))  # type: ignore[arg-type]
    store = Store(engine)
    with pytest.raises(ValueError):
        store.write([*good, bad])
    refused = store.write_each([*good, bad])
    assert [entry for entry, _ in refused] == [bad]
    assert count(engine, schema.prompt_usages) == 1


def test_unknown_schema_revision_is_a_clear_migration_error(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(MigrationError, match=r"schema migration failed.*f00d"):
        upgrade(engine, "the-db")


def test_a_file_that_is_not_a_database_is_a_migration_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    engine = make_engine(resolve_url(f"sqlite:///{path}"))
    with pytest.raises(MigrationError, match=r"junk\.db: schema migration failed"):
        upgrade(engine, str(path))
    engine.dispose()
