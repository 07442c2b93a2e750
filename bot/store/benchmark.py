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
    note: str | None = None


def _unavailable(note: str) -> RunMarket:
    return RunMarket(None, None, None, None, note)


def load_run_market(config: dict[str, Any], synthetic: bool, config_path: Path) -> RunMarket:
    """Load through bot.data.history with the run's validated settings.

    Relative data directories are anchored at `config_path` as `bot backtest` does
    (BOT_DATA_DIR wins).
    """
    from bot.config import parse_settings, resolve_data_dir
    from bot.data.base import RISK_FREE
    from bot.data.history import load_history

    try:
        raw = {**config, "data": {**config.get("data", {}), "source": "synthetic" if synthetic else "csv"}}
        settings = parse_settings(raw, "runs.config")
    except BotError as exc:
        return _unavailable(f"the run's stored config no longer validates ({exc})")
    data_dir = resolve_data_dir(settings, config_path)
    try:
        market = load_history(settings, data_dir, ["SPY"])
    except (BotError, OSError, ValueError) as exc:
        return _unavailable(f"no price data for the run ({exc})")
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
    return RunMarket(spy if note is None else None, risk_free, closes, market.label, note)


def covering(spy: pd.Series | None, days: pd.DatetimeIndex) -> tuple[pd.Series | None, str | None]:
    """SPY restricted to the run's span, or None with the reason when it does not overlap."""
    if spy is None or days.empty:
        return None, None
    inside = spy[(spy.index >= days[0]) & (spy.index <= days[-1])]
    if inside.empty:
        span = f"{spy.index[0].date()} to {spy.index[-1].date()}"
        return None, f"SPY data ({span}) does not overlap the run"
    if inside.index[-1] < days[-1]:
        return inside, f"SPY data ends on {inside.index[-1].date()}, before the run's last day"
    return inside, None
