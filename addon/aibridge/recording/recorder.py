"""The recorder: takes records from the data path without ever slowing or failing it.

`submit()` puts a record on a bounded in-memory queue and returns; a writer thread drains
the queue in batches (up to `batch_size` records or `batch_interval` seconds) and writes each
batch in one transaction. When the database cannot take a batch, the batch goes to the spool
file (fsync'd) and the writer retries with capped exponential backoff, replaying the spool in
order before anything newer; a full queue also overflows into the spool. Writes are idempotent
(see codec and store), so a batch that is replayed after a partial failure never duplicates.
Records the database refuses for good (a value it cannot store) are set aside in the
spool's `.rejected.jsonl` file instead of blocking everything behind them.

Usage:

    recorder = Recorder("postgresql://bridge@db/aibridge")   # or None: the default SQLite file
    recorder.submit(record)            # from any thread; never blocks, never raises
    recorder.flush(5.0)                # True once everything submitted so far is in the database
    recorder.close(10.0)               # flush what it can, spool the rest
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aibridge.recording.codec import Entry, encode, new_entry
from aibridge.recording.db_errors import (
    MigrationError,
    RecordingError,
    describe_error,
    is_misconfigured,
    is_poison,
    is_unreachable,
)
from aibridge.recording.engine import make_engine
from aibridge.recording.inbox import Inbox
from aibridge.recording.migrate import upgrade
from aibridge.recording.paths import (
    RecordingUrlError,
    default_spool_path,
    display_url,
    resolve_url,
)
from aibridge.recording.records import Record
from aibridge.recording.spool import Spool
from aibridge.recording.store import Store

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "queue_size": 10_000,
    "batch_size": 500,
    "batch_interval": 0.2,  # seconds a record may wait for its batch to fill
    "max_backoff": 5.0,  # seconds between retries while the database is away
}
_FIRST_BACKOFF = 0.25
_LOG_EVERY = 60.0  # seconds between repeated warnings about dropped records


class Recorder:
    def __init__(self, url: str | None = None, *, base_dir: Path | None = None,
                 spool_path: str | Path | None = None,
                 queue_size: int = DEFAULTS["queue_size"],
                 batch_size: int = DEFAULTS["batch_size"],
                 batch_interval: float = DEFAULTS["batch_interval"],
                 max_backoff: float = DEFAULTS["max_backoff"]) -> None:
        """Open the database named by `url` (None: the default SQLite file, see paths.py),
        migrate its schema and start the writer thread. Relative paths resolve against
        base_dir (the config file's directory). Raises RecordingError (MigrationError for a
        failed migration) with a message fit for a start-up error. A PostgreSQL server that
        cannot be reached is not an error: records are spooled until it is (but one that
        refuses the credentials or lacks the database is)."""
        try:
            self._url = resolve_url(url, base_dir)
        except RecordingUrlError as e:
            raise RecordingError(str(e)) from None
        self.backend = self._url.get_backend_name()
        self.where = (self._url.database or "" if self.backend == "sqlite"
                      else display_url(self._url))
        self._batch_size = max(1, batch_size)
        self._batch_interval = max(0.001, batch_interval)
        self._max_backoff = max(_FIRST_BACKOFF, max_backoff)
        self._queue: Inbox[Entry] = Inbox(queue_size)
        self._counters_lock = threading.Lock()
        self._counters = {"written": 0, "replayed": 0, "spooled_total": 0, "overflowed": 0,
                          "failed_batches": 0, "rejected": 0, "dropped": 0}
        self._last_error: str | None = None
        self._available = True
        self._backoff = 0.0
        self._retry_at = 0.0
        self._flushing = 0  # flush() calls waiting: the writer does not wait for full batches
        self._deadline = float("inf")
        self._accepting = True
        self._closed = False
        self._inflight: Sequence[Entry] = ()
        self._last_drop_log = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # flush() or close(): stop waiting for a full batch

        spool_file = Path(spool_path).expanduser() if spool_path else None
        if spool_file is not None and not spool_file.is_absolute():
            spool_file = (base_dir or Path.cwd()) / spool_file
        spool_file = spool_file or default_spool_path(self._url)
        try:
            self._engine = make_engine(self._url)
        except (OSError, ImportError) as e:
            raise RecordingError(f"recording database {self.where}: {describe_error(e)}") from None
        try:
            self._spool = Spool.open_own(spool_file)
            self._orphans = Spool.orphans(spool_file, self._spool)
        except OSError as e:
            self._engine.dispose()
            raise RecordingError(f"recording spool {spool_file}: {describe_error(e)}") from None
        self._store = Store(self._engine)
        self._migrated = False
        try:
            upgrade(self._engine, self.where)
            self._migrated = True
        except MigrationError:
            self._release()
            raise
        except Exception as e:
            if self.backend == "sqlite" or not is_unreachable(e) or is_misconfigured(e):
                self._release()
                raise RecordingError(f"recording database {self.where}: "
                                     f"{describe_error(e)}") from None
            # Starting the proxy matters more than the database: spool until it is back.
            self._failed(e)
        if self.spooled:
            log.info("recording: %d spooled records to write to %s", self.spooled, self.where)
        self._thread = threading.Thread(target=self._run, name="aibridge-recorder", daemon=True)
        self._thread.start()
        # A proxy stopped without close() (Ctrl-C at the wrong moment) still spools its queue.
        atexit.register(self.close, 5.0)

    @classmethod
    def from_settings(cls, settings: object, base_dir: Path | None = None) -> Recorder:
        """From a config section with attributes `url`, `spool_path`, `queue_size`,
        `batch_size`, `batch_interval`, `max_backoff`; missing or None ones take defaults."""
        options = {name: value for name in (*DEFAULTS, "spool_path")
                   if (value := getattr(settings, name, None)) is not None}
        return cls(getattr(settings, "url", None), base_dir=base_dir, **options)

    # --- the data path -------------------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Queue one record for writing. Never blocks on the database, never raises."""
        try:
            entry = new_entry(record)
        except Exception as e:
            self._drop(1, f"not a record: {describe_error(e)}")
            return
        if not (self._accepting and self._queue.put(entry)):
            self._overflow(entry)

    # --- control -------------------------------------------------------------------------

    @property
    def spooled(self) -> int:
        return self._spool.pending + sum(s.pending for s in self._orphans)

    @property
    def database_reachable(self) -> bool:
        """False from a failed write (or an unreachable database at start) until a write
        succeeds again; meanwhile records go to the spool. Read by the health endpoint."""
        return self._available

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record submitted so far is in the database (True), or timeout.
        Meant for tests and shutdown: it also cuts short the wait between retries."""
        deadline = time.monotonic() + timeout
        with self._counters_lock:
            self._flushing += 1
        self._retry_at = 0.0
        self._wake.set()
        try:
            while True:
                if self._queue.unfinished == 0 and self.spooled == 0:
                    return True
                if time.monotonic() >= deadline or not self._thread.is_alive():
                    return False
                time.sleep(0.01)
        finally:
            with self._counters_lock:
                self._flushing -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what can be written within timeout, spool the rest, stop the writer."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._deadline = time.monotonic() + timeout
        self._retry_at = 0.0
        self._accepting = False  # late records go straight to the spool
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 0.5)  # a moment to spool what it was writing at the deadline
        stuck = self._thread.is_alive()
        # The writer may hang in a database call; its batch is spooled too (a duplicate is
        # harmless: writes are idempotent), and so is anything that raced into the queue.
        leftovers = list(self._inflight) if stuck else []
        while taken := self._queue.take(self._batch_size):
            leftovers += taken
            self._queue.done(len(taken))
        if leftovers:
            self._to_spool(leftovers)
        if stuck:
            log.warning("recording: database %s did not answer within %.0fs; unwritten "
                        "records are in %s", self.where, timeout, self._spool.path)
        elif self.spooled:
            log.warning("recording: %d records wait in %s for %s", self.spooled,
                        self._spool.path, self.where)
        self._release(stuck)

    def stats(self) -> dict[str, Any]:
        with self._counters_lock:
            counters = dict(self._counters)
        return {"backend": self.backend, "database": self.where,
                "db_available": self._available, "queued": len(self._queue),
                "spooled": self.spooled, **counters, "last_error": self._last_error,
                "spool_path": str(self._spool.path)}

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            self._inflight = batch
            try:
                self._process(batch)
            except Exception as e:  # a bug here must not end recording: keep the records
                log.error("recording: writer error: %s", describe_error(e))
                self._to_spool(batch)
            finally:
                self._inflight = ()
                self._queue.done(len(batch))
            if self._stop.is_set() and not self._queue and (
                    not self.spooled or self._past_deadline()
                    or time.monotonic() < self._retry_at):
                return

    def _take_batch(self) -> list[Entry]:
        """Up to batch_size entries, waiting at most batch_interval after the call (while
        someone flushes or closes: only a moment, and not at all once one entry is in).

        The writer sleeps between drains instead of waiting in `queue.get`: a writer blocked
        there is woken by every `submit` and takes the GIL from the event loop once per
        record; draining what piled up meanwhile costs the loop nothing."""
        batch: list[Entry] = []
        started = time.monotonic()
        while True:
            batch += self._queue.take(self._batch_size - len(batch))
            if len(batch) >= self._batch_size:
                return batch
            if self._flushing or self._stop.is_set():
                if batch:
                    return batch
                wait = 0.01
            else:
                wait = self._batch_interval - (time.monotonic() - started)
                if wait <= 0:
                    return batch
            if self._wake.wait(min(wait, 0.05)):
                self._wake.clear()
                if batch:
                    return batch
            elif (self._flushing or self._stop.is_set()) and not batch:
                return batch

    def _process(self, batch: list[Entry]) -> None:
        if self.spooled and time.monotonic() >= self._retry_at and not self._past_deadline():
            self._replay()
        if batch:
            if self.spooled or time.monotonic() < self._retry_at or self._past_deadline():
                self._to_spool(batch)  # behind older records, or the database is away
            elif not self._write(batch):
                self._to_spool(batch)
        with contextlib.suppress(OSError):
            self._spool.sync()  # records that overflowed from submit() reach the disk

    def _replay(self) -> None:
        """Write spooled records, oldest file first and in file order, until done or failure."""
        for spool in [*self._orphans, self._spool]:
            while spool.pending:
                if self._past_deadline():
                    return
                chunk = spool.read(self._batch_size)
                if chunk.bad_lines:
                    spool.reject([("unreadable spool line", line) for line in chunk.bad_lines])
                    self._count("rejected", len(chunk.bad_lines))
                if chunk.entries and not self._write(chunk.entries):
                    return
                spool.consumed(chunk)
                self._count("replayed", len(chunk.entries))
                if chunk.count == 0:
                    break
            if spool is not self._spool:
                self._orphans.remove(spool)
                spool.close(remove_if_empty=True)

    def _write(self, entries: Sequence[Entry]) -> bool:
        try:
            if not self._migrated:
                upgrade(self._engine, self.where)
                self._migrated = True
            self._store.write(entries)
        except Exception as e:
            if not is_poison(e):
                self._failed(e)
                return False
            try:
                refused = self._store.write_each(entries)
            except Exception as again:
                self._failed(again)
                return False
            self._spool.reject([(describe_error(err), encode(entry).rstrip(b"\n"))
                                for entry, err in refused])
            self._count("rejected", len(refused))
            log.error("recording: %s refused %d records for good (%s); they are in %s",
                      self.where, len(refused), describe_error(refused[0][1]),
                      self._spool.rejected_path)
            self._succeeded(len(entries) - len(refused))
            return True
        self._succeeded(len(entries))
        return True

    def _failed(self, error: BaseException) -> None:
        self._count("failed_batches", 1)
        self._last_error = describe_error(error)
        self._backoff = min(self._max_backoff, max(_FIRST_BACKOFF, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        if self._available:
            self._available = False
            log.warning("recording: database %s unavailable (%s); spooling records to %s",
                        self.where, self._last_error, self._spool.path)

    def _succeeded(self, count: int) -> None:
        self._count("written", count)
        self._backoff = 0.0
        self._retry_at = 0.0
        if not self._available:
            self._available = True
            log.warning("recording: database %s is back; writing spooled records", self.where)

    # --- helpers -------------------------------------------------------------------------

    def _to_spool(self, entries: Sequence[Entry]) -> None:
        try:
            self._spool.append(entries, sync=True)
            self._count("spooled_total", len(entries))
        except Exception as e:
            self._drop(len(entries), f"spool {self._spool.path}: {describe_error(e)}")

    def _overflow(self, entry: Entry) -> None:
        """The queue is full (or closed): straight to the spool, without an fsync on the
        caller's thread (the writer syncs it; the OS already protects it from our crash)."""
        try:
            self._spool.append([entry], sync=not self._accepting)
            self._count("spooled_total", 1)
            self._count("overflowed", 1)
        except Exception as e:
            self._drop(1, f"spool {self._spool.path}: {describe_error(e)}")

    def _drop(self, count: int, reason: str) -> None:
        self._count("dropped", count)
        now = time.monotonic()
        if now - self._last_drop_log >= _LOG_EVERY:
            self._last_drop_log = now
            log.error("recording: %d records lost: %s", count, reason)

    def _count(self, name: str, amount: int) -> None:
        with self._counters_lock:
            self._counters[name] += amount

    def _past_deadline(self) -> bool:
        return time.monotonic() >= self._deadline

    def _release(self, stuck: bool = False) -> None:
        for spool in [*getattr(self, "_orphans", []), self._spool]:
            with contextlib.suppress(OSError):
                spool.close(remove_if_empty=spool is not self._spool)
        if not stuck:  # a hung connection would hang dispose() too
            self._engine.dispose()
