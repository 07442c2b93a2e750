"""Trade-log schema: one set of tables for backtests and live trading.

The live daemon needs this schema unchanged, so it records what an audit needs
(exact money, aware timestamps, the inputs behind every decision), not what a
backtest report happens to print.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import JSON, TypeDecorator, TypeEngine

from bot.types import OrderStatus, Regime, Side

RUN_MODES = ("backtest", "replay", "paper", "live")
RUN_STATUSES = ("running", "finished", "failed")
ACCOUNT_STATUSES = ("active", "suspended", "closed")
SWEEP_RECORD_MODES = ("summary", "full")


def to_decimal(value: Any) -> Decimal:
    """Exact Decimal of a number; floats go through repr so 0.1 stays 0.1, not 0.1000000000000000055."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got bool {value!r}")
    if isinstance(value, float):  # float(): numpy 2's repr of np.float64 is "np.float64(...)"
        return Decimal(repr(float(value)))
    if isinstance(value, int):
        return Decimal(value)
    if hasattr(value, "item"):  # numpy scalars
        return to_decimal(value.item())
    raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")


def to_plain(value: Any) -> Any:
    """JSON-safe copy of `value`, so decision inputs (dates, numpy, Decimal) never fail a flush.

    Non-finite floats become the strings 'nan'/'inf'/'-inf': PostgreSQL JSONB rejects
    NaN, and a missing input is worth keeping visible in an audit record.
    """
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):  # datetime is a date too
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return to_plain(value.tolist())
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


class ExactDecimal(TypeDecorator[Decimal]):
    """Money and quantities as exact decimals.

    SQLite has no decimal type (its NUMERIC is a float), so values are TEXT there:
    exact, but compared as strings in SQL, so filter on them in Python. PostgreSQL
    stores NUMERIC(28, 10), which rounds beyond the 10th decimal.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(Numeric(28, 10, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        # Floats are nearly every value a backtest flushes: skip to_decimal's type checks.
        if type(value) is float:
            text = repr(value)
            if dialect.name == "sqlite" and "e" not in text and "n" not in text:
                # A finite repr without an exponent is already the Decimal's own text.
                return text
            d = Decimal(text)
        else:
            d = to_decimal(value)
        return str(d) if dialect.name == "sqlite" else d

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(str(value))


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps; naive ones are refused, since their zone is a guess."""

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__} {value!r}")
        if value.tzinfo is not dt.UTC:  # the usual case needs no conversion
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(
                    f"naive datetime {value.isoformat()}: pass a timezone-aware datetime"
                )
            value = value.astimezone(dt.UTC)
        # SQLite has no time zones: store the UTC wall time, re-attach UTC on read.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class PlainJSON(TypeDecorator[Any]):
    """JSON (JSONB on PostgreSQL) that converts values with `to_plain` before storing."""

    impl = JSON
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(none_as_null=True)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else to_plain(value)


# BIGINT ids on PostgreSQL (a live log grows for years); INTEGER on SQLite, where only
# "INTEGER PRIMARY KEY" is the auto-incrementing rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")


def _account_column() -> Mapped[int | None]:
    """The client account a row belongs to (accounts.id); NULL for the single-account daemon."""
    return mapped_column(Id, ForeignKey("accounts.id"), index=True)


def _one_of(column: str, values: tuple[str, ...] | type[enum.Enum], *, name: str | None = None):
    """CHECK that `column` holds one of `values` (or NULL), named for future migrations."""
    options = values if isinstance(values, tuple) else tuple(v.value for v in values)
    allowed = ", ".join(f"'{v}'" for v in options)
    return CheckConstraint(f"{column} IN ({allowed})", name=name or column)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class AccountRecord(Base):
    """A client account of the advisory platform: its broker account, the risk profile it
    trades and the suitability answers that put it there."""

    __tablename__ = "accounts"
    __table_args__ = (_one_of("status", ACCOUNT_STATUSES),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    broker_account_id: Mapped[str] = mapped_column(String(64), unique=True)
    # A profile name (conservative, balanced, aggressive) or the path of a config file.
    profile: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16))
    # The suitability assessment (answers, score) behind the profile, as given.
    suitability: Mapped[dict[str, Any] | None] = mapped_column(PlainJSON())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    # The account's Rebalancing API subscription, when its profile is managed there.
    subscription_id: Mapped[str | None] = mapped_column(String(64))


class RunRecord(Base):
    """One backtest, replay, paper or live session, with the config that produced it."""

    __tablename__ = "runs"
    __table_args__ = (_one_of("mode", RUN_MODES), _one_of("status", RUN_STATUSES))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str] = mapped_column(String(100))
    config_hash: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(PlainJSON())
    code_version: Mapped[str] = mapped_column(String(100))
    data_source: Mapped[str] = mapped_column(String(200))
    synthetic: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, Any] | None] = mapped_column(PlainJSON())
    # "host:pid:start" of the process that started it (bot.store.holder); NULL when no one
    # process holds it (a platform batch's run, shared by its workers)
    holder: Mapped[str | None] = mapped_column(String(200))


class RegimeRecord(Base):
    """A regime decision with the exact input values and their publication dates."""

    __tablename__ = "regime_decisions"
    __table_args__ = (_one_of("regime", Regime), Index(None, "run_id", "day"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    day: Mapped[dt.date] = mapped_column(Date)
    regime: Mapped[str] = mapped_column(String(16))
    vix: Mapped[float | None] = mapped_column(Double)
    vix_date: Mapped[dt.date | None] = mapped_column(Date)
    spread: Mapped[float | None] = mapped_column(Double)
    spread_date: Mapped[dt.date | None] = mapped_column(Date)
    uncertainty: Mapped[float | None] = mapped_column(Double)
    uncertainty_date: Mapped[dt.date | None] = mapped_column(Date)
    warning: Mapped[str | None] = mapped_column(Text)
    # Which regime rules fresh inputs decided and which kept the previous decision's
    # outcome ("uncertainty=no, transition=yes"), and the inputs missing or stale.
    decided_rules: Mapped[str | None] = mapped_column(Text)
    kept_rules: Mapped[str | None] = mapped_column(Text)
    stale_inputs: Mapped[str | None] = mapped_column(Text)


class TargetRecord(Base):
    """One asset's weight through each step of a rebalance, and why."""

    __tablename__ = "targets"
    __table_args__ = (Index(None, "run_id", "day"), Index(None, "run_id", "symbol"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    day: Mapped[dt.date] = mapped_column(Date)
    rebalance_id: Mapped[str] = mapped_column(String(100))
    symbol: Mapped[str] = mapped_column(String(32))
    baseline: Mapped[float] = mapped_column(Double)
    overlay: Mapped[float] = mapped_column(Double)
    final: Mapped[float] = mapped_column(Double)
    stop_price: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    reasons: Mapped[list[str]] = mapped_column(PlainJSON())
    trigger: Mapped[str] = mapped_column(String(100))


class RiskEventRecord(Base):
    """A risk rule that fired (or was skipped), with its inputs."""

    __tablename__ = "risk_events"
    __table_args__ = (Index(None, "run_id", "day"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    day: Mapped[dt.date] = mapped_column(Date)
    rule: Mapped[str] = mapped_column(String(100))
    symbol: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(100))
    inputs: Mapped[dict[str, Any]] = mapped_column(PlainJSON())


class OrderRecord(Base):
    """An order and its latest known state; the history is in `order_events`."""

    __tablename__ = "orders"
    __table_args__ = (
        _one_of("side", Side),
        _one_of("status", OrderStatus),
        Index(None, "run_id", "symbol"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    account_id: Mapped[int | None] = _account_column()
    client_order_id: Mapped[str] = mapped_column(String(128), unique=True)
    broker_order_id: Mapped[str | None] = mapped_column(String(128))
    rebalance_id: Mapped[str] = mapped_column(String(100))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    # Set for orders sent as a dollar amount; `quantity` is then the estimate at reference_price.
    notional: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    reference_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    status_message: Mapped[str | None] = mapped_column(Text)
    filled_quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    average_price: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    submitted_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class OrderEventRecord(Base):
    """One status change of an order, in the order it was recorded."""

    __tablename__ = "order_events"
    __table_args__ = (_one_of("status", OrderStatus),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(Id, ForeignKey("orders.id"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    message: Mapped[str | None] = mapped_column(Text)
    filled_quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal())


class FillRecord(Base):
    """One execution with its costs; `client_order_id` is repeated for easy joins with the broker."""

    __tablename__ = "fills"
    __table_args__ = (_one_of("side", Side), Index(None, "run_id", "symbol"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    account_id: Mapped[int | None] = _account_column()  # always its order's account
    order_id: Mapped[int] = mapped_column(Id, ForeignKey("orders.id"), index=True)
    client_order_id: Mapped[str] = mapped_column(String(128))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    price: Mapped[Decimal] = mapped_column(ExactDecimal())
    commission: Mapped[Decimal] = mapped_column(ExactDecimal())
    slippage_cost: Mapped[Decimal] = mapped_column(ExactDecimal())
    filled_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class EquityRecord(Base):
    """The account at one day's close; one row per run, account and day."""

    __tablename__ = "equity"
    __table_args__ = (
        _one_of("regime", Regime),
        # Two partial unique indexes, since NULLs never collide in a unique index: one row
        # per run and day for the single-account daemon, per run, account and day otherwise.
        Index(
            "ux_equity_run_id_day_single", "run_id", "day", unique=True,
            sqlite_where=text("account_id IS NULL"), postgresql_where=text("account_id IS NULL"),
        ),
        Index(
            "ux_equity_run_id_account_id_day", "run_id", "account_id", "day", unique=True,
            sqlite_where=text("account_id IS NOT NULL"),
            postgresql_where=text("account_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    account_id: Mapped[int | None] = _account_column()
    day: Mapped[dt.date] = mapped_column(Date)
    equity: Mapped[Decimal] = mapped_column(ExactDecimal())
    cash: Mapped[Decimal] = mapped_column(ExactDecimal())
    positions_value: Mapped[Decimal] = mapped_column(ExactDecimal())
    drawdown: Mapped[float] = mapped_column(Double)
    regime: Mapped[str | None] = mapped_column(String(16))


class PositionRecord(Base):
    """A position snapshot; several per day are allowed (the live daemon snapshots after each job)."""

    __tablename__ = "positions"
    __table_args__ = (Index(None, "run_id", "day"), Index(None, "run_id", "symbol"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    account_id: Mapped[int | None] = _account_column()
    day: Mapped[dt.date] = mapped_column(Date)
    symbol: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal())
    price: Mapped[Decimal] = mapped_column(ExactDecimal())
    market_value: Mapped[Decimal] = mapped_column(ExactDecimal())


class IncidentRecord(Base):
    """Something that went wrong; `run_id` is empty when it happened outside a run."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(Id, ForeignKey("runs.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any] | None] = mapped_column(PlainJSON())


class StrategyStateRecord(Base):
    """What a strategy instance must remember across restarts, written with its records."""

    __tablename__ = "strategy_state"
    __table_args__ = (_one_of("mode", RUN_MODES),)

    instance: Mapped[str] = mapped_column(Text, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    state: Mapped[dict[str, Any]] = mapped_column(PlainJSON())


class MacroObservationRecord(Base):
    """A cached macro data point (VIX, spread, ...), so the daemon needs no refetch after a restart."""

    __tablename__ = "macro_observations"

    series: Mapped[str] = mapped_column(Text, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    fetched_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class RebalancingPortfolioRecord(Base):
    """A profile's portfolio at Alpaca's Rebalancing API and the weights last pushed to it."""

    __tablename__ = "rebalancing_portfolios"

    profile: Mapped[str] = mapped_column(String(200), primary_key=True)
    portfolio_id: Mapped[str] = mapped_column(String(64), unique=True)
    weights: Mapped[dict[str, Any]] = mapped_column(PlainJSON())  # symbol (or CASH) -> percent
    decided_on: Mapped[dt.date | None] = mapped_column(Date)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class RebalancingRunRecord(Base):
    """A rebalancing run Alpaca made for an account, as its API reported it last."""

    __tablename__ = "rebalancing_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    alpaca_run_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int | None] = _account_column()  # NULL: not in the registry
    broker_account_id: Mapped[str] = mapped_column(String(64))
    portfolio_id: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    initiated_from: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    weights: Mapped[list[Any]] = mapped_column(PlainJSON())
    orders: Mapped[dict[str, Any] | None] = mapped_column(PlainJSON())  # placed, failed, skipped
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    completed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    canceled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class SweepRecord(Base):
    """A parameter sweep (`bot sweep`): the base config, the grid, how it ran and, once
    done, its ranking and walk-forward result. Each combination is a run of its own."""

    __tablename__ = "sweeps"
    __table_args__ = (_one_of("status", RUN_STATUSES), _one_of("record", SWEEP_RECORD_MODES))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(100))
    config_hash: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(PlainJSON())
    grid: Mapped[list[Any]] = mapped_column(PlainJSON())  # [[dotted key, [values...]], ...]
    metric: Mapped[str] = mapped_column(String(32))
    walk_forward: Mapped[str | None] = mapped_column(String(64))
    record: Mapped[str] = mapped_column(String(16))
    executor: Mapped[str] = mapped_column(String(200))
    code_version: Mapped[str] = mapped_column(String(100))
    data_source: Mapped[str] = mapped_column(String(200))
    synthetic: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(PlainJSON())


class SweepRunRecord(Base):
    """One combination of a sweep: its run in `runs`, its place in the grid, the values it
    set and, if it failed, why."""

    __tablename__ = "sweep_runs"
    __table_args__ = (UniqueConstraint("sweep_id", "position"),)

    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"), primary_key=True)
    sweep_id: Mapped[int] = mapped_column(Id, ForeignKey("sweeps.id"))
    position: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(PlainJSON())
    error: Mapped[str | None] = mapped_column(Text)


class ApiKeyRecord(Base):
    """A key of the allocation API (`bot api-keys`): its public id, an argon2 hash of the
    whole key (the key itself is shown once, at creation, and stored nowhere), an optional
    request budget per minute, and when it was revoked."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)  # the key's public part
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(Text)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)  # None: the server's default
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


PLATFORM_TASK_KINDS = ("rebalance", "close")
PLATFORM_TASK_STATUSES = ("pending", "running", "retrying", "done", "dead")


class PlatformDecisionRecord(Base):
    """One profile's targets of a platform batch (`bot run --platform`): decided once by
    the weekly decision and traded by every active account of the profile. The weights'
    reasons are in `targets` under the same run and rebalance id."""

    __tablename__ = "platform_decisions"
    __table_args__ = (UniqueConstraint("run_id", "profile"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    profile: Mapped[str] = mapped_column(String(200))
    day: Mapped[dt.date] = mapped_column(Date)  # the close the targets are decided on
    rebalance_id: Mapped[str] = mapped_column(String(100))
    config_hash: Mapped[str] = mapped_column(String(128))
    weights: Mapped[dict[str, Any]] = mapped_column(PlainJSON())  # symbol -> final weight
    stops: Mapped[dict[str, Any] | None] = mapped_column(PlainJSON())  # symbol -> stop or null
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class PlatformTaskRecord(Base):
    """One account's task of a platform batch, keyed by (run, account, kind, day): a task
    delivered again after it finished finds its row done and does nothing. `phase`
    'planned' means its orders are recorded and may be partly sent (a re-run sends the
    rest, looking each up first)."""

    __tablename__ = "platform_tasks"
    __table_args__ = (
        _one_of("kind", PLATFORM_TASK_KINDS),
        _one_of("status", PLATFORM_TASK_STATUSES),
        UniqueConstraint("run_id", "account_id", "kind", "day"),
        Index(None, "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(Id, ForeignKey("runs.id"))
    account_id: Mapped[int] = mapped_column(Id, ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    day: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)  # deliveries that started work
    retries: Mapped[int] = mapped_column(Integer)  # retries after a transient broker error
    claimed_by: Mapped[str | None] = mapped_column(String(200))  # the delivery's task id
    worker: Mapped[str | None] = mapped_column(String(200))  # the worker that claimed it last
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    outcome: Mapped[dict[str, Any] | None] = mapped_column(PlainJSON())
    error: Mapped[str | None] = mapped_column(Text)
