"""Secret findings: one row per secret found in what an interception sent (or in the model's
answer), with the rule, where, the action and a keyed hash of the secret, never the secret.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Spelled out here rather than imported from schema.py (see 0001).
Timestamp = sa.DateTime(timezone=True)
Id = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "findings",
        sa.Column("id", Id, primary_key=True),
        sa.Column("interception_id", Id, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_findings_interception_id", "findings", ["interception_id"])
    op.create_index("ix_findings_created_at", "findings", ["created_at"])


def downgrade() -> None:
    op.drop_table("findings")
