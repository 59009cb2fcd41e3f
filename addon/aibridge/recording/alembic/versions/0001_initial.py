"""Initial recording schema: interceptions, their ends, token, prompt and tool usages.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out here rather than imported from schema.py: a revision must keep creating the
# schema as it was when written, whatever schema.py becomes later.
Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
Id = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "interceptions",
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
    )
    op.create_index("ix_interceptions_started_at", "interceptions", ["started_at"])
    op.create_index("ix_interceptions_actor_started_at", "interceptions",
                    ["actor_id", "started_at"])
    op.create_index("ix_interceptions_model_started_at", "interceptions",
                    ["model", "started_at"])

    op.create_table(
        "interception_ends",
        sa.Column("id", Id, primary_key=True),
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
    )

    op.create_table(
        "token_usages",
        sa.Column("id", Id, primary_key=True),
        sa.Column("interception_id", Id, nullable=False),
        sa.Column("msg_id", sa.Text),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
        sa.Column("extra", Json, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_token_usages_interception_id", "token_usages", ["interception_id"])

    op.create_table(
        "prompt_usages",
        sa.Column("id", Id, primary_key=True),
        sa.Column("interception_id", Id, nullable=False),
        sa.Column("msg_id", sa.Text),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_prompt_usages_interception_id", "prompt_usages", ["interception_id"])

    op.create_table(
        "tool_usages",
        sa.Column("id", Id, primary_key=True),
        sa.Column("interception_id", Id, nullable=False),
        sa.Column("msg_id", sa.Text),
        sa.Column("tool", sa.Text, nullable=False),
        sa.Column("tool_call_id", sa.Text, nullable=False),
        sa.Column("arguments", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_tool_usages_interception_id", "tool_usages", ["interception_id"])


def downgrade() -> None:
    for table in ("tool_usages", "prompt_usages", "token_usages", "interception_ends",
                  "interceptions"):
        op.drop_table(table)
