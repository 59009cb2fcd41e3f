"""Where records go when nothing says otherwise, and how recording URLs are read and shown.

Default database (no `[recording] url`): a SQLite file, created on first start, at

1. `$AIBRIDGE_DATA_DIR/aibridge.db` when `AIBRIDGE_DATA_DIR` is set, else
2. `$XDG_STATE_HOME/aibridge/aibridge.db` when `XDG_STATE_HOME` is set, else
3. `~/.local/state/aibridge/aibridge.db`.

The spool (records waiting for an unreachable database) is a JSON-lines file: next to a SQLite
database as `<db file>.spool.jsonl`; for PostgreSQL `spool-<digest of the URL>.jsonl` in the data
directory above, so two databases never share a spool. A relative SQLite path in a config file is
resolved against the config file's directory, like every other path in the config.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DB_FILE = "aibridge.db"
# psycopg 3 is the PostgreSQL driver we ship; plain `postgresql://` would pick psycopg2.
PG_DRIVER = "postgresql+psycopg"
_CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@",
                                 re.IGNORECASE)


class RecordingUrlError(ValueError):
    """The recording URL cannot be used; the message says why (without the password)."""


def data_dir() -> Path:
    """The directory for the default database and spools (not created here)."""
    if explicit := os.environ.get("AIBRIDGE_DATA_DIR"):
        return Path(explicit).expanduser()
    if state := os.environ.get("XDG_STATE_HOME"):
        return Path(state).expanduser() / "aibridge"
    return Path.home() / ".local" / "state" / "aibridge"


def default_db_path() -> Path:
    return data_dir() / DB_FILE


def resolve_url(url: str | None, base_dir: Path | None = None) -> URL:
    """The SQLAlchemy URL to connect to: the default SQLite file, an absolute SQLite path, or
    PostgreSQL through psycopg 3. Raises RecordingUrlError for anything else."""
    if not url:
        return URL.create("sqlite", database=str(default_db_path()))
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RecordingUrlError(f"recording url {mask_url(url)!r} is not a database URL "
                                '(expected "sqlite:///path.db" or "postgresql://...")') from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise RecordingUrlError("recording url needs a SQLite file path, e.g. "
                                    '"sqlite:///aibridge.db" (in-memory databases lose records)')
        path = Path(database).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return parsed.set(drivername="sqlite", database=str(path))
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername=PG_DRIVER)
        return parsed
    raise RecordingUrlError(f"recording url scheme {parsed.drivername!r} is not supported "
                            '(use "sqlite:///path.db" or "postgresql://...")')


def default_spool_path(url: URL) -> Path:
    if url.get_backend_name() == "sqlite":
        return Path(f"{url.database}.spool.jsonl")
    # The password is left out of the digest: rotating it must not strand a spool.
    # (URL.set(password=None) would keep the password: None there means "unchanged".)
    identity = URL.create(url.drivername, url.username, None, url.host, url.port,
                          url.database, url.query).render_as_string(hide_password=False)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return data_dir() / f"spool-{digest}.jsonl"


def display_url(url: URL) -> str:
    """The URL as it may appear in logs, errors and stats: never with its password."""
    return url.render_as_string(hide_password=True)


def mask_url(text: str) -> str:
    """Hide any `scheme://user:password@` password inside free text (e.g. a driver error)."""
    return _CREDENTIALS_IN_URL.sub(r"\g<scheme>\g<user>:***@", text)
