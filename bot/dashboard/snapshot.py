"""Everything the dashboard shows, read from the trade log in one pass.

The page and /api/summary both render this dict, so the JSON a script reads and the
numbers a person sees are the same values.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pandas as pd
import sqlalchemy as sa

from bot.errors import BotError
from bot.metrics import drawdown_series
from bot.store import queries
from bot.store.benchmark import RunMarket, covering
from bot.store.export import records
from bot.store.tradelog import TradeLog

LATEST_ROWS = 20  # trades and risk events shown
REGIME_ROWS = 12


@dataclass
class MarketCache:
    """SPY per run, loaded once: the data source of a finished day does not change."""

    load: Callable[[dict[str, Any], bool, str | None], RunMarket]
    _cache: dict[int, RunMarket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(
        self, run_id: int, config: dict[str, Any], synthetic: bool, data_source: str | None = None
    ) -> RunMarket:
        """`data_source` is the run's own (runs.data_source): read first, wherever the
        dashboard was started from."""
        with self._lock:
            if run_id not in self._cache:
                self._cache[run_id] = self.load(config, synthetic, data_source)
            return self._cache[run_id]


def _series_points(values: pd.Series) -> list[list[Any]]:
    return [[d.date().isoformat(), float(v)] for d, v in values.items()]


def _weights(conn: sa.Connection, run_id: int, account: int | None) -> dict[str, Any]:
    """Latest snapshot weights next to the latest targets, CASH included."""
    held = queries.positions(conn, queries.Filters(run=run_id, account=account)).frame()
    own = None if account is None else _profile_decision(conn, run_id, account)
    if own is not None:  # a platform batch: the account's profile's decision, not the last one's
        target, targets_day = own
    else:
        targets = queries.latest_targets(conn, run_id).frame()
        target = {r.symbol: float(r.final) for r in targets.itertuples()}
        targets_day = targets["day"].iloc[0] if not targets.empty else None
    snapshot_day = held["day"].iloc[0] if not held.empty else None
    cash_weight = None
    if snapshot_day is not None:
        row = conn.execute(
            sa.select(queries.EQUITY.c.cash, queries.EQUITY.c.equity).where(
                queries.EQUITY.c.run_id == run_id,
                queries.EQUITY.c.day == snapshot_day,
                queries.EQUITY.c.account_id.is_not_distinct_from(account),
            )
        ).first()
        if row is not None and row.equity:
            cash_weight = float(row.cash / row.equity)
    current = {r.symbol: r.weight for r in held.itertuples()}
    symbols = list(dict.fromkeys([*target, *current]))
    rows = [{"symbol": s, "current": current.get(s, 0.0 if snapshot_day else None),
             "target": target.get(s)} for s in symbols]
    if symbols:
        target_cash = 1.0 - sum(target.values()) if target else None
        rows.append({"symbol": "CASH", "current": cash_weight, "target": target_cash})
    return {
        "as_of": snapshot_day.isoformat() if snapshot_day is not None else None,
        "targets_day": targets_day.isoformat() if targets_day is not None else None,
        "rows": rows,
    }


def _profile_decision(
    conn: sa.Connection, run_id: int, account: int
) -> tuple[dict[str, float], dt.date | None] | None:
    """The targets the account's profile decided in run `run_id` if it is a platform
    batch (which records every profile's under one run and day), with their day: none
    if its profile has no decision there (it failed, or the account moved to another
    profile since), never another profile's; None for any other run."""
    from bot.platform.store import decisions_of

    decided = decisions_of(conn, run_id)
    if not decided:
        return None
    accounts = queries.METADATA.tables["accounts"]
    profile = conn.execute(sa.select(accounts.c.profile).where(accounts.c.id == account)).scalar()
    found = decided.get(profile)
    return ({}, None) if found is None else (found.weights, found.day)


def collect(
    log: TradeLog, run: int | None, markets: MarketCache, account: int | None = None
) -> dict[str, Any]:
    """The dashboard's data for `run` (None: the latest run, so a new run is followed),
    of one client account if `account` (accounts.id) is given: its equity, trades,
    orders and weights; regimes and risk events belong to the run."""
    with log.engine.connect() as conn:
        run_id = run if run is not None else queries.latest_run(conn, account)
        queries.require_run(conn, run_id)
        info = conn.execute(sa.select(queries.RUNS).where(queries.RUNS.c.id == run_id)).one()
        everything = queries.Filters(run=run_id, account=account)
        equity = queries.equity(conn, everything).frame()
        if account is None and equity["account_id"].notna().any():
            raise BotError(
                f"run {run_id} holds the records of several client accounts: "
                "show one with --account ID"
            )
        fills = queries.FILLS
        counted = sa.select(sa.func.count()).where(fills.c.run_id == run_id)
        if account is not None:
            counted = counted.where(fills.c.account_id == account)
        trade_count = conn.execute(counted).scalar_one()
        trades = queries.trades(conn, replace(everything, limit=LATEST_ROWS)).frame()
        open_orders = queries.orders(conn, everything, status="open").frame()
        risk = queries.risk_events(conn, queries.Filters(run=run_id, limit=LATEST_ROWS)).frame()
        regimes = queries.regimes(conn, queries.Filters(run=run_id, limit=REGIME_ROWS)).frame()
        weights = _weights(conn, run_id, account)
        alive = queries.liveness(conn, run_id)

    summary: dict[str, Any] = {
        "run": {
            "id": run_id, "mode": info.mode, "strategy": info.strategy, "status": info.status,
            "data_source": info.data_source, "synthetic": bool(info.synthetic),
            "started_at": info.started_at.isoformat(), "code_version": info.code_version,
            # as `bot runs` shows it: a killed run stays 'running' with no one behind it
            "process": alive.process,
            "heartbeat_at": None if alive.heartbeat_at is None else alive.heartbeat_at.isoformat(),
            "heartbeat_stale": alive.heartbeat_stale,
            "doubtful": alive.doubtful,  # gone or silent: the page's banner reads this
        },
        "account": account,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "trade_count": int(trade_count),
        "open_order_count": len(open_orders),
        "weights": weights,
        "open_orders": records(open_orders.drop(columns=["run_id", "status_message"])),
        "trades": records(trades.drop(columns=["run_id", "account_id"])),
        "risk_events": records(risk.drop(columns=["run_id"])),
        "regimes": records(regimes.drop(columns=["run_id"])),
        "equity": None,
        "benchmark": None,
    }
    if equity.empty:
        return summary
    curve = pd.Series(
        [float(v) for v in equity["equity"]], index=pd.DatetimeIndex(equity["day"]), name="equity"
    )
    last: Decimal = equity["equity"].iloc[-1]
    dd = drawdown_series(curve)  # from this run's own highest equity
    # as recorded: from the strategy's all-time high-water mark, earlier runs included
    all_time = pd.Series([float(v) for v in equity["drawdown"]], index=curve.index)
    summary["equity"] = {
        "day": equity["day"].iloc[-1].isoformat(),
        "latest": str(last),
        "cash": str(equity["cash"].iloc[-1]),
        "first": str(equity["equity"].iloc[0]),
        "total_return": float(curve.iloc[-1] / curve.iloc[0] - 1.0),
        "drawdown": float(dd.iloc[-1]),
        "max_drawdown": float(dd.min()),
        # The one the drawdown defence measures from (bot equity shows it): a run that
        # resumed a strategy below its old peak starts its own drawdown at 0.
        "drawdown_all_time": float(all_time.iloc[-1]),
        "max_drawdown_all_time": float(all_time.min()),
        "drawdown_all_time_curve": _series_points(all_time),
        "regime": _label(equity["regime"].iloc[-1]),
        "curve": _series_points(curve),
        "drawdown_curve": _series_points(dd),
        "regime_days": [
            [d.isoformat(), _label(r)] for d, r in zip(equity["day"], equity["regime"], strict=True)
        ],
    }
    summary["benchmark"] = _benchmark(markets.get(run_id, info.config or {}, bool(info.synthetic), info.data_source), curve)
    return summary


def _label(value: Any) -> str | None:
    """A regime label, or None for days before the first decision (NULL read as NaN)."""
    return value if isinstance(value, str) else None


def _benchmark(market: RunMarket, curve: pd.Series) -> dict[str, Any]:
    """SPY rebased to the run's first equity, or the reason it is missing."""
    spy, note = covering(market.spy, pd.DatetimeIndex(curve.index))
    if spy is None:
        return {"name": "SPY", "note": note or market.note or "SPY unavailable", "curve": []}
    # carried over holes inside SPY's data only: past its last day it would look flat
    # while the run's equity moved (the note says where SPY ends)
    aligned = spy.reindex(spy.index.union(curve.index)).ffill(limit_area="inside")
    aligned = aligned.reindex(curve.index).dropna()
    rebased = aligned / aligned.iloc[0] * curve.loc[aligned.index[0]]
    return {
        "name": "SPY",
        "label": market.label,
        "note": note,
        "total_return": float(aligned.iloc[-1] / aligned.iloc[0] - 1.0),
        "curve": _series_points(rebased),
        "drawdown_curve": _series_points(drawdown_series(rebased)),
    }
