"""Platform batches: each profile's targets decided once per batch (`platform_decisions`)
and one task row per account and batch (`platform_tasks`), so a task delivered again
after it finished does nothing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

Only adds tables; types are spelled out per dialect as in 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def upgrade() -> None:
    op.create_table(
        "platform_decisions",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("profile", sa.String(length=200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("rebalance_id", sa.String(length=100), nullable=False),
        sa.Column("config_hash", sa.String(length=128), nullable=False),
        sa.Column("weights", JSON_DOC, nullable=False),
        sa.Column("stops", JSON_DOC, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_platform_decisions_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_decisions")),
        sa.UniqueConstraint(
            "run_id", "profile", name=op.f("uq_platform_decisions_run_id_profile")
        ),
    )
    op.create_table(
        "platform_tasks",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("claimed_at", UTC_TIME, nullable=True),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.Column("outcome", JSON_DOC, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('rebalance', 'close')", name=op.f("ck_platform_tasks_kind")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'retrying', 'done', 'dead')",
            name=op.f("ck_platform_tasks_status"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_platform_tasks_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_platform_tasks_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_tasks")),
        sa.UniqueConstraint(
            "run_id", "account_id", "kind", "day",
            name=op.f("uq_platform_tasks_run_id_account_id_kind_day"),
        ),
    )
    op.create_index(
        op.f("ix_platform_tasks_account_id"), "platform_tasks", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_platform_tasks_run_id_status"), "platform_tasks", ["run_id", "status"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("platform_tasks")
    op.drop_table("platform_decisions")
