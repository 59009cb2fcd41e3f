"""A connection to the recording database a config names, for the commands and reports that
read it (`aibridge usage`, `aibridge budgets`, spend at start-up), with the messages a user
needs when there is no database or no schema yet."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from aibridge.recording.db_errors import RecordingError, describe_error
from aibridge.recording.engine import make_engine
from aibridge.recording.migrate import current_revision
from aibridge.recording.paths import RecordingUrlError, display_url, resolve_url


@contextmanager
def recording_connection(url: str | None, base_dir: Path | None = None, *,
                         must_exist: bool = True) -> Iterator[sa.Connection | None]:
    """A connection to the database `[recording] url` names (None: the default SQLite file).
    Yields None when `must_exist` is false and there is no database or schema yet. Raises
    RecordingError with a message for the user."""
    try:
        resolved = resolve_url(url, base_dir)
    except RecordingUrlError as e:
        raise RecordingError(str(e)) from None
    sqlite = resolved.get_backend_name() == "sqlite"
    where = resolved.database or "" if sqlite else display_url(resolved)
    if sqlite and not Path(where).is_file():
        if not must_exist:
            yield None
            return
        raise RecordingError(f"no recording database at {where} "
                             "(the proxy creates it when it first starts)")
    engine = make_engine(resolved, create_dir=False)
    try:
        with engine.connect() as connection:
            if current_revision(connection) is None:
                if not must_exist:
                    yield None
                    return
                raise RecordingError(f"{where} holds no aibridge records "
                                     "(the proxy creates the tables when it first starts)")
            yield connection
    except sa.exc.SQLAlchemyError as e:
        raise RecordingError(f"recording database {where}: {describe_error(e)}") from None
    finally:
        engine.dispose()
