"""Bring the database schema up to date with Alembic, programmatically, at start.

The revisions live in the package (alembic/), so no alembic.ini is needed on disk. Several
proxies may share one PostgreSQL database: a transaction-scoped advisory lock makes them
migrate one after the other instead of racing to create the same tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic announces its context and plugins at INFO (some at import time) into the proxy's
# event log; only a real schema change is news, and we log that ourselves.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from aibridge.recording.db_errors import MigrationError, describe_error, is_unreachable

SCRIPT_LOCATION = Path(__file__).with_name("alembic")
_PG_LOCK_KEY = 0x41494272  # "AIBr": any constant shared by all aibridge processes
log = logging.getLogger(__name__)


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, where: str) -> None:
    """Migrate to the newest revision. A database that cannot be reached raises the driver's
    error unchanged (the caller may wait for it); any other failure is a MigrationError."""
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _PG_LOCK_KEY})
            before = current_revision(connection)
            command.upgrade(_config(connection), "head")
            after = current_revision(connection)
    except Exception as e:
        if is_unreachable(e) and not _reached(e):
            raise
        raise MigrationError(f"recording database {where}: schema migration failed: "
                             f"{describe_error(e)}") from None
    if before != after:
        log.info("recording database %s: schema migrated from %s to %s", where,
                 before or "empty", after)


def _reached(error: Exception) -> bool:
    """SQLite reports a read-only or corrupt file as OperationalError too: for a local file
    that is a real problem to report now, not an outage to wait out."""
    return "sqlite" in type(getattr(error, "orig", None) or error).__module__
