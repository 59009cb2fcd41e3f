"""MCP tool calls: one row per call of a bridge (MCP) tool in an interception's tool loop.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Spelled out here rather than imported from schema.py (see 0001).
Timestamp = sa.DateTime(timezone=True)
Id = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "mcp_rounds",
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
    )
    op.create_index("ix_mcp_rounds_interception_id", "mcp_rounds", ["interception_id"])
    op.create_index("ix_mcp_rounds_created_at", "mcp_rounds", ["created_at"])


def downgrade() -> None:
    op.drop_table("mcp_rounds")
