"""Connections to the recording database, tuned per backend.

SQLite: WAL mode (readers such as `aibridge usage` never block the writer) and a busy timeout
instead of immediate "database is locked" errors. PostgreSQL: short connect timeout and TCP
keepalives so an outage is noticed in seconds rather than hanging the writer thread; sessions
in UTC so "day" means the same thing on both backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL

SQLITE_BUSY_TIMEOUT = 30.0  # seconds
PG_CONNECT_TIMEOUT = 5  # seconds (libpq takes an integer)
PG_STATEMENT_TIMEOUT_MS = 60_000


def make_engine(url: URL, *, create_dir: bool = True) -> Engine:
    """An engine for a URL from paths.resolve_url. SQL parameters never appear in errors or
    logs (hide_parameters): they hold prompts and tool arguments."""
    if url.get_backend_name() == "sqlite":
        if create_dir:
            # Owner-only: the database holds prompts (a directory that exists keeps its mode).
            Path(url.database or "").parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True,
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, hide_parameters=True, pool_pre_ping=True, pool_size=2, max_overflow=2,
        connect_args={
            "connect_timeout": PG_CONNECT_TIMEOUT,
            "application_name": "aibridge",
            "options": f"-c TimeZone=UTC -c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3,
        })


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL persists in the file; setting it on every connection is cheap and covers a file
        # that was created by someone else.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    finally:
        cursor.close()
