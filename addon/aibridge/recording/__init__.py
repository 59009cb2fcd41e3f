"""Recording: every interception in a database (SQLite by default, PostgreSQL), off the data path.

records.py   the records the addon builds (the contract)
recorder.py  Recorder: submit() from the data path; queue, writer thread, spool, retries
store.py     batched, idempotent writes (SQLAlchemy Core, ON CONFLICT DO NOTHING)
schema.py    the tables; alembic/ holds the migrations, run at start by migrate.py
spool.py     the on-disk JSON-lines spool used while the database is away
codec.py     record <-> spool line, and the key each record is stored under
engine.py    connections per backend (SQLite WAL, PostgreSQL via psycopg 3)
paths.py     default locations (documented there) and URL handling
report.py    the usage report behind `aibridge usage`
"""
