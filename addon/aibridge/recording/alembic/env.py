"""Alembic environment for the recording schema.

aibridge runs migrations itself at start (aibridge.recording.migrate), handing over an open
connection inside a transaction; there is no alembic.ini. To write a new revision by hand, copy
versions/0001_initial.py: revisions are explicit so an old database always migrates the same way.
"""

from __future__ import annotations

from alembic import context

from aibridge.recording.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("aibridge migrations run programmatically: aibridge.recording.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds tables when a revision needs it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
