"""Store writes each table through the driver (`DriverInsert`): what it stores must be exactly
what SQLAlchemy's own `connection.execute(insert, rows)` stores, on SQLite and PostgreSQL,
odd values included (NUL, lone surrogates, non-ASCII, nested JSON, money, None)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from aibridge.recording import schema
from aibridge.recording.codec import new_entry
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import upgrade
from aibridge.recording.paths import resolve_url
from aibridge.recording.records import (
    InterceptionEnded,
    McpRound,
    Passthrough,
    Record,
    SecretFinding,
)
from aibridge.recording.store import _ORDER, _TABLES, Store, to_row
from tests.conftest import interception


def records() -> list[Record]:
    iid = str(uuid.uuid4())
    out = interception(iid) + interception(extra={}, outcome="failed")
    odd = "caf\u00e9 \ud800 nul\x00 \u2603"
    out[0] = type(out[0])(**{**out[0].__dict__, "user_agent": odd,
                             "actor_metadata": {"Team": "ml", "nested": "d\u00e9j\u00e0"}})
    # Plain text beside odd JSON (the text is checked in one go, the JSON apart), and a
    # backslash-u that is no escape.
    for metadata in ({"Team": odd, odd: "x"}, {"Path": "C:\\users\\u1"}, {"k": ["\x00", 1]}):
        started = interception()[0]
        out.append(type(started)(**{**started.__dict__, "actor_metadata": metadata}))
    out += [
        InterceptionEnded(id=str(uuid.uuid4()), ended_at=1_767_225_601.123456, outcome="failed",
                          status=None, error_type="server_error", error_message=odd,
                          credential_hint="sk-a...wxyz", credential_length=48,
                          response_model=None, response_id=None, time_to_first_token=None,
                          key_attempts=0, cost_usd=Decimal("0.000000075"),
                          price_source="operator:x*", fallback_provider="bedrock",
                          fallback_model="m"),
        Passthrough(id=str(uuid.uuid4()), started_at=1_767_225_600.5, ended_at=1_767_225_601.0,
                    actor_id="alice", actor_metadata={}, provider="openai",
                    provider_type="openai", method="POST", path="/v1/files", status=None,
                    outcome="cancelled", error_type=None, error_message=None, request_bytes=0,
                    response_bytes=0, credential_kind="byok", credential_hint="sk-...",
                    credential_length=3, user_agent=None, key_attempts=0),
        SecretFinding(interception_id=iid, rule="aws-access-key", location="message 1",
                      action="redact", secret_hash="ab" * 8, source="request",
                      created_at=1_767_225_600.25),
        McpRound(interception_id=iid, round=1, server="docs", tool="search",
                 injected_name="bmcp_docs_search", tool_call_id="call_1", arguments="{}",
                 result_bytes=12, duration=0.5, error=None, created_at=1_767_225_600.75),
    ]
    return out


def _stored(engine: sa.Engine) -> dict[str, list[tuple]]:
    with engine.connect() as connection:
        return {kind: sorted(tuple(row) for row in connection.exec_driver_sql(
                    f"SELECT * FROM {table.name}"))
                for kind, table in _TABLES.items()}


def _check(engine_for: Iterator[sa.Engine], chunk: int | None = None) -> None:
    """`chunk`: rows per statement, so that a batch spans several statements and a remainder."""
    mine, theirs = next(engine_for), next(engine_for)
    entries = [new_entry(r) for r in records() + interception() + interception()]
    store = Store(mine)
    if chunk is not None:
        for insert in store._inserts.values():
            insert.chunk = chunk
    # A batch with half of it already written (a replay meeting its original) stores each once.
    store.write(entries[::2])
    store.write(entries)
    # The reference: SQLAlchemy's compiled insert with its own parameter processing.
    store = Store(theirs)
    by_kind: dict[str, list[dict]] = {}
    for entry in entries:
        by_kind.setdefault(entry.kind, []).append(to_row(entry))
    with theirs.begin() as connection:
        for kind in _ORDER:
            if rows := by_kind.get(kind):
                connection.execute(store._inserts[kind].statement, rows)
    assert set(by_kind) == set(_TABLES)  # every table written
    assert _stored(mine) == _stored(theirs)
    store.write(entries)  # a replay is ignored, as before
    assert _stored(mine) == _stored(theirs)
    assert sum(len(rows) for rows in _stored(mine).values()) == len(entries)


@pytest.mark.parametrize("chunk", [None, 2])
def test_sqlite_stores_what_sqlalchemy_stores(tmp_path: Path, chunk: int | None) -> None:
    def engines() -> Iterator[sa.Engine]:
        for name in ("a", "b"):
            engine = make_engine(resolve_url(f"sqlite:///{name}.db", tmp_path))
            upgrade(engine, "test")
            yield engine
    _check(engines(), chunk)


def test_a_batch_is_one_statement_per_table_up_to_the_chunk() -> None:
    """Few statements per batch is the point (see DriverInsert); a chunk never exceeds the
    databases' parameter limits."""
    statements: list[str] = []
    engine = sa.create_engine("sqlite://")
    sa.event.listen(engine, "before_cursor_execute",
                    lambda _c, _cur, sql, *_a: statements.append(sql))
    with engine.begin() as connection:
        schema.metadata.create_all(connection)
    statements.clear()
    store = Store(engine)
    entries = [new_entry(r) for r in interception() + interception() + interception()]
    store.write(entries)
    kinds = {entry.kind for entry in entries}
    assert len([s for s in statements if s.startswith("INSERT")]) == len(kinds)
    for insert in store._inserts.values():
        assert insert.chunk * len(insert.columns) <= 30_000


def test_postgresql_stores_what_sqlalchemy_stores(postgres) -> None:
    names = [postgres.create_database(), postgres.create_database()]

    def engines() -> Iterator[sa.Engine]:
        for name in names:
            engine = make_engine(resolve_url(postgres.database_url(name)))
            upgrade(engine, "test")
            yield engine
    try:
        _check(engines(), chunk=2)
    finally:
        for name in names:
            postgres.drop_database(name)
