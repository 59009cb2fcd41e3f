"""Passthrough records: their own record kind and table (migration 0002), idempotent writes,
the spool's line format, and their report apart from the usage report."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aibridge.recording import schema
from aibridge.recording.codec import decode, encode, new_entry
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import head_revision, upgrade
from aibridge.recording.passthrough_report import passthrough_rows, read_passthroughs, render
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import Passthrough
from aibridge.recording.report import usage_rows
from aibridge.recording.store import Store
from tests.conftest import interception

DAY = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def passthrough(n: int, *, actor: str = "alice", outcome: str = "completed",
                kind: str = "centralized", at: float = DAY, provider: str = "openai"
                ) -> Passthrough:
    return Passthrough(
        id=f"00000000-0000-4000-8000-{n:012d}", started_at=at, ended_at=at + 0.5,
        actor_id=actor, actor_metadata={"Team": "ml"}, provider=provider,
        provider_type="openai", method="POST", path="/v1/files", status=200 if outcome ==
        "completed" else 403, outcome=outcome, error_type=None if outcome == "completed"
        else "permission_denied", error_message=None, request_bytes=1000 * n,
        response_bytes=10 * n, credential_kind=kind, credential_hint="sk-c...cdef",
        credential_length=34, user_agent="curl/8", key_attempts=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(resolve_url("sqlite:///aibridge.db", tmp_path))
    upgrade(engine, "test")
    yield engine
    engine.dispose()


def test_the_migration_adds_the_table_at_the_head_revision(engine):
    assert int(head_revision() or 0) >= 2  # 0002 adds the table; later revisions keep it
    with engine.connect() as connection:
        assert sa.inspect(connection).has_table("passthroughs")
        names = {c["name"] for c in sa.inspect(connection).get_columns("passthroughs")}
    assert names == {c.name for c in schema.passthroughs.columns}
    assert names == {f.name for f in dataclasses.fields(Passthrough)}


def test_a_record_is_written_once_under_its_id(engine):
    record = passthrough(1)
    entry = new_entry(record)
    assert entry.kind == "passthrough" and entry.key == record.id
    store = Store(engine)
    store.write([entry])
    store.write([entry, new_entry(record)])  # a replayed batch adds nothing
    with engine.connect() as connection:
        rows = connection.execute(sa.select(schema.passthroughs)).all()
    assert len(rows) == 1
    row = rows[0]._mapping
    assert (row["method"], row["path"], row["status"], row["request_bytes"],
            row["credential_hint"]) == ("POST", "/v1/files", 200, 1000, "sk-c...cdef")


def test_spool_lines_round_trip():
    entry = new_entry(passthrough(2))
    assert decode(encode(entry)) == entry


def test_report_groups_per_day_actor_and_provider_and_keeps_model_requests_apart(engine):
    store = Store(engine)
    store.write([new_entry(r) for r in (
        passthrough(1), passthrough(2, outcome="rejected"), passthrough(3, kind="byok"),
        passthrough(4, actor="bob"), passthrough(5, at=DAY + 86_400),
        passthrough(6, provider="anthropic"))])
    store.write([new_entry(r) for r in interception(actor="alice", model="gpt-4o",
                                                     started_at=DAY)])
    with engine.connect() as connection:
        rows = passthrough_rows(connection)
        usage = usage_rows(connection)
    assert [(r.day, r.actor, r.provider, r.requests, r.failed, r.central, r.bytes_in,
             r.bytes_out) for r in rows] == [
        ("2026-01-01", "alice", "anthropic", 1, 0, 1, 6000, 60),
        ("2026-01-01", "alice", "openai", 3, 1, 2, 6000, 60),
        ("2026-01-01", "bob", "openai", 1, 0, 1, 4000, 40),
        ("2026-01-02", "alice", "openai", 1, 0, 1, 5000, 50),
    ]
    # The usage report counts the one model request only.
    assert [(r.actor, r.model, r.requests) for r in usage] == [("alice", "gpt-4o", 1)]


def test_read_and_render(engine, tmp_path):
    Store(engine).write([new_entry(passthrough(1)), new_entry(passthrough(2, actor="bob"))])
    rows = read_passthroughs(f"sqlite:///{tmp_path}/aibridge.db", actor="bob")
    assert [r.actor for r in rows] == ["bob"]
    table = render(rows, "table")
    assert table.splitlines()[0].split() == ["day", "actor", "provider", "requests", "failed",
                                             "central", "bytes_in", "bytes_out"]
    assert table.splitlines()[-1].split() == ["total", "1", "0", "1", "2000", "20"]
    assert render([], "table") == "no recorded passthroughs\n"
    assert render(rows, "csv").splitlines()[1] == "2026-01-01,bob,openai,1,0,1,2000,20"
    assert '"bytes_in": 2000' in render(rows, "json")


def test_a_database_from_before_the_passthrough_records_reports_none(tmp_path):
    engine = make_engine(resolve_url("sqlite:///old.db", tmp_path))
    try:
        with engine.begin() as connection:
            schema.interceptions.create(connection)
        with engine.connect() as connection:
            assert passthrough_rows(connection) == []
    finally:
        engine.dispose()


def test_postgresql_takes_the_same_records_and_report(postgres_url):
    engine = make_engine(resolve_url(postgres_url))
    try:
        upgrade(engine, "test")
        store = Store(engine)
        store.write([new_entry(passthrough(1)), new_entry(passthrough(2, outcome="rejected"))])
        store.write([new_entry(passthrough(1))])  # replayed: nothing twice
        with engine.connect() as connection:
            rows = passthrough_rows(connection)
        assert [(r.day, r.requests, r.failed, r.central, r.bytes_in) for r in rows] == [
            ("2026-01-01", 2, 1, 2, 3000)]
    finally:
        engine.dispose()
