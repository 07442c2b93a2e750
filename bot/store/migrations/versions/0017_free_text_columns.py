"""`targets.trigger` and `risk_events.action` as TEXT: they hold sentences (why a
rebalance ran, what a rule did). As VARCHAR(100), one longer sentence made PostgreSQL
refuse the whole write it was part of (equity and positions included) while SQLite, which
does not enforce the length, kept it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = (("targets", "trigger"), ("risk_events", "action"))


def upgrade() -> None:
    for table, column in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.String(length=100), type_=sa.Text(),
                               existing_nullable=False)


def downgrade() -> None:
    for table, column in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.Text(), type_=sa.String(length=100),
                               existing_nullable=False)
