"""Parameter sweeps: a `sweeps` row per `bot sweep`, and `sweep_runs` tagging each of its
runs with the sweep and the parameter values it used.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Only adds tables; types are spelled out per dialect as in 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", ID, nullable=False),
        sa.Column("strategy", sa.String(length=100), nullable=False),
        sa.Column("config_hash", sa.String(length=128), nullable=False),
        sa.Column("config", JSON_DOC, nullable=False),
        sa.Column("grid", JSON_DOC, nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("walk_forward", sa.String(length=64), nullable=True),
        sa.Column("record", sa.String(length=16), nullable=False),
        sa.Column("executor", sa.String(length=200), nullable=False),
        sa.Column("code_version", sa.String(length=100), nullable=False),
        sa.Column("data_source", sa.String(length=200), nullable=False),
        sa.Column("synthetic", sa.Boolean(), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", JSON_DOC, nullable=True),
        sa.CheckConstraint(
            "record IN ('summary', 'full')", name=op.f("ck_sweeps_record")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'failed')", name=op.f("ck_sweeps_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_table(
        "sweep_runs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("sweep_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("params", JSON_DOC, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_sweep_runs_run_id_runs")),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name=op.f("fk_sweep_runs_sweep_id_sweeps")
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_sweep_runs")),
        sa.UniqueConstraint("sweep_id", "position", name=op.f("uq_sweep_runs_sweep_id_position")),
    )


def downgrade() -> None:
    op.drop_table("sweep_runs")
    op.drop_table("sweeps")
