"""The recorder on SQLite: off the data path, spooling while the database is away, exactly once."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from aibridge.recording.codec import encode, new_entry
from aibridge.recording.db_errors import MigrationError, RecordingError
from aibridge.recording.recorder import Recorder
from aibridge.recording.records import Record
from aibridge.recording.store import Store
from tests.conftest import interception

TABLES = ("interceptions", "interception_ends", "token_usages", "prompt_usages", "tool_usages")


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIBRIDGE_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "rec" / "aibridge.db"


@pytest.fixture
def make_recorder(db: Path) -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(**options: Any) -> Recorder:
        options.setdefault("batch_interval", 0.02)
        options.setdefault("max_backoff", 0.3)
        recorder = Recorder(options.pop("url", f"sqlite:///{db}"), **options)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.close(2)


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as connection:
        return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def ids(db: Path, table: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [r[0] for r in connection.execute(f"SELECT id FROM {table}")]


def many(n: int) -> list[Record]:
    return [r for _ in range(n) for r in interception()]


def submit_all(recorder: Recorder, records: list[Record]) -> None:
    """Submit each record. No timing asserts: where the database hangs, returning at all shows
    that submit() never waits for it (pytest-timeout bounds the test otherwise)."""
    for record in records:
        recorder.submit(record)


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Outage:
    """Makes Store.write fail like a lost connection, or hang, until told otherwise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        self.hang = threading.Event()
        self.released = threading.Event()
        self.fail_after_commit = 0
        real = Store.write
        outage = self

        def write(store: Store, entries: Any) -> None:
            if outage.hang.is_set():
                outage.released.wait(30)
            if outage.down:
                raise sa_exc.OperationalError(
                    "INSERT ...", {"prompt": "sk-live-secret0123456789"},
                    sqlite3.OperationalError("unable to reach postgresql://u:hunter2@db"))
            real(store, entries)
            if outage.fail_after_commit:
                outage.fail_after_commit -= 1
                raise sa_exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("lost"))

        monkeypatch.setattr(Store, "write", write)


def test_every_record_reaches_the_database(make_recorder: Callable[..., Recorder],
                                           db: Path) -> None:
    recorder = make_recorder()
    records = many(20)
    submit_all(recorder, records)
    assert recorder.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 20)
    stats = recorder.stats()
    assert stats["backend"] == "sqlite" and stats["database"] == str(db)
    assert (stats["queued"], stats["spooled"], stats["written"], stats["failed_batches"],
            stats["dropped"], stats["db_available"]) == (0, 0, 100, 0, 0, True)
    assert stats["last_error"] is None


def test_restart_migrates_nothing_and_keeps_records(make_recorder: Callable[..., Recorder],
                                                   db: Path) -> None:
    first = make_recorder()
    submit_all(first, many(3))
    first.close()
    second = make_recorder()
    submit_all(second, many(2))
    assert second.flush(10)
    assert counts(db)["interceptions"] == 5


def test_end_submitted_before_start(make_recorder: Callable[..., Recorder], db: Path) -> None:
    recorder = make_recorder()
    started, *usage, ended = interception("late-start", outcome="cancelled")
    recorder.submit(ended)
    assert recorder.flush(10)
    submit_all(recorder, [*usage, started])
    assert recorder.flush(10)
    with sqlite3.connect(db) as connection:
        assert connection.execute(
            "SELECT i.id, e.outcome FROM interceptions i LEFT JOIN interception_ends e "
            "ON e.id = i.id").fetchall() == [("late-start", "cancelled")]


def test_full_queue_overflows_to_the_spool_and_nothing_is_lost(
        make_recorder: Callable[..., Recorder], db: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    outage = Outage(monkeypatch)
    outage.hang.set()  # the database takes forever with the first batch
    recorder = make_recorder(queue_size=5, batch_size=2)
    submit_all(recorder, many(10))  # returns although the database never answers
    stats = recorder.stats()
    assert stats["overflowed"] >= 40 and stats["spooled"] >= 40
    outage.hang.clear()
    outage.released.set()
    assert recorder.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 10)
    assert recorder.stats()["dropped"] == 0


def test_unavailable_database_spools_then_everything_is_written_once(
        make_recorder: Callable[..., Recorder], db: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outage = Outage(monkeypatch)
    recorder = make_recorder()
    submit_all(recorder, many(5))
    assert recorder.flush(10)
    outage.down = True
    records = many(20)
    submit_all(recorder, records)  # returns although the database never answers
    wait_for(lambda: recorder.stats()["spooled"] == 100)
    assert not recorder.flush(0.3)
    stats = recorder.stats()
    assert not stats["db_available"] and stats["failed_batches"] >= 1
    assert stats["last_error"].startswith("OperationalError: unable to reach")
    spool = Path(stats["spool_path"])
    assert len(spool.read_text().splitlines()) == 100  # on disk, not only in memory

    outage.down = False
    assert recorder.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 25)
    assert spool.stat().st_size == 0
    stats = recorder.stats()
    assert stats["db_available"] and stats["spooled"] == 0
    # Whatever went wrong, neither the password nor a record's text reached stats or logs.
    for text in (json.dumps(stats), caplog.text):
        assert "hunter2" not in text and "sk-live-secret" not in text
    assert "unavailable" in caplog.text and "is back" in caplog.text


def test_a_batch_that_failed_after_commit_is_not_duplicated(
        make_recorder: Callable[..., Recorder], db: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    outage = Outage(monkeypatch)
    outage.fail_after_commit = 3  # committed, but the client saw an error: replayed later
    recorder = make_recorder()
    records = many(30)
    submit_all(recorder, records)
    assert recorder.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 30)
    assert recorder.stats()["failed_batches"] == 3
    assert sorted(ids(db, "interceptions")) == sorted(
        {r.id for r in records if hasattr(r, "started_at")})


def test_spooled_records_survive_a_restart(make_recorder: Callable[..., Recorder], db: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    outage = Outage(monkeypatch)
    outage.down = True
    recorder = make_recorder()
    submit_all(recorder, many(8))
    recorder.close(0.5)  # cannot write: spools the rest and returns
    assert recorder.stats()["spooled"] == 40
    monkeypatch.undo()
    again = make_recorder()
    assert again.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 8)


def test_close_writes_what_is_queued(make_recorder: Callable[..., Recorder], db: Path) -> None:
    recorder = make_recorder(batch_interval=1.0)
    submit_all(recorder, many(40))
    recorder.close()
    assert counts(db) == dict.fromkeys(TABLES, 40)
    recorder.close()  # twice is fine


def test_submit_never_waits_for_a_hung_database(make_recorder: Callable[..., Recorder],
                                                db: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    outage = Outage(monkeypatch)
    outage.hang.set()
    recorder = make_recorder(queue_size=50)
    records = many(200)
    submit_all(recorder, records)  # returns although the database never answers
    recorder.close(0.5)  # the writer is stuck: close gives up on it and spools everything
    outage.hang.clear()
    outage.released.set()
    again = make_recorder()
    assert again.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 200)


def test_submit_never_raises(make_recorder: Callable[..., Recorder]) -> None:
    recorder = make_recorder()
    recorder.submit(object())  # type: ignore[arg-type]
    assert recorder.stats()["dropped"] == 1
    recorder.close()
    recorder.submit(interception()[0])  # after close: logged and counted, not raised
    assert recorder.stats()["dropped"] == 2


def test_a_record_the_database_refuses_is_set_aside(make_recorder: Callable[..., Recorder],
                                                    db: Path) -> None:
    recorder = make_recorder()
    good = many(3)
    bad = dataclasses.replace(interception()[2], created_at="yesterday")  # type: ignore[arg-type]
    submit_all(recorder, [*good[:7], bad, *good[7:]])
    assert recorder.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 3)
    stats = recorder.stats()
    assert stats["rejected"] == 1 and stats["db_available"]
    rejected = Path(stats["spool_path"]).with_name("aibridge.db.spool.rejected.jsonl")
    assert "yesterday" in rejected.read_text()


def test_spool_left_by_earlier_runs_is_replayed(make_recorder: Callable[..., Recorder],
                                                db: Path) -> None:
    db.parent.mkdir(parents=True)
    own = db.with_name("aibridge.db.spool.jsonl")
    dead = db.with_name("aibridge.db.spool.424242.jsonl")  # a process that crashed
    own.write_bytes(b"".join(encode(new_entry(r)) for r in many(2)) + b"garbage\n")
    dead.write_bytes(b"".join(encode(new_entry(r)) for r in many(3)))
    recorder = make_recorder()
    assert recorder.flush(10)
    assert counts(db) == dict.fromkeys(TABLES, 5)
    assert recorder.stats()["rejected"] == 1
    assert not dead.exists() and own.stat().st_size == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postgres_unreachable_at_start_spools_without_leaking_the_password(
        make_recorder: Callable[..., Recorder], caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://bridge:hunter2pw@127.0.0.1:{closed_port()}/records"
    recorder = make_recorder(url=url)
    submit_all(recorder, many(2))
    wait_for(lambda: recorder.stats()["spooled"] == 10)
    stats = recorder.stats()
    assert stats["backend"] == "postgresql" and not stats["db_available"]
    assert stats["last_error"] and "hunter2pw" not in json.dumps(stats)
    assert stats["database"].startswith("postgresql+psycopg://bridge:***@127.0.0.1")
    assert Path(stats["spool_path"]).parent == tmp_path / "data"
    recorder.close(0.5)
    assert "hunter2pw" not in caplog.text


def test_start_up_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="not supported"):
        Recorder("mysql://u:p@h/d")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 200)
    with pytest.raises(MigrationError, match=r"junk\.db: schema migration failed"):
        Recorder(f"sqlite:///{junk}")
    # The failed start released its spool: a second attempt fails the same way, not "busy".
    with pytest.raises(MigrationError):
        Recorder(f"sqlite:///{junk}")


def test_from_settings(tmp_path: Path) -> None:
    settings = SimpleNamespace(url="sqlite:///rel.db", spool_path="spool/x.jsonl",
                               queue_size=7, batch_size=None)
    recorder = Recorder.from_settings(settings, base_dir=tmp_path)
    try:
        assert recorder.where == str(tmp_path / "rel.db")
        assert recorder.stats()["spool_path"] == str(tmp_path / "spool/x.jsonl")
        assert recorder._queue.size == 7
    finally:
        recorder.close()
