"""Choose where a backtest's history comes from: a CSV directory or a synthetic market."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from bot.config import DefaultDataDir, Settings
from bot.data.base import MACRO_SERIES, MarketData
from bot.data.csv_source import load_csv_directory
from bot.data.plausibility import PlausibilityRules
from bot.data.synthetic import synthetic_market
from bot.errors import DataError

log = structlog.get_logger(__name__)


def load_history(
    settings: Settings, data_dir: Path, extra_symbols: Iterable[str] = ()
) -> MarketData:
    """`auto` reads `data_dir` when it holds prices/ and otherwise, at the default location
    only, builds the seeded synthetic market, so a fresh clone with no files and no keys
    still runs end to end. A directory the user named must hold the data."""
    source = _source(settings, data_dir)
    if source == "csv":
        _check_directory(data_dir)
        # Benchmark symbols are optional: a directory without them still backtests.
        missing = [s for s in extra_symbols if not (data_dir / "prices" / f"{s}.csv").is_file()]
        if missing:
            log.warning("benchmark data missing; those references are skipped", symbols=missing)
        extra_symbols = [s for s in extra_symbols if s not in missing]
    symbols = list(dict.fromkeys([*settings.symbols, *extra_symbols]))
    if source == "csv":
        rules = PlausibilityRules.from_settings(settings.data)
        return load_csv_directory(data_dir, symbols, MACRO_SERIES, rules)
    d = settings.data
    market = synthetic_market(symbols, d.synthetic_start, d.synthetic_end, seed=d.synthetic_seed)
    log.warning(
        "using a SYNTHETIC market: results say nothing about real markets",
        data=market.label,
        seed=d.synthetic_seed,
        reason=f"no CSV data at {data_dir}" if d.source == "auto" else "configured",
    )
    # The label once, above; from here on every log line of this process carries a short
    # flag, so no line read alone passes for real market history.
    structlog.contextvars.bind_contextvars(synthetic=True)
    return market


def _source(settings: Settings, data_dir: Path) -> str:
    """`csv` or `synthetic`: what `auto` means for `data_dir`."""
    source = settings.data.source
    if source != "auto":
        return source
    if (data_dir / "prices").is_dir() or not isinstance(data_dir, DefaultDataDir):
        return "csv"
    return "synthetic"


def _check_directory(data_dir: Path) -> None:
    """A missing or empty data directory, named with what was expected and the way out."""
    if not data_dir.is_dir():
        problem = "not a directory" if data_dir.exists() else "directory not found"
    elif not (data_dir / "prices").is_dir():
        problem = "no prices/ folder in it"
    else:
        return
    raise DataError(
        str(data_dir), "data directory",
        f"{problem}; expected a folder with prices/*.csv and macro/*.csv (given by --data-dir, "
        "BOT_DATA_DIR or data.directory; `bot data fetch` writes one), or use --synthetic",
    )
