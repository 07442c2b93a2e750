"""`bot report --run ID`: the backtest report rebuilt from what a run stored.

Replay, paper and live runs have no in-memory result, only their trade log, so the
equity, fills, regimes and position snapshots are read back and fed to the same
bot.report functions; SPY over the same dates is the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from bot.data.base import RISK_FREE
from bot.decay import decay_section
from bot.errors import BotError
from bot.metrics import drawdown_series, drawdowns_differ, risk_free_gap_note
from bot.report import RunSeries, build_report
from bot.store.benchmark import RunMarket, covering, load_run_market
from bot.store.engines import mask_url
from bot.store.queries import RUNS, require_run, resolve_account, run_accounts
from bot.store.tradelog import TradeLog

BENCHMARK_NAME = "SPY (buy and hold, no costs)"


@dataclass
class StoredReport:
    report: dict[str, Any]
    strategy: RunSeries
    benchmarks: list[RunSeries]
    notes: list[str]
    risk_free: pd.Series | None = None  # the run's T-bill series, for the tearsheet's Sharpe
    account: int | None = None  # the client account reported (accounts.id), if the run has one


def run_row(log: TradeLog, run_id: int) -> dict[str, Any]:
    with log.engine.connect() as conn:
        require_run(conn, run_id)
        row = conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
    return dict(row._mapping)


def _account_names(accounts: dict[int | None, str | None]) -> str:
    """'1 (acct-a), 2 (acct-b)': the accounts of a run, for an error."""
    return ", ".join(
        "none (rows without an account)" if a is None else f"{a} ({broker})" if broker else str(a)
        for a, broker in accounts.items()
    )


def run_account(log: TradeLog, run_id: int, account: str | None = None) -> int | None:
    """The one client account of run `run_id` to read (accounts.id; None: the rows without
    one): `account` (its id or broker account id) if given, else the run's only one.

    A platform batch records several accounts in one run; read together, one account's
    holdings were weighed against another's equity and their equity rows (one per account
    and day) broke the report, so a run of several accounts needs --account."""
    with log.engine.connect() as conn:
        require_run(conn, run_id)
        accounts = run_accounts(conn, run_id)
        chosen = None if account is None else resolve_account(conn, account)
    if account is not None:
        if chosen not in accounts:
            raise BotError(
                f"--account {account}: run {run_id} has no records of account {chosen}; "
                f"expected one of its accounts: {_account_names(accounts) or 'none'}"
            )
        return chosen
    if len(accounts) > 1:
        raise BotError(
            f"run {run_id} holds the records of several client accounts "
            f"({_account_names(accounts)}): choose one with --account ID"
        )
    return next(iter(accounts), None)


def daily_weights(
    equity: pd.DataFrame, positions: pd.DataFrame, closes: pd.DataFrame | None
) -> pd.DataFrame | None:
    """End-of-day weights per symbol plus CASH, from the position snapshots.

    A snapshot lists all holdings of its day, and holdings change only on snapshot days,
    so quantities carry forward; they are valued at the daily closes when those cover
    the run, else at the snapshot prices (weights then move only on snapshot days).
    """
    if positions.empty or equity.empty:
        return None
    days = pd.DatetimeIndex(equity.index)
    snap_days = pd.DatetimeIndex(sorted(set(positions["day"])))

    def carried(column: str) -> pd.DataFrame:
        table = positions.pivot_table(index="day", columns="symbol", values=column, aggfunc="last")
        table = table.reindex(snap_days).fillna(0.0)
        return table.reindex(days.union(snap_days)).ffill().reindex(days).fillna(0.0)

    quantity = carried("quantity")
    symbols = list(quantity.columns)
    usable = (
        closes is not None
        and set(symbols) <= set(closes.columns)
        and not closes.empty
        and closes.index[-1] >= days[-1]
    )
    if usable:
        assert closes is not None
        prices = closes[symbols].reindex(closes.index.union(days)).ffill().reindex(days)
        values = (quantity * prices.fillna(0.0)).where(quantity != 0.0, 0.0)
    else:
        values = carried("market_value")
    weights = values.div(equity["equity"], axis=0)
    weights["CASH"] = equity["cash"] / equity["equity"]
    return weights


def all_time_drawdown_note(equity: pd.DataFrame) -> str | None:
    """When the stored drawdown differs from the run's own: the report's max DD and
    drawdown chart are the run's, from the highest equity it recorded, while the stored
    one (`bot equity`) is from the strategy's all-time peak, earlier runs included, which
    its drawdown defence measures from. A run that resumed below an old peak would
    otherwise show a small drawdown with no word of the larger one the guard acts on."""
    own = drawdown_series(equity["equity"])
    stored = -equity["drawdown"]
    if not drawdowns_differ(own, stored):
        return None
    return (
        f"max DD and the drawdown chart are this run's, from the highest equity it recorded "
        f"({own.min() * 100:.2f}% at worst); the trade log's drawdown (`bot equity`) is from "
        f"the strategy's all-time peak, earlier runs included, the one its drawdown defence "
        f"measures from: {stored.iloc[-1] * 100:.2f}% on the last day, "
        f"{stored.min() * 100:.2f}% at worst."
    )


def _sweep_hint(log: TradeLog, run_id: int) -> str:
    """Why a sweep's run has no days: `bot sweep` keeps only its summary by default."""
    import shlex

    from bot.store.sweeps import sweep_of_run
    from bot.sweep.grid import format_value

    found = sweep_of_run(log.engine, run_id)
    if found is None:
        return ""
    sweep_id, params = found
    sets = " ".join(
        f"--set {shlex.quote(f'{key}={format_value(value)}')}" for key, value in params.items()
    )
    return (
        f" (a combination of sweep {sweep_id}, which kept its summary only: run "
        f"`bot backtest {sets}` with the sweep's options, or the sweep with --record full)"
    )


def build_stored_report(
    log: TradeLog, run_id: int, *, config_path: Path, database: str,
    market: RunMarket | None = None, account: str | None = None,
) -> StoredReport:
    """Everything `bot report` shows and saves, for run `run_id` of `log`: of its one
    client account, or of `account` (an id or broker account id) in a run of several."""
    run = run_row(log, run_id)
    account_id = run_account(log, run_id, account)
    equity = log.load_equity(run_id, account_id)
    if equity.empty:
        raise BotError(f"run {run_id} has no equity points yet: nothing to report{_sweep_hint(log, run_id)}")
    market = market or load_run_market(
        run["config"] or {}, bool(run["synthetic"]), config_path, data_source=run["data_source"]
    )
    notes = [] if market.note is None else [f"SPY benchmark left out: {market.note}"]
    if market.substitute is not None:
        notes.append(market.substitute)
    days = pd.DatetimeIndex(equity.index)
    if market.risk_free is None:
        notes.append(_risk_free_note(market))
    elif (late := risk_free_gap_note(market.risk_free, days[0])) is not None:
        notes.append(late)
    peak_note = all_time_drawdown_note(equity)
    if peak_note:
        notes.append(peak_note)
    spy, coverage = covering(market.spy, days)
    if coverage:
        notes.append(f"SPY benchmark: {coverage}")

    regimes = equity["regime"].where(equity["regime"].notna(), None)
    of_account = "" if account_id is None else f", account {account_id}"
    strategy = RunSeries(
        f"{run['strategy']} (run {run_id}{of_account}, {run['mode']})",
        equity["equity"],
        fills=log.load_fills(run_id, account_id),
        weights=daily_weights(equity, log.load_positions(run_id, account_id), market.closes),
        regimes=regimes if regimes.notna().any() else None,
    )
    benchmarks = [RunSeries(BENCHMARK_NAME, spy)] if spy is not None else []
    periods = _periods(run["config"] or {})
    report = build_report(
        strategy,
        benchmarks,
        risk_free=market.risk_free,
        market=spy,
        periods=periods,
        data_label=_data_label(run),
        synthetic=bool(run["synthetic"]),
        meta={
            "run_id": run_id,
            "account": account_id,
            "mode": run["mode"],
            "status": run["status"],
            "config_hash": run["config_hash"],
            "code_version": run["code_version"],
            "database": mask_url(database),
            "source": "trade log",
            "benchmark": (market.label if spy is not None else None),
            "notes": notes,
        },
        sections={"decay": _decay(run["config"] or {}, market, strategy, days)},
        strategy_kind=_strategy_kind(run["config"] or {}),
    )
    return StoredReport(report, strategy, benchmarks, notes, market.risk_free, account_id)


def _decay(
    config: dict[str, Any], market: RunMarket, strategy: RunSeries, days: pd.DatetimeIndex
) -> dict[str, Any] | None:
    """The volatility-decay table of the run's universe (as its stored config has it)."""
    from bot.config import parse_settings

    try:
        universe = parse_settings(config, "runs.config").universe
    except BotError:
        return None
    return decay_section(market.closes, universe, strategy.regimes, _every_session(days),
                         market.risk_free)


def _every_session(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Every exchange session from the run's first day to its last: a live run missing
    some closes (a close job that failed, a close skipped) would otherwise count the
    returns over those gaps as one day's, inflating the decay and the gap."""
    from bot.calendar import sessions

    if len(days) < 2:
        return days
    try:
        every = pd.DatetimeIndex(sessions(days[0].date(), days[-1].date()))
    except Exception:  # noqa: BLE001 - a span outside the calendar: the run's own days
        return days
    return every.union(days)


def _risk_free_note(market: RunMarket) -> str:
    """Why Sharpe and Sortino are computed against 0%: said, since they differ from the
    backtest's own report, which had the T-bill rate."""
    where = f"not in {market.label}" if market.label else "no market data for the run"
    return f"risk-free rate ({RISK_FREE}) missing: {where}; Sharpe and Sortino assume 0%"


def _data_label(run: dict[str, Any]) -> str:
    """The run's data source, marked SYNTHETIC loudly when it was (render_table looks for it)."""
    label = str(run["data_source"])
    return f"SYNTHETIC {label}" if run["synthetic"] and "SYNTHETIC" not in label.upper() else label


def _strategy_kind(config: dict[str, Any]) -> str:
    """The stored config's strategy kind (which research claims the report shows)."""
    kind = (config.get("strategy") or {}).get("kind")
    return kind if isinstance(kind, str) else "leverage"


def _periods(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    periods = (config.get("backtest") or {}).get("periods") or []
    return [tuple(p) for p in periods if isinstance(p, list | tuple) and len(p) == 3]
