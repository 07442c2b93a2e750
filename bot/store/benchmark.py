"""Market data to judge a stored run by: SPY, the T-bill rate and the universe's closes.

They come from the run's own data source (its stored config), so a synthetic run is
compared with the same synthetic market and a real one with real prices, never a mix.
When that is impossible the reason is returned instead, for the report to print.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import structlog

from bot.errors import BotError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunMarket:
    """SPY closes, the risk-free series and the closes of the run's symbols; or why not."""

    spy: pd.Series | None
    risk_free: pd.Series | None
    closes: pd.DataFrame | None
    label: str | None
    note: str | None = None  # why there is no SPY benchmark
    # the data is not the folder the run read (gone since): the report says so
    substitute: str | None = None


def _unavailable(note: str) -> RunMarket:
    return RunMarket(None, None, None, None, note)


def recorded_data_dir(data_source: str | None) -> Path | None:
    """The CSV directory a run recorded in runs.data_source ('csv:/abs/dir'), if it is
    still there. A relative one is ignored: it was relative to a directory not recorded."""
    if not data_source or not data_source.startswith("csv:"):
        return None
    path = Path(data_source.removeprefix("csv:"))
    return path if path.is_absolute() and (path / "prices").is_dir() else None


def load_run_market(
    config: dict[str, Any], synthetic: bool, config_path: Path, data_source: str | None = None
) -> RunMarket:
    """Load through bot.data.history with the run's validated settings.

    The directory the run itself read (`data_source`, its runs.data_source) comes first,
    so the report does not depend on where it is asked from. Without it, relative data
    directories are anchored at `config_path` as `bot backtest` does (BOT_DATA_DIR wins).
    """
    from bot.config import parse_settings, resolve_data_dir
    from bot.data.base import RISK_FREE
    from bot.data.history import load_history

    try:
        raw = {**config, "data": {**config.get("data", {}), "source": "synthetic" if synthetic else "csv"}}
        settings = parse_settings(raw, "runs.config")
    except BotError as exc:
        return _unavailable(f"the run's stored config no longer validates ({exc})")
    recorded = recorded_data_dir(data_source)
    data_dir = recorded or resolve_data_dir(settings, config_path)
    try:
        # SPY for the benchmark; the funds the ETFs track for the volatility-decay table.
        underlyings = sorted({a.underlying for a in settings.universe.values() if a.underlying})
        market = load_history(settings, data_dir, ["SPY", *underlyings])
    except (BotError, OSError, ValueError) as exc:
        moved = recorded is None and (data_source or "").startswith("csv:")
        gone = f"; the run read {data_source}, no longer there" if moved else ""
        return _unavailable(f"no price data for the run ({exc}){gone}")
    prices = market.prices
    dates = pd.DatetimeIndex(prices.dates)
    closes = pd.DataFrame(
        {s: prices.close[:, prices.index_of(s)] for s in prices.symbols}, index=dates
    )
    spy = closes["SPY"].dropna() if "SPY" in closes else None
    rf_data = market.macro.get(RISK_FREE)
    risk_free = (
        pd.Series(rf_data.values, index=pd.DatetimeIndex(rf_data.dates)) if rf_data is not None else None
    )
    note = None if spy is not None and not spy.empty else f"SPY is not in {market.label}"
    substitute = None
    if recorded is None and (data_source or "").startswith("csv:") and market.label != data_source:
        where = ("no longer there" if Path(data_source.removeprefix("csv:")).is_absolute()
                 else "relative to a folder the run did not record")
        substitute = (f"the run read {data_source}, {where}: SPY, the T-bill rate and "
                      f"the decay table come from {market.label} instead")
    return RunMarket(spy if note is None else None, risk_free, closes, market.label, note,
                     substitute)


def covering(spy: pd.Series | None, days: pd.DatetimeIndex) -> tuple[pd.Series | None, str | None]:
    """SPY restricted to the run's span, or None with the reason when it does not overlap;
    the note says when SPY covers only part of it ("SPY same dates" is then fewer dates)."""
    if spy is None or days.empty:
        return None, None
    inside = spy[(spy.index >= days[0]) & (spy.index <= days[-1])]
    if inside.empty:
        span = f"{spy.index[0].date()} to {spy.index[-1].date()}"
        return None, f"SPY data ({span}) does not overlap the run"
    return inside, _partial_coverage(inside.index, days)


def _partial_coverage(spy_days: pd.DatetimeIndex, days: pd.DatetimeIndex) -> str | None:
    """Where SPY's data inside the run starts late or ends early, or None if it spans it."""
    gaps = []
    if spy_days[0] > days[0]:
        gaps.append(f"SPY data starts on {spy_days[0].date()}, after the run's first day "
                    f"({days[0].date()})")
    if spy_days[-1] < days[-1]:
        gaps.append(f"SPY data ends on {spy_days[-1].date()}, before the run's last day")
    return "; ".join(gaps) or None
