"""Client accounts: the account registry, an account on every order, fill, position and
equity row (NULL for the single-account daemon), and the Rebalancing API's portfolios and
runs.

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-03

Types are spelled out per dialect like 0001 does (no import of bot.store.models).
The equity table's one-row-per-run-and-day constraint becomes two partial unique indexes:
one row per run and day without an account, per run, account and day with one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
TAGGED = ("orders", "fills", "positions", "equity")
SINGLE = sa.text("account_id IS NULL")
MULTI = sa.text("account_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", ID, nullable=False),
        sa.Column("broker_account_id", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("suitability", JSON_DOC, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("closed_at", UTC_TIME, nullable=True),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'closed')", name=op.f("ck_accounts_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("broker_account_id", name=op.f("uq_accounts_broker_account_id")),
    )
    op.create_index(op.f("ix_accounts_profile"), "accounts", ["profile"], unique=False)

    for table in TAGGED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("account_id", ID, nullable=True))
            batch_op.create_foreign_key(
                op.f(f"fk_{table}_account_id_accounts"), "accounts", ["account_id"], ["id"]
            )
            batch_op.create_index(op.f(f"ix_{table}_account_id"), ["account_id"], unique=False)
            if table == "equity":
                batch_op.drop_constraint(op.f("uq_equity_run_id_day"), type_="unique")
    op.create_index(
        "ux_equity_run_id_day_single", "equity", ["run_id", "day"], unique=True,
        sqlite_where=SINGLE, postgresql_where=SINGLE,
    )
    op.create_index(
        "ux_equity_run_id_account_id_day", "equity", ["run_id", "account_id", "day"], unique=True,
        sqlite_where=MULTI, postgresql_where=MULTI,
    )

    op.create_table(
        "rebalancing_portfolios",
        sa.Column("profile", sa.String(length=200), nullable=False),
        sa.Column("portfolio_id", sa.String(length=64), nullable=False),
        sa.Column("weights", JSON_DOC, nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=True),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("profile", name=op.f("pk_rebalancing_portfolios")),
        sa.UniqueConstraint("portfolio_id", name=op.f("uq_rebalancing_portfolios_portfolio_id")),
    )
    op.create_table(
        "rebalancing_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("alpaca_run_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", ID, nullable=True),
        sa.Column("broker_account_id", sa.String(length=64), nullable=False),
        sa.Column("portfolio_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("initiated_from", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("weights", JSON_DOC, nullable=False),
        sa.Column("orders", JSON_DOC, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("completed_at", UTC_TIME, nullable=True),
        sa.Column("canceled_at", UTC_TIME, nullable=True),
        sa.Column("recorded_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_rebalancing_runs_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rebalancing_runs")),
        sa.UniqueConstraint("alpaca_run_id", name=op.f("uq_rebalancing_runs_alpaca_run_id")),
    )
    op.create_index(
        op.f("ix_rebalancing_runs_account_id"), "rebalancing_runs", ["account_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("rebalancing_runs")
    op.drop_table("rebalancing_portfolios")
    op.drop_index("ux_equity_run_id_account_id_day", table_name="equity")
    op.drop_index("ux_equity_run_id_day_single", table_name="equity")
    for table in TAGGED:
        with op.batch_alter_table(table) as batch_op:
            if table == "equity":
                batch_op.create_unique_constraint(op.f("uq_equity_run_id_day"), ["run_id", "day"])
            batch_op.drop_index(op.f(f"ix_{table}_account_id"))
            batch_op.drop_constraint(op.f(f"fk_{table}_account_id_accounts"), type_="foreignkey")
            batch_op.drop_column("account_id")
    op.drop_table("accounts")
