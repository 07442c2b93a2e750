"""Initial schema: the trade log as it was before migrations, then notional orders,
strategy state and the macro cache.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Types are spelled out per dialect instead of importing bot.store.models, so this file
keeps creating the same tables when the models change later. A trade log created by
create_all before migrations existed is adopted by running only the second half (the
`adopt_pre_migration` flag that `bot db upgrade` sets).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The storage of bot.store.models' column types: BIGINT ids (INTEGER rowids on SQLite),
# exact NUMERIC money (TEXT on SQLite, which has no decimal type), aware timestamps, JSONB.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(28, 10).with_variant(sa.Text(), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def upgrade() -> None:
    if not context.config.attributes.get("adopt_pre_migration"):
        _create_pre_migration_tables()
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("notional", MONEY, nullable=True))
    op.create_table(
        "macro_observations",
        sa.Column("series", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("fetched_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("series", "day", name=op.f("pk_macro_observations")),
    )
    op.create_table(
        "strategy_state",
        sa.Column("instance", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("state", JSON_DOC, nullable=False),
        sa.CheckConstraint(
            "mode IN ('backtest', 'replay', 'paper', 'live')", name=op.f("ck_strategy_state_mode")
        ),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_strategy_state")),
    )


def _create_pre_migration_tables() -> None:
    op.create_table(
        "runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("strategy", sa.String(length=100), nullable=False),
        sa.Column("config_hash", sa.String(length=128), nullable=False),
        sa.Column("config", JSON_DOC, nullable=False),
        sa.Column("code_version", sa.String(length=100), nullable=False),
        sa.Column("data_source", sa.String(length=200), nullable=False),
        sa.Column("synthetic", sa.Boolean(), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", JSON_DOC, nullable=True),
        sa.CheckConstraint(
            "mode IN ('backtest', 'replay', 'paper', 'live')", name=op.f("ck_runs_mode")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'failed')", name=op.f("ck_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "equity",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("equity", MONEY, nullable=False),
        sa.Column("cash", MONEY, nullable=False),
        sa.Column("positions_value", MONEY, nullable=False),
        sa.Column("drawdown", sa.Double(), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=True),
        sa.CheckConstraint(
            "regime IN ('GROWTH', 'TRANSITION', 'UNCERTAINTY')", name=op.f("ck_equity_regime")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_equity_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_equity")),
        sa.UniqueConstraint("run_id", "day", name=op.f("uq_equity_run_id_day")),
    )
    op.create_table(
        "incidents",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("context", JSON_DOC, nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_incidents_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incidents_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_incidents_run_id"), ["run_id"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("client_order_id", sa.String(length=128), nullable=False),
        sa.Column("broker_order_id", sa.String(length=128), nullable=True),
        sa.Column("rebalance_id", sa.String(length=100), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("reference_price", MONEY, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=True),
        sa.Column("filled_quantity", MONEY, nullable=False),
        sa.Column("average_price", MONEY, nullable=True),
        sa.Column("submitted_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_orders_side")),
        sa.CheckConstraint(
            "status IN ('new', 'accepted', 'partially_filled', 'filled', 'canceled', 'rejected', 'expired')",
            name=op.f("ck_orders_status"),
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_orders_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_orders_client_order_id")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_orders_run_id_symbol"), ["run_id", "symbol"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_orders_status"), ["status"], unique=False)

    op.create_table(
        "positions",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("market_value", MONEY, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_positions_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
    )
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_positions_run_id_day"), ["run_id", "day"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_positions_run_id_symbol"), ["run_id", "symbol"], unique=False
        )

    op.create_table(
        "regime_decisions",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("regime", sa.String(length=16), nullable=False),
        sa.Column("vix", sa.Double(), nullable=True),
        sa.Column("vix_date", sa.Date(), nullable=True),
        sa.Column("spread", sa.Double(), nullable=True),
        sa.Column("spread_date", sa.Date(), nullable=True),
        sa.Column("uncertainty", sa.Double(), nullable=True),
        sa.Column("uncertainty_date", sa.Date(), nullable=True),
        sa.Column("warning", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "regime IN ('GROWTH', 'TRANSITION', 'UNCERTAINTY')",
            name=op.f("ck_regime_decisions_regime"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_regime_decisions_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regime_decisions")),
    )
    with op.batch_alter_table("regime_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_regime_decisions_run_id_day"), ["run_id", "day"], unique=False
        )

    op.create_table(
        "risk_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("inputs", JSON_DOC, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_risk_events_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_events")),
    )
    with op.batch_alter_table("risk_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_risk_events_run_id_day"), ["run_id", "day"], unique=False
        )

    op.create_table(
        "targets",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("rebalance_id", sa.String(length=100), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("baseline", sa.Double(), nullable=False),
        sa.Column("overlay", sa.Double(), nullable=False),
        sa.Column("final", sa.Double(), nullable=False),
        sa.Column("stop_price", MONEY, nullable=True),
        sa.Column("reasons", JSON_DOC, nullable=False),
        sa.Column("trigger", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_targets_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_targets")),
    )
    with op.batch_alter_table("targets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_targets_run_id_day"), ["run_id", "day"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_targets_run_id_symbol"), ["run_id", "symbol"], unique=False
        )

    op.create_table(
        "fills",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("client_order_id", sa.String(length=128), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("commission", MONEY, nullable=False),
        sa.Column("slippage_cost", MONEY, nullable=False),
        sa.Column("filled_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_fills_side")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_fills_order_id_orders")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_fills_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
    )
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fills_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_fills_run_id_symbol"), ["run_id", "symbol"], unique=False
        )

    op.create_table(
        "order_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("filled_quantity", MONEY, nullable=True),
        sa.CheckConstraint(
            "status IN ('new', 'accepted', 'partially_filled', 'filled', 'canceled', 'rejected', 'expired')",
            name=op.f("ck_order_events_status"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_order_events_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
    )
    with op.batch_alter_table("order_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_events_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    for table in (
        "order_events",
        "fills",
        "targets",
        "risk_events",
        "regime_decisions",
        "positions",
        "orders",
        "incidents",
        "equity",
        "strategy_state",
        "runs",
        "macro_observations",
    ):
        op.drop_table(table)
