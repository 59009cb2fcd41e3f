"""Fallbacks across providers: the provider and model that served an interception in place of
the ones asked (`[[fallbacks]]`), on `interception_ends`.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: no row is rewritten; earlier interceptions had no fallback.
    with op.batch_alter_table("interception_ends") as batch:
        batch.add_column(sa.Column("fallback_provider", sa.Text))
        batch.add_column(sa.Column("fallback_model", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("interception_ends") as batch:
        batch.drop_column("fallback_model")
        batch.drop_column("fallback_provider")
