"""A run's last sign of life: `runs.heartbeat_at`, set when it starts and every minute
while its process runs (bot.store.heartbeat), so a run whose process died on another
machine can be told from one still in progress once the heartbeat is older than the
lease. NULL for runs no single process holds, and for runs recorded before. An index
of the running runs by holder keeps each beat from reading every run.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


RUNNING = "status = 'running'"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    # every beat and every run's start look up the running runs of a holder
    op.create_index(
        "ix_runs_running_holder", "runs", ["holder"],
        sqlite_where=sa.text(RUNNING), postgresql_where=sa.text(RUNNING),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_running_holder", table_name="runs")
    # In place (SQLite 3.35+ drops a column): a rebuilt table would fail its foreign keys
    # as soon as an incident or an order points at a run.
    with op.batch_alter_table("runs", recreate="never") as batch:
        batch.drop_column("heartbeat_at")
