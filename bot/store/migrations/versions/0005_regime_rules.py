"""Regime decisions record which rules fresh inputs decided, which kept the previous
decision's outcome, and which inputs were missing or stale.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Only adds nullable columns: decisions recorded before keep NULL there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("decided_rules", "kept_rules", "stale_inputs")


def upgrade() -> None:
    with op.batch_alter_table("regime_decisions") as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("regime_decisions") as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
