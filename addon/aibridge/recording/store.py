"""Writing entries to the database: one transaction per batch, duplicates ignored.

Every table is keyed by the entry key, and inserts use the dialect's ON CONFLICT DO NOTHING
(SQLite and PostgreSQL spell it the same in SQLAlchemy), so replaying a batch that was
partly or wholly written before — after a lost connection, a crash, a spool replay — is safe.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aibridge.recording import schema
from aibridge.recording.codec import Entry
from aibridge.recording.db_errors import is_poison

_TABLES: dict[str, sa.Table] = {
    "started": schema.interceptions,
    "ended": schema.interception_ends,
    "token": schema.token_usages,
    "prompt": schema.prompt_usages,
    "tool": schema.tool_usages,
    "passthrough": schema.passthroughs,
    "finding": schema.findings,
    "mcp": schema.mcp_rounds,
}
_TIMES = frozenset({"started_at", "ended_at", "created_at"})
# Write order inside a transaction: starts first reads best for anyone watching live.
_ORDER = ("started", "token", "prompt", "tool", "finding", "mcp", "ended", "passthrough")


class Store:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.backend = engine.dialect.name
        dialect_insert: Callable[[sa.Table], Any] = (
            postgresql.insert if self.backend == "postgresql" else sqlite.insert)
        self._inserts = {kind: DriverInsert(dialect_insert(table).on_conflict_do_nothing(
                             index_elements=["id"]), table, engine.dialect)
                         for kind, table in _TABLES.items()}

    def write(self, entries: Sequence[Entry]) -> None:
        """All entries in one transaction. Raises whatever the database or a value raised."""
        by_kind: dict[str, dict[str, Entry]] = {}
        for entry in entries:
            # Same key twice in one batch (a replay meeting its original): keep the first.
            by_kind.setdefault(entry.kind, {}).setdefault(entry.key, entry)
        with self.engine.begin() as connection:
            for kind in _ORDER:
                if kept := by_kind.get(kind):
                    self._inserts[kind].run(connection, kept.values())

    def write_each(self, entries: Sequence[Entry]) -> list[tuple[Entry, BaseException]]:
        """Entry by entry, to isolate records the database refuses after a batch failed.
        Returns the refused ones with their errors; any other failure is raised."""
        refused: list[tuple[Entry, BaseException]] = []
        for entry in entries:
            try:
                self.write([entry])
            except Exception as e:
                if not is_poison(e):
                    raise
                refused.append((entry, e))
        return refused


class DriverInsert:
    """One table's insert, compiled once and run through the driver as multi-row
    `INSERT … VALUES (…), (…), …` statements, each value converted by the column type's own
    bind processor: the values stored are exactly those `connection.execute(statement, rows)`
    stores for the rows `to_row` makes, without SQLAlchemy's per-execution work (cache lookup,
    parameter dicts per row) and without the rows: a record's fields are read in column order
    in one go and converted in one pass. The writer holds the GIL for this Python work, and
    every microsecond of it is one the event loop waits.

    One statement per table and batch rather than the driver's executemany: the sqlite3
    module gives up and takes back the GIL around every row it steps, and each take-back
    waits for, then interrupts, the event loop thread; per row that hand-over cost the
    proxy's event loop more CPU than the write cost the writer."""

    # Well under SQLite's 32,766 and PostgreSQL's 65,535 parameters per statement.
    MAX_PARAMETERS = 30_000
    MAX_ROWS = 500

    def __init__(self, statement: Any, table: sa.Table, dialect: sa.Dialect) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=dialect)
        sql = str(compiled)
        head, group, tail = _values_group(sql)
        if dialect.positional:
            names = list(compiled.positiontup)
        else:  # pyformat (psycopg), which also takes positional %s: the names in their order
            names = re.findall(r"%\((\w+)\)s", group)
            group = re.sub(r"%\((\w+)\)s", "%s", group)
        types = {column.name: column.type for column in table.columns}
        self.columns = tuple((name, types[name].dialect_impl(dialect).bind_processor(dialect))
                             for name in names)
        # The key is the first value of every row, the record's fields (by name) the rest.
        if names[0] != "id":
            raise ValueError(f"{table.name}: the insert does not start with the id column")
        self._key_process = self.columns[0][1]
        self._fields = attrgetter(*names[1:]) if len(names) > 2 else (
            lambda record, name=names[1]: (getattr(record, name),))
        self._plan = tuple((name in _TIMES, process) for name, process in self.columns[1:])
        # Where a value needs more than passing on: a time, or a bind processor.
        self._special = tuple((i, is_time, process) for i, (is_time, process)
                              in enumerate(self._plan) if is_time or process is not None)
        self._head, self._group, self._tail = head, group, tail
        self.chunk = max(1, min(self.MAX_ROWS, self.MAX_PARAMETERS // len(names)))
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        """The statement for `rows` rows (kept: batches come in a handful of sizes)."""
        sql = self._sql.get(rows)
        if sql is None:
            sql = self._sql[rows] = self._head + ", ".join([self._group] * rows) + self._tail
        return sql

    def run(self, connection: sa.Connection, entries: Iterable[Entry]) -> None:
        flat: list[Any] = []
        append = flat.append
        fields, plan, key_process = self._fields, self._plan, self._key_process
        count = 0
        for entry in entries:
            append(entry.key if key_process is None else key_process(entry.key))
            values = fields(entry.record)
            row = self._plain(values)
            if row is None:  # some text needs repair: what to_row does, value by value
                for value, (is_time, process) in zip(values, plan, strict=True):
                    value = _storable(value, is_time)
                    append(value if process is None or value is None else process(value))
            else:
                flat += row
            count += 1
            if count == self.chunk:
                connection.exec_driver_sql(self.sql(count), tuple(flat))
                flat.clear()
                count = 0
        if count:
            connection.exec_driver_sql(self.sql(count), tuple(flat))

    def _plain(self, values: tuple[Any, ...]) -> list[Any] | None:
        """The row's values when none of its text needs repair (as good as always), checked in
        one go instead of value by value; None otherwise."""
        texts = "".join([v for v in values if isinstance(v, str)])
        if not texts.isascii() or "\x00" in texts:
            return None
        row = list(values)
        for i, is_time, process in self._special:
            value = row[i]
            if is_time:
                value = _timestamp(value)
            elif value is None or process is None:
                continue
            elif isinstance(value, dict | list | tuple):
                # JSON text in ASCII without escapes holds no text to repair (NUL, a lone
                # surrogate). A driver's own wrapper (psycopg's Jsonb) cannot be read back.
                stored = process(value)
                if not isinstance(stored, str):
                    stored = process(_clean(value))
                elif not stored.isascii() or "\\u" in stored:
                    return None
                row[i] = stored
                continue
            row[i] = value if process is None else process(value)
        return row


def _values_group(sql: str) -> tuple[str, str, str]:
    """`INSERT … VALUES (…) ON CONFLICT …` split around its one row's `(…)`, kept as the
    dialect wrote it (casts included)."""
    start = sql.find(" VALUES (")
    if start < 0:
        raise ValueError(f"not a single-row VALUES insert: {sql}")
    start += len(" VALUES ")
    depth = 0
    for end in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            return sql[:start], sql[start:end + 1], sql[end + 1:]
    raise ValueError(f"unbalanced VALUES in: {sql}")


def to_row(entry: Entry) -> dict[str, Any]:
    """An entry as the row SQLAlchemy's insert takes (the reference `DriverInsert.run` keeps
    to: every stored value is one of these through its column's bind processor)."""
    record = entry.record
    row = {name: _storable(getattr(record, name), name in _TIMES)
           for name in _field_names(type(record))}
    row["id"] = entry.key  # usage records: the per-record UUID; interceptions: their id
    return row


def _storable(value: Any, is_time: bool) -> Any:
    """A record's value as a column takes it: a datetime for a time, text repaired."""
    if is_time:
        return _timestamp(value)
    if isinstance(value, str):
        # Most text is plain ASCII, which needs no repair: skip the encoding test.
        return _clean(value) if not value.isascii() or "\x00" in value else value
    if isinstance(value, dict | list | tuple):
        return _clean(value)
    return value


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def _timestamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(float(epoch), UTC)


def _clean(value: Any) -> Any:
    """Text PostgreSQL would refuse (NUL characters, lone surrogates from broken JSON escapes)
    is repaired rather than losing the record; SQLite gets the same text for consistency."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
