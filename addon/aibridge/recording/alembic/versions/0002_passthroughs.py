"""Passthrough requests: one row per request on a provider path that is not a model call.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Spelled out here rather than imported from schema.py (see 0001).
Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
Id = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "passthroughs",
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
    )
    op.create_index("ix_passthroughs_started_at", "passthroughs", ["started_at"])
    op.create_index("ix_passthroughs_actor_started_at", "passthroughs",
                    ["actor_id", "started_at"])


def downgrade() -> None:
    op.drop_table("passthroughs")
