"""Cost per interception: its exact USD cost (NULL when the model has no price) and where the
price came from, on `interception_ends`.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Spelled out here rather than imported from schema.py (see 0001): exact NUMERIC on
# PostgreSQL, the decimal's text on SQLite (whose NUMERIC is a float).
Usd = sa.Numeric(asdecimal=True).with_variant(sa.Text(), "sqlite")


def upgrade() -> None:
    # Nullable columns: adding them rewrites no row on either database. Interceptions that
    # ended before this revision keep NULL (no price was looked up for them).
    with op.batch_alter_table("interception_ends") as batch:
        batch.add_column(sa.Column("cost_usd", Usd))
        batch.add_column(sa.Column("price_source", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("interception_ends") as batch:
        batch.drop_column("price_source")
        batch.drop_column("cost_usd")
