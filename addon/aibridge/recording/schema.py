"""The record tables (SQLAlchemy Core), identical on SQLite and PostgreSQL.

`interceptions` holds what is known when a model request starts, `interception_ends` how it
ended (`passthroughs`, one row per request on any other provider path, stands apart, so that
nothing counting model requests counts them):
two tables, so an end written before its start (they travel in different batches) needs no
special case, and "interceptions with their outcome" is one LEFT JOIN on `id`. Usage rows
carry a per-record UUID as key so a batch replayed from the spool never duplicates anything.
Times are UTC timestamps. The migrations in alembic/versions create exactly this schema.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

# JSONB on PostgreSQL so metadata can be queried and indexed; JSON text on SQLite.
Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
Id = sa.String(64)  # UUIDs, but never refuse a record for its id's shape


class Usd(sa.TypeDecorator[Decimal]):
    """Money, exact: NUMERIC (unbounded precision) on PostgreSQL, the decimal's text on
    SQLite, whose NUMERIC would store a float. Python sees Decimal either way. Sum it in SQL
    only on PostgreSQL; SQLite's SUM would add floats (see report.py)."""

    impl = sa.Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value) if not isinstance(value, Decimal) else value
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(str(value))

interceptions = sa.Table(
    "interceptions", metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("actor_id", sa.Text, nullable=False),
    sa.Column("actor_metadata", Json, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("provider_type", sa.Text, nullable=False),
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("streaming", sa.Boolean, nullable=False),
    sa.Column("transport", sa.Text, nullable=False),
    sa.Column("client", sa.Text, nullable=False),
    sa.Column("client_session_id", sa.Text),
    sa.Column("user_agent", sa.Text),
    sa.Column("credential_kind", sa.Text, nullable=False),
    sa.Column("credential_hint", sa.Text, nullable=False),
    sa.Column("credential_length", sa.Integer, nullable=False),
    sa.Column("correlating_tool_call_id", sa.Text),
    # The usage report filters by time and actor and groups by actor, model and day.
    sa.Index("ix_interceptions_started_at", "started_at"),
    sa.Index("ix_interceptions_actor_started_at", "actor_id", "started_at"),
    sa.Index("ix_interceptions_model_started_at", "model", "started_at"),
)

interception_ends = sa.Table(
    "interception_ends", metadata,
    sa.Column("id", Id, primary_key=True),  # = interceptions.id (no FK: may arrive first)
    sa.Column("ended_at", Timestamp, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("status", sa.Integer),
    sa.Column("error_type", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("credential_hint", sa.Text, nullable=False),
    sa.Column("credential_length", sa.Integer, nullable=False),
    sa.Column("response_model", sa.Text),
    sa.Column("response_id", sa.Text),
    sa.Column("time_to_first_token", sa.Float),
    sa.Column("key_attempts", sa.Integer, nullable=False),
    # NULL: unpriced (the model has no price), never $0 (migration 0003).
    sa.Column("cost_usd", Usd()),
    sa.Column("price_source", sa.Text),
    # Who served it instead of `interceptions.provider` (migration 0005): NULL, nobody else.
    sa.Column("fallback_provider", sa.Text),
    sa.Column("fallback_model", sa.Text),
)

token_usages = sa.Table(
    "token_usages", metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("interception_id", Id, nullable=False),
    sa.Column("msg_id", sa.Text),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
    sa.Column("extra", Json, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_token_usages_interception_id", "interception_id"),
)

prompt_usages = sa.Table(
    "prompt_usages", metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("interception_id", Id, nullable=False),
    sa.Column("msg_id", sa.Text),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_prompt_usages_interception_id", "interception_id"),
)

tool_usages = sa.Table(
    "tool_usages", metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("interception_id", Id, nullable=False),
    sa.Column("msg_id", sa.Text),
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("tool_call_id", sa.Text, nullable=False),
    sa.Column("arguments", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_tool_usages_interception_id", "interception_id"),
)

passthroughs = sa.Table(
    "passthroughs", metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=False),
    sa.Column("actor_id", sa.Text, nullable=False),
    sa.Column("actor_metadata", Json, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("provider_type", sa.Text, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("status", sa.Integer),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("error_type", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("request_bytes", sa.BigInteger, nullable=False),
    sa.Column("response_bytes", sa.BigInteger, nullable=False),
    sa.Column("credential_kind", sa.Text, nullable=False),
    sa.Column("credential_hint", sa.Text, nullable=False),
    sa.Column("credential_length", sa.Integer, nullable=False),
    sa.Column("user_agent", sa.Text),
    sa.Column("key_attempts", sa.Integer, nullable=False),
    sa.Index("ix_passthroughs_started_at", "started_at"),
    sa.Index("ix_passthroughs_actor_started_at", "actor_id", "started_at"),
)

findings = sa.Table(
    "findings", metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("interception_id", Id, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_findings_interception_id", "interception_id"),
    sa.Index("ix_findings_created_at", "created_at"),
)

mcp_rounds = sa.Table(
    "mcp_rounds", metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("interception_id", Id, nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("server", sa.Text, nullable=False),
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("injected_name", sa.Text, nullable=False),
    sa.Column("tool_call_id", sa.Text, nullable=False),
    sa.Column("arguments", sa.Text, nullable=False),
    sa.Column("result_bytes", sa.BigInteger, nullable=False),
    sa.Column("duration", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_mcp_rounds_interception_id", "interception_id"),
    sa.Index("ix_mcp_rounds_created_at", "created_at"),
)
