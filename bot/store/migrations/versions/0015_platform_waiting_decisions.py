"""A weekly decision published but not yet taken by a worker: a `platform_batches` row
without a run (`run_id` NULL), written when the decision is published, with
`published_at`; the worker's claim of the day fills in its run. `bot platform status`
shows such a row as waiting, so a decision queued while no worker runs is seen.
`published_at` is also kept on the batch the claim makes of it (NULL for batches
decided before, and for decisions published without a trade log).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # SQLite rebuilds the table (nothing refers to it, so its foreign keys stay valid).
    with op.batch_alter_table("platform_batches") as batch:
        batch.alter_column("run_id", existing_type=ID, nullable=True)
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM platform_batches WHERE run_id IS NULL")  # waiting: not batches
    with op.batch_alter_table("platform_batches") as batch:
        batch.drop_column("published_at")
        batch.alter_column("run_id", existing_type=ID, nullable=False)
