"""One platform batch per decision day and mode: `platform_batches` (day, mode) -> the run
that decided it, unique, written in the batch's own transaction. Two deliveries of the
weekly decision for one day that ran at the same time each committed a batch, and every
account was sent its rebalance twice; now the second one's commit finds the day taken.

Existing batches are entered, the first of a (day, mode) where there were two.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)

# The first run of each (day, mode) that recorded a platform decision.
EXISTING = """
INSERT INTO platform_batches (run_id, day, mode, created_at)
SELECT min(r.id), d.day, r.mode, min(d.created_at)
FROM runs r JOIN platform_decisions d ON d.run_id = r.id
WHERE r.strategy = 'platform'
GROUP BY d.day, r.mode
"""


def upgrade() -> None:
    op.create_table(
        "platform_batches",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.CheckConstraint(
            "mode IN ('backtest', 'replay', 'paper', 'live')", name=op.f("ck_platform_batches_mode")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_platform_batches_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_batches")),
        sa.UniqueConstraint("day", "mode", name=op.f("uq_platform_batches_day_mode")),
        sa.UniqueConstraint("run_id", name=op.f("uq_platform_batches_run_id")),
    )
    op.execute(EXISTING)


def downgrade() -> None:
    op.drop_table("platform_batches")
