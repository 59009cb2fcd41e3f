"""The recording store on a real PostgreSQL server (scripts/postgres): schema, round trip,
report, and an outage in the middle of traffic that loses nothing and duplicates nothing."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from aibridge.recording import schema
from aibridge.recording.db_errors import RecordingError
from aibridge.recording.engine import make_engine
from aibridge.recording.paths import resolve_url
from aibridge.recording.recorder import Recorder
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
)
from aibridge.recording.report import UsageRow, usage_rows
from tests.conftest import PostgresServer, interception

TABLE_OF = {InterceptionStarted: "interceptions", InterceptionEnded: "interception_ends",
            TokenUsage: "token_usages", PromptUsage: "prompt_usages", ToolUsage: "tool_usages"}


def engine_for(url: str) -> sa.Engine:
    return make_engine(resolve_url(url))


def table_counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table, tables without rows left out."""
    with engine.connect() as connection:
        counts = {t.name: connection.execute(sa.select(sa.func.count()).select_from(t))
                  .scalar_one() for t in schema.metadata.sorted_tables}
    return {name: n for name, n in counts.items() if n}


def test_schema_round_trip_and_report_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    day1 = datetime(2026, 1, 1, 23, 59, 30, tzinfo=UTC).timestamp()
    records = [*interception("pg-1", started_at=day1, outcome="failed"),
               *interception("pg-2", started_at=day1 + 60, actor="bob")]
    odd = dataclasses.replace(records[2], prompt="nul\x00 and \ud800 text")
    with Recorder(postgres_url, spool_path=tmp_path / "spool.jsonl") as recorder:
        assert recorder.backend == "postgresql"
        for record in [*records, odd]:
            recorder.submit(record)
        assert recorder.flush(30), recorder.stats()
    with Recorder(postgres_url, spool_path=tmp_path / "spool.jsonl") as again:
        assert again.stats()["last_error"] is None  # migrations on restart: nothing to do

    engine = engine_for(postgres_url)
    try:
        with engine.connect() as connection:
            start = connection.execute(sa.select(schema.interceptions)
                                       .where(schema.interceptions.c.id == "pg-1")).one()
            prompts = connection.execute(sa.select(schema.prompt_usages.c.prompt)).scalars()
            report = usage_rows(connection)
            jsonb = connection.execute(sa.text(
                "SELECT count(*) FROM interceptions WHERE actor_metadata @> '{\"Team\": \"ml\"}'"
            )).scalar_one()
            assert set(prompts) == {"fix the tests", "nul and ? text"}
        assert start.started_at == datetime.fromtimestamp(day1, UTC)
        assert start.actor_metadata == {"Username": "alice", "Team": "ml"}
        assert start.streaming is True and start.credential_hint == "sk-a...wxyz"
        assert jsonb == 2  # metadata is real JSONB: queryable
        assert table_counts(engine) == {"interceptions": 2, "interception_ends": 2,
                                        "token_usages": 2, "prompt_usages": 3, "tool_usages": 2}
        # The sample records carry no cost: unpriced, with their 132 tokens.
        assert report == [UsageRow("2026-01-01", "alice", "claude-x", 1, 1, 0, 100, 20, 5, 7, 0,
                                   unpriced=1, unpriced_tokens=132),
                          UsageRow("2026-01-02", "bob", "claude-x", 1, 0, 0, 100, 20, 5, 7, 0,
                                   unpriced=1, unpriced_tokens=132)]
    finally:
        engine.dispose()


def test_postgres_stopped_mid_run_loses_nothing(postgres: PostgresServer, postgres_url: str,
                                                tmp_path: Path) -> None:
    recorder = Recorder(postgres_url, spool_path=tmp_path / "spool.jsonl",
                        batch_interval=0.05, max_backoff=0.5)
    submitted: list[list[Record]] = [[] for _ in range(3)]
    stop = threading.Event()

    def produce(n: int) -> None:
        while not stop.is_set():
            for record in interception(actor=f"actor-{n}", started_at=time.time()):
                recorder.submit(record)
                submitted[n].append(record)
            time.sleep(0.005)

    def wait_until(what: str, condition: object, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"{what}: {recorder.stats()}"
            time.sleep(0.02)

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(len(submitted))]
    try:
        for thread in producers:
            thread.start()
        wait_until("records written while the server is up",
                   lambda: recorder.stats()["written"] > 200)
        postgres.stop()
        before_outage = sum(map(len, submitted))
        wait_until("outage noticed", lambda: not recorder.stats()["db_available"])
        wait_until("records spooled during the outage",
                   lambda: recorder.stats()["spooled"] > 500)
        time.sleep(1.5)  # long enough for several retries against the stopped server
        assert postgres.start() == postgres.url  # same data directory, same port
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in producers:
            thread.join(10)
        postgres.start()  # whatever happened above, leave the server up for other tests
    during_and_after = sum(map(len, submitted)) - before_outage
    assert during_and_after > 500

    assert recorder.flush(60), recorder.stats()
    stats = recorder.stats()
    recorder.close()
    assert stats["spooled_total"] > 0 and stats["failed_batches"] > 1, stats
    assert (stats["dropped"], stats["rejected"], stats["spooled"]) == (0, 0, 0)
    # No timing assert: that submit() never waits for the database is shown by causality —
    # the producers kept submitting (and records were spooled) while the server was down.

    everything = [record for per_thread in submitted for record in per_thread]
    expected = Counter(TABLE_OF[type(record)] for record in everything)
    engine = engine_for(postgres_url)
    try:
        assert table_counts(engine) == dict(expected)  # every record, exactly once
        with engine.connect() as connection:
            stored = set(connection.execute(sa.select(schema.interceptions.c.id)).scalars())
            ended = set(connection.execute(sa.select(schema.interception_ends.c.id)).scalars())
    finally:
        engine.dispose()
    started_ids = {r.id for r in everything if isinstance(r, InterceptionStarted)}
    assert stored == started_ids == ended


def test_a_database_that_does_not_exist_fails_the_start(postgres: PostgresServer,
                                                        tmp_path: Path) -> None:
    # Reached the server, and it said no: a configuration error, not an outage to wait out.
    with pytest.raises(RecordingError, match="does not exist"):
        Recorder(postgres.database_url("no_such_db"), spool_path=tmp_path / "spool.jsonl")
