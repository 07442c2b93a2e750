"""The process that holds a run: `runs.holder`, "host:pid:start" of the command that
started it (NULL for runs a batch of workers shares), so a run whose process is gone can
be told from one still in progress and closed as abandoned.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("holder", sa.String(length=200), nullable=True))


def downgrade() -> None:
    # In place (SQLite 3.35+ drops a column): a rebuilt table would fail its foreign keys
    # as soon as an incident or an order points at a run.
    with op.batch_alter_table("runs", recreate="never") as batch:
        batch.drop_column("holder")
