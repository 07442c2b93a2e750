"""Trade-log schema: one set of tables for backtests and live trading.

The live daemon needs this schema unchanged, so it records what an audit needs
(exact money, aware timestamps, the inputs behind every decision), not what a
backtest report happens to print.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
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
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
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
        return self.bind_many((value,), dialect)[0]

    def bind_many(self, values: Iterable[Any], dialect: Dialect) -> list[Any]:
        """What process_bind_param gives for each of `values`, in one loop: the trade
        log's bulk writes (bot.store.bulk) convert a whole column, about 100,000 numbers
        in a 15-year backtest, and a call per value cost more than the conversion."""
        sqlite = dialect.name == "sqlite"
        out: list[Any] = []
        for value in values:
            if value is None:
                out.append(None)
                continue
            # Floats are nearly every value a backtest flushes: skip to_decimal's checks.
            if type(value) is float:
                text = repr(value)
                if sqlite and "e" not in text and "n" not in text:
                    # A finite repr without an exponent is already the Decimal's own text.
                    out.append(text)
                    continue
                d = Decimal(text)
            else:
                d = to_decimal(value)
            out.append(str(d) if sqlite else d)
        return out

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


def _label(sqlite_length: int) -> TypeEngine:
    """A run's free-text label (strategy name, data source): TEXT on PostgreSQL, where a
    long CSV path passed VARCHAR(200) and the run could not start (migration 0018); on
    SQLite, which enforces no length, the VARCHAR its tables were made with."""
    return Text().with_variant(String(sqlite_length), "sqlite")


def _id_column() -> Column[int]:
    """A row's id: auto-incrementing, BIGINT on PostgreSQL and the rowid on SQLite."""
    return Column("id", Id, primary_key=True)


def _run_column() -> Column[int]:
    """The run a row was recorded by (runs.id)."""
    return Column("run_id", Id, ForeignKey("runs.id"), nullable=False)


def _account_column() -> Column[int]:
    """The client account a row belongs to (accounts.id); NULL for the single-account daemon."""
    return Column("account_id", Id, ForeignKey("accounts.id"), index=True)


def _one_of(column: str, values: tuple[str, ...] | type[enum.Enum], *, name: str | None = None):
    """CHECK that `column` holds one of `values` (or NULL), named for future migrations."""
    options = values if isinstance(values, tuple) else tuple(v.value for v in values)
    allowed = ", ".join(f"'{v}'" for v in options)
    return CheckConstraint(f"{column} IN ({allowed})", name=name or column)


# Every table of the trade log. Core tables, not ORM classes: the code reads and writes
# rows with SQL expressions and never maps objects, and importing sqlalchemy.orm and
# declaring classes cost about 0.1 s on every command (`bot orders` included).
# Columns are NOT NULL unless they say nullable; the names of indexes and constraints
# follow this convention (the migrations use the same names).
METADATA = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


# A client account of the advisory platform: its broker account, the risk profile it trades and
# the suitability answers that put it there.
ACCOUNTS = Table(
    "accounts",
    METADATA,
    _id_column(),
    Column("broker_account_id", String(64), unique=True, nullable=False),
    # A profile name (conservative, balanced, aggressive) or the path of a config file.
    Column("profile", String(200), index=True, nullable=False),
    Column("status", String(16), nullable=False),
    # The suitability assessment (answers, score) behind the profile, as given.
    Column("suitability", PlainJSON()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("closed_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    # The account's Rebalancing API subscription, when its profile is managed there.
    Column("subscription_id", String(64)),
    _one_of("status", ACCOUNT_STATUSES),
)


# One backtest, replay, paper or live session, with the config that produced it.
RUNS = Table(
    "runs",
    METADATA,
    _id_column(),
    Column("mode", String(16), nullable=False),
    Column("strategy", _label(100), nullable=False),
    Column("config_hash", String(128), nullable=False),
    Column("config", PlainJSON(), nullable=False),
    Column("code_version", String(100), nullable=False),
    Column("data_source", _label(200), nullable=False),
    Column("synthetic", Boolean, nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("status", String(16), nullable=False),
    Column("summary", PlainJSON()),
    # "host:pid:start" of the process that started it (bot.store.holder); NULL when no one
    # process holds it (a platform batch's run, shared by its workers)
    Column("holder", String(200)),
    # its holder's last sign of life (bot.store.heartbeat); NULL where no one process
    # holds it, or for a run recorded before heartbeats
    Column("heartbeat_at", UtcDateTime()),
    _one_of("mode", RUN_MODES),
    _one_of("status", RUN_STATUSES),
    # what every beat and every run's start look up: the running runs of a holder
    Index(
        "ix_runs_running_holder", "holder",
        sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'"),
    ),
)


# A regime decision with the exact input values and their publication dates.
REGIME_DECISIONS = Table(
    "regime_decisions",
    METADATA,
    _id_column(),
    _run_column(),
    Column("day", Date, nullable=False),
    Column("regime", String(16), nullable=False),
    Column("vix", Double),
    Column("vix_date", Date),
    Column("spread", Double),
    Column("spread_date", Date),
    Column("uncertainty", Double),
    Column("uncertainty_date", Date),
    Column("warning", Text),
    # Which regime rules fresh inputs decided and which kept the previous decision's
    # outcome ("uncertainty=no, transition=yes"), and the inputs missing or stale.
    Column("decided_rules", Text),
    Column("kept_rules", Text),
    Column("stale_inputs", Text),
    _one_of("regime", Regime), Index(None, "run_id", "day"),
)


# One asset's weight through each step of a rebalance, and why.
TARGETS = Table(
    "targets",
    METADATA,
    _id_column(),
    _run_column(),
    Column("day", Date, nullable=False),
    Column("rebalance_id", String(100), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("baseline", Double, nullable=False),
    Column("overlay", Double, nullable=False),
    Column("final", Double, nullable=False),
    Column("stop_price", ExactDecimal()),
    Column("reasons", PlainJSON(), nullable=False),
    Column("trigger", Text, nullable=False),  # a sentence: no length a writer must know
    Index(None, "run_id", "day"),
    Index(None, "run_id", "symbol"),
)


# A risk rule that fired (or was skipped), with its inputs.
RISK_EVENTS = Table(
    "risk_events",
    METADATA,
    _id_column(),
    _run_column(),
    Column("day", Date, nullable=False),
    Column("rule", String(100), nullable=False),
    Column("symbol", String(32)),
    Column("action", Text, nullable=False),  # a sentence: no length a writer must know
    Column("inputs", PlainJSON(), nullable=False),
    Index(None, "run_id", "day"),
)


# An order and its latest known state; the history is in `order_events`.
ORDERS = Table(
    "orders",
    METADATA,
    _id_column(),
    _run_column(),
    _account_column(),
    Column("client_order_id", String(128), unique=True, nullable=False),
    Column("broker_order_id", String(128)),
    Column("rebalance_id", String(100), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("quantity", ExactDecimal(), nullable=False),
    # Set for orders sent as a dollar amount; `quantity` is then the estimate at reference_price.
    Column("notional", ExactDecimal()),
    Column("reference_price", ExactDecimal(), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("status_message", Text),
    Column("filled_quantity", ExactDecimal(), nullable=False),
    Column("average_price", ExactDecimal()),
    Column("submitted_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    _one_of("side", Side),
    _one_of("status", OrderStatus),
    Index(None, "run_id", "symbol"),
    Index(None, "status"),
)


# One status change of an order, in the order it was recorded.
ORDER_EVENTS = Table(
    "order_events",
    METADATA,
    _id_column(),
    Column("order_id", Id, ForeignKey("orders.id"), index=True, nullable=False),
    Column("status", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("message", Text),
    Column("filled_quantity", ExactDecimal()),
    _one_of("status", OrderStatus),
)


# One execution with its costs; `client_order_id` is repeated for easy joins with the broker.
FILLS = Table(
    "fills",
    METADATA,
    _id_column(),
    _run_column(),
    _account_column(),  # always its order's account
    Column("order_id", Id, ForeignKey("orders.id"), index=True, nullable=False),
    Column("client_order_id", String(128), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("quantity", ExactDecimal(), nullable=False),
    Column("price", ExactDecimal(), nullable=False),
    Column("commission", ExactDecimal(), nullable=False),
    Column("slippage_cost", ExactDecimal(), nullable=False),
    Column("filled_at", UtcDateTime(), nullable=False),
    _one_of("side", Side), Index(None, "run_id", "symbol"),
)


# The account at one day's close; one row per run, account and day.
EQUITY = Table(
    "equity",
    METADATA,
    _id_column(),
    _run_column(),
    _account_column(),
    Column("day", Date, nullable=False),
    Column("equity", ExactDecimal(), nullable=False),
    Column("cash", ExactDecimal(), nullable=False),
    Column("positions_value", ExactDecimal(), nullable=False),
    Column("drawdown", Double, nullable=False),
    Column("regime", String(16)),
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
    # For readers joining a run's snapshots to its equity whatever the account: the
    # partial indexes above cannot serve `account_id IS account_id`, and SQLite then
    # scanned every run's single-account rows through the account index (bot positions
    # and the dashboard slowed with each run stored: 5 s after one backtest, 54 s later).
    Index(None, "run_id", "day"),
)


# A position snapshot; several per day are allowed (the live daemon snapshots after each job).
POSITIONS = Table(
    "positions",
    METADATA,
    _id_column(),
    _run_column(),
    _account_column(),
    Column("day", Date, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("quantity", ExactDecimal(), nullable=False),
    Column("price", ExactDecimal(), nullable=False),
    Column("market_value", ExactDecimal(), nullable=False),
    Index(None, "run_id", "day"),
    Index(None, "run_id", "symbol"),
)


# Something that went wrong; `run_id` is empty when it happened outside a run.
INCIDENTS = Table(
    "incidents",
    METADATA,
    _id_column(),
    Column("run_id", Id, ForeignKey("runs.id"), index=True),
    Column("at", UtcDateTime(), index=True, nullable=False),
    Column("kind", String(100), nullable=False),
    Column("message", Text, nullable=False),
    Column("context", PlainJSON()),
)


# What a strategy instance must remember across restarts, written with its records.
STRATEGY_STATE = Table(
    "strategy_state",
    METADATA,
    Column("instance", Text, primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("state", PlainJSON(), nullable=False),
    _one_of("mode", RUN_MODES),
)


# A cached macro data point (VIX, spread, ...), so the daemon needs no refetch after a restart.
MACRO_OBSERVATIONS = Table(
    "macro_observations",
    METADATA,
    Column("series", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("value", Double, nullable=False),
    Column("fetched_at", UtcDateTime(), nullable=False),
)


# A profile's portfolio at Alpaca's Rebalancing API and the weights last pushed to it.
REBALANCING_PORTFOLIOS = Table(
    "rebalancing_portfolios",
    METADATA,
    Column("profile", String(200), primary_key=True),
    Column("portfolio_id", String(64), unique=True, nullable=False),
    Column("weights", PlainJSON(), nullable=False),  # symbol (or CASH) -> percent
    Column("decided_on", Date),
    Column("updated_at", UtcDateTime(), nullable=False),
)


# A rebalancing run Alpaca made for an account, as its API reported it last.
REBALANCING_RUNS = Table(
    "rebalancing_runs",
    METADATA,
    _id_column(),
    Column("alpaca_run_id", String(64), unique=True, nullable=False),
    _account_column(),  # NULL: not in the registry
    Column("broker_account_id", String(64), nullable=False),
    Column("portfolio_id", String(64)),
    Column("type", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("initiated_from", String(16)),
    Column("reason", Text),
    Column("weights", PlainJSON(), nullable=False),
    Column("orders", PlainJSON()),  # placed, failed, skipped
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("completed_at", UtcDateTime()),
    Column("canceled_at", UtcDateTime()),
    Column("recorded_at", UtcDateTime(), nullable=False),
)


# A parameter sweep (`bot sweep`): the base config, the grid, how it ran and, once done, its
# ranking and walk-forward result. Each combination is a run of its own.
SWEEPS = Table(
    "sweeps",
    METADATA,
    _id_column(),
    Column("strategy", _label(100), nullable=False),
    Column("config_hash", String(128), nullable=False),
    Column("config", PlainJSON(), nullable=False),
    Column("grid", PlainJSON(), nullable=False),  # [[dotted key, [values...]], ...]
    Column("metric", String(32), nullable=False),
    Column("walk_forward", String(64)),
    Column("record", String(16), nullable=False),
    Column("executor", String(200), nullable=False),
    Column("code_version", String(100), nullable=False),
    Column("data_source", _label(200), nullable=False),
    Column("synthetic", Boolean, nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("status", String(16), nullable=False),
    Column("result", PlainJSON()),
    _one_of("status", RUN_STATUSES),
    _one_of("record", SWEEP_RECORD_MODES),
)


# One combination of a sweep: its run in `runs`, its place in the grid, the values it set and, if
# it failed, why.
SWEEP_RUNS = Table(
    "sweep_runs",
    METADATA,
    Column("run_id", Id, ForeignKey("runs.id"), primary_key=True),
    Column("sweep_id", Id, ForeignKey("sweeps.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("params", PlainJSON(), nullable=False),
    Column("error", Text),
    UniqueConstraint("sweep_id", "position"),
)


# A key of the allocation API (`bot api-keys`): its public id, an argon2 hash of the whole key
# (the key itself is shown once, at creation, and stored nowhere), an optional request budget per
# minute, when it was revoked, and whether it reads every client account or only those listed
# in api_key_accounts.
API_KEYS = Table(
    "api_keys",
    METADATA,
    _id_column(),
    Column("key_id", String(32), unique=True, nullable=False),  # the key's public part
    Column("name", String(100), nullable=False),
    Column("key_hash", Text, nullable=False),
    Column("rate_per_minute", Integer),  # None: the server's default
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime()),
    # False: the key reads only its api_key_accounts; keys made before scopes read all.
    Column("all_accounts", Boolean, nullable=False, server_default=true()),
)

# The client accounts a scoped API key may read (`bot api-keys create --account`).
API_KEY_ACCOUNTS = Table(
    "api_key_accounts",
    METADATA,
    Column("api_key_id", Id, ForeignKey("api_keys.id"), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), primary_key=True),
)


PLATFORM_TASK_KINDS = ("rebalance", "close")
PLATFORM_TASK_STATUSES = ("pending", "running", "retrying", "done", "dead")


# One profile's targets of a platform batch (`bot run --platform`): decided once by the weekly
# decision and traded by every active account of the profile. The weights' reasons are in
# `targets` under the same run and rebalance id.
PLATFORM_DECISIONS = Table(
    "platform_decisions",
    METADATA,
    _id_column(),
    _run_column(),
    Column("profile", String(200), nullable=False),
    Column("day", Date, nullable=False),  # the close the targets are decided on
    Column("rebalance_id", String(100), nullable=False),
    Column("config_hash", String(128), nullable=False),
    Column("weights", PlainJSON(), nullable=False),  # symbol -> final weight
    Column("stops", PlainJSON()),  # symbol -> stop or null
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("run_id", "profile"),
)


# A platform batch: the run that decided `day`'s close in `mode`, one per (day, mode). Written
# in the batch's own transaction (with its decisions and task rows), so a second delivery of
# the weekly decision deciding the same day at the same time cannot commit a second batch.
# A row without a run is a decision published and not yet taken by a worker (`published_at`):
# the batch's claim fills in its run.
PLATFORM_BATCHES = Table(
    "platform_batches",
    METADATA,
    _id_column(),
    Column("run_id", Id, ForeignKey("runs.id"), unique=True),
    Column("day", Date, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime()),
    _one_of("mode", RUN_MODES),
    UniqueConstraint("day", "mode"),
)


# One account's task of a platform batch, keyed by (run, account, kind, day): a task delivered
# again after it finished finds its row done and does nothing. `phase` 'planned' means its orders
# are recorded and may be partly sent (a re-run sends the rest, looking each up first).
PLATFORM_TASKS = Table(
    "platform_tasks",
    METADATA,
    _id_column(),
    _run_column(),
    Column("account_id", Id, ForeignKey("accounts.id"), index=True, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("day", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("phase", String(16)),
    Column("attempts", Integer, nullable=False),  # deliveries that started work
    Column("retries", Integer, nullable=False),  # retries after a transient broker error
    Column("claimed_by", String(200)),  # the delivery's task id
    Column("worker", String(200)),  # the worker that claimed it last
    Column("claimed_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
    Column("outcome", PlainJSON()),
    Column("error", Text),
    _one_of("kind", PLATFORM_TASK_KINDS),
    _one_of("status", PLATFORM_TASK_STATUSES),
    UniqueConstraint("run_id", "account_id", "kind", "day"),
    Index(None, "run_id", "status"),
)
