"""A synthetic market, so a fresh clone with no data files and no keys runs end to end.

It is built to break strategies the way real markets do: volatility clusters (GARCH(1,1)),
crashes arrive as regimes lasting days to weeks with elevated volatility, assets move
together through common factors with fat-tailed shocks, and leveraged ETFs decay by the
daily-reset rule

    r_etf[t] = L * r_index[t] - (L - 1) * rf_daily[t] - expense_ratio / 252,
    rf_daily[t] = DTB3[t - 1] / 100 / 252   (DTB3[0] on the first day),

using the DTB3 series returned in the same MarketData. Macro series are derived from the
same paths: VIX from the S&P 500's conditional volatility, policy uncertainty from VIX,
and the 3-month bill rate and 10y-2y spread as mean-reverting processes that react to
crashes. Every random stream is keyed by (seed, purpose[, name]), so a symbol's path does
not depend on which other symbols were requested.
"""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bot.data.backfill import daily_reset_returns
from bot.data.base import RISK_FREE, SPREAD, UNCERTAINTY, VIX, MacroSeries, MarketData, PriceHistory

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

TRADING_DAYS = 252
FACTORS = ("MKT", "DUR", "TECH", "SIZE", "GOLD", "ENERGY", "REAL")


@dataclass(frozen=True)
class IndexModel:
    """How one underlying index moves.

    premium: annual return over T-bills; vol: long-run annual volatility; loadings: on the
    common FACTORS (squares sum below 1; the rest is idiosyncratic); crash_beta: share of
    an equity crash's drop it takes (negative: rallies, as Treasuries do); crash_vol: extra
    volatility multiple while a crash lasts.
    """

    premium: float
    vol: float
    loadings: Mapping[str, float]
    crash_beta: float
    crash_vol: float


@dataclass(frozen=True)
class Tracker:
    """What a symbol holds: `leverage` x the daily return of `index`, reset every day."""

    index: str
    leverage: float
    expense_ratio: float


_EQUITY_CRASH_VOL = 1.0
INDICES: dict[str, IndexModel] = {
    "SPX": IndexModel(0.065, 0.14, {"MKT": 0.99}, 1.0, _EQUITY_CRASH_VOL),
    "NDX": IndexModel(0.085, 0.20, {"MKT": 0.90, "TECH": 0.40}, 1.3, _EQUITY_CRASH_VOL),
    "DJI": IndexModel(0.060, 0.14, {"MKT": 0.96}, 0.95, _EQUITY_CRASH_VOL),
    "TECH": IndexModel(0.085, 0.20, {"MKT": 0.88, "TECH": 0.45}, 1.3, _EQUITY_CRASH_VOL),
    "SMALL": IndexModel(0.060, 0.20, {"MKT": 0.85, "SIZE": 0.40}, 1.3, _EQUITY_CRASH_VOL),
    "REIT": IndexModel(
        0.055, 0.19, {"MKT": 0.70, "DUR": 0.25, "REAL": 0.45}, 1.2, _EQUITY_CRASH_VOL
    ),
    "DIVIDEND": IndexModel(0.055, 0.12, {"MKT": 0.93}, 0.85, _EQUITY_CRASH_VOL),
    "EM": IndexModel(0.050, 0.18, {"MKT": 0.75}, 1.1, _EQUITY_CRASH_VOL),
    "GROWTH": IndexModel(
        0.080, 0.40, {"MKT": 0.65, "TECH": 0.45, "SIZE": 0.30}, 2.0, _EQUITY_CRASH_VOL
    ),
    "UST20": IndexModel(0.015, 0.14, {"MKT": -0.25, "DUR": 0.95}, -0.35, 0.5),
    # About half the duration of UST20, so about half its volatility and crash rally.
    "UST7_10": IndexModel(0.010, 0.07, {"MKT": -0.22, "DUR": 0.93}, -0.17, 0.5),
    "AGG": IndexModel(0.008, 0.045, {"MKT": -0.05, "DUR": 0.85}, -0.05, 0.5),
    "UST1_3": IndexModel(0.003, 0.015, {"MKT": -0.15, "DUR": 0.60}, -0.02, 0.3),
    "TBILL": IndexModel(0.0, 0.003, {}, 0.0, 0.0),
    "GOLD": IndexModel(0.030, 0.16, {"MKT": 0.05, "DUR": 0.20, "GOLD": 0.90}, -0.10, 0.7),
    "OILGAS": IndexModel(0.030, 0.27, {"MKT": 0.45, "ENERGY": 0.80}, 1.4, 1.2),
}

KNOWN_SYMBOLS: dict[str, Tracker] = {
    "TQQQ": Tracker("NDX", 3, 0.0084),
    "UPRO": Tracker("SPX", 3, 0.0091),
    "UDOW": Tracker("DJI", 3, 0.0095),
    "TMF": Tracker("UST20", 3, 0.0106),
    "UGL": Tracker("GOLD", 2, 0.0095),
    "DIG": Tracker("OILGAS", 2, 0.0095),
    "QQQ": Tracker("NDX", 1, 0.0020),
    "SPY": Tracker("SPX", 1, 0.0009),
    "DIA": Tracker("DJI", 1, 0.0016),
    "TLT": Tracker("UST20", 1, 0.0015),
    "IEF": Tracker("UST7_10", 1, 0.0015),
    "GLD": Tracker("GOLD", 1, 0.0040),
    "IWM": Tracker("SMALL", 1, 0.0019),
    "XLK": Tracker("TECH", 1, 0.0009),
    "VNQ": Tracker("REIT", 1, 0.0013),
    "AGG": Tracker("AGG", 1, 0.0003),
    "BND": Tracker("AGG", 1, 0.0003),
    "SHY": Tracker("UST1_3", 1, 0.0015),
    "BIL": Tracker("TBILL", 1, 0.0014),
    "VYM": Tracker("DIVIDEND", 1, 0.0006),
    "IEMG": Tracker("EM", 1, 0.0009),
    "ARKK": Tracker("GROWTH", 1, 0.0075),
}
GENERIC_EXPENSE_RATIO = 0.005

# GARCH(1,1) on standardized shocks: persistence 0.98, i.e. shocks fade over about 50 days.
GARCH_ALPHA, GARCH_BETA = 0.06, 0.92
# Conditional vol never exceeds this multiple of the long-run vol (S&P 500: 70%, about the
# peaks of 2008 and 2020), so a run of fat-tailed shocks cannot explode the variance.
MAX_VOL_MULTIPLE = 5.0
T_DOF = 8  # Student-t degrees of freedom of the common shock scale: fat tails
# Daily index returns are clipped so a 3x fund never loses 100% in a day (real worst: -20%).
MIN_INDEX_RETURN, MAX_INDEX_RETURN = -0.30, 0.35
CRASHES_PER_YEAR = 0.25
CRASH_DAYS = (5, 60)  # log-uniform duration
CRASH_DROP = (0.08, 0.30)  # S&P 500 drop from the crash drift alone, before noise
AFTERSHOCK_DAYS = 20.0  # e-folding time of the elevated volatility after a crash ends
# Share of a crash's drop won back while the aftershock fades (2009, 2020 were V-shaped);
# without it, crashes alone would eat the whole equity premium.
CRASH_RECOVERY = 0.5
CRASH_RATE_CUT = 1.5  # percentage points the bill rate falls over a crash (floored at 0)
VIX_FLOOR, VIX_PREMIUM = 9.0, 1.2  # implied vol trades above expected realized vol
# Mean-reverting rates, percent: long-run level, reversion speed per year, annual vol.
BILL_MEAN, BILL_SPEED = 2.5, 0.25
SPREAD_MEAN, SPREAD_SPEED = 1.0, 0.5
RATE_VOL = 0.7

# Stream keys, so each purpose draws from its own generator.
_CRASH, _FACTOR, _IDIO, _GENERIC, _OPEN, _PRICE, _RATES, _VIX, _EPU = range(1, 10)


@dataclass(frozen=True)
class _Crashes:
    """Crash regime per day: `intensity` 1 during a crash, decaying after; `drift` is the
    S&P 500's extra daily return (down in the crash, partly back after); `cut` the bill
    rate's change."""

    intensity: np.ndarray
    drift: np.ndarray
    cut: np.ndarray


def synthetic_market(
    symbols: Sequence[str], start: str | date, end: str | date, *, seed: int = 7
) -> MarketData:
    """Prices for `symbols` and the four macro series on XNYS sessions from start to end."""
    if not symbols or len(set(symbols)) != len(symbols):
        raise ValueError(f"symbols must be non-empty and unique, got {list(symbols)}")
    sessions = _sessions(start, end)
    n = len(sessions)
    models, trackers = _models(symbols, seed)
    crashes = _crash_regime(_rng(seed, _CRASH), n)
    dtb3, spread = _rates(_rng(seed, _RATES), crashes)
    rf_daily = np.concatenate(([dtb3[0]], dtb3[:-1])) / 100 / TRADING_DAYS
    shocks = _shocks(models, n, seed)
    variance = _garch_variance(shocks, np.array([m.vol for m in models.values()]))
    returns = _index_returns(models, shocks, variance, crashes, rf_daily)
    close, opens = _symbol_prices(symbols, trackers, list(models), returns, rf_daily, seed)
    spx = list(models).index("SPX")
    spx_next = _conditional_vol({"SPX": models["SPX"]}, variance[1:, [spx]], crashes.intensity)
    vix = _vix(_rng(seed, _VIX), spx_next[:, 0])
    macro = {
        VIX: MacroSeries(VIX, sessions, vix),
        SPREAD: MacroSeries(SPREAD, sessions, spread),
        UNCERTAINTY: _uncertainty(_rng(seed, _EPU), sessions, vix),
        RISK_FREE: MacroSeries(RISK_FREE, sessions, dtb3),
    }
    prices = PriceHistory(sessions, tuple(symbols), close, opens)
    return MarketData(prices, macro, source=f"synthetic seed={seed}", synthetic=True)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _key(name: str) -> int:
    """A stable integer for a name (Python's hash() changes between runs)."""
    return zlib.crc32(name.encode())


def _sessions(start: str | date, end: str | date) -> np.ndarray:
    """XNYS sessions in [start, end]: from the stored session table (bot.session_table)
    when it covers them, else from a calendar built for those years."""
    first, last = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if last < first:
        raise ValueError(f"end {last.date()} is before start {first.date()}")
    from bot.session_table import days_between

    sessions = days_between(first.date(), last.date())
    if sessions is None:
        calendar = _xnys(min(first.year, 1990) - 1, max(last.year, 2030) + 1)
        sessions = calendar.sessions_in_range(first, last).to_numpy().astype("datetime64[D]")
    if len(sessions) < 2:
        raise ValueError(f"fewer than 2 XNYS sessions between {first.date()} and {last.date()}")
    return sessions


@functools.lru_cache(maxsize=4)
def _xnys(first_year: int, last_year: int) -> ExchangeCalendar:
    """The XNYS calendar over whole years (building one takes ~0.1 s, so it is kept).

    The default calendar spans only 20 years back, too short for long backtests; the year
    of margin on each side keeps requested dates inside its first and last sessions.
    """
    with warnings.catch_warnings():
        # exchange_calendars reads tz-aware Series.values, which pandas 3.1 deprecates; the
        # result is still correct and the warning is not ours to fix.
        warnings.filterwarnings("ignore", "Series.values returning", DeprecationWarning)
        import exchange_calendars as xcals  # here: its import costs ~0.1 s on every command

        return xcals.get_calendar("XNYS", start=f"{first_year}-01-01", end=f"{last_year}-12-31")


def _models(symbols: Sequence[str], seed: int) -> tuple[dict[str, IndexModel], dict[str, Tracker]]:
    """All standard indices plus a generic equity index per unknown symbol."""
    models = dict(INDICES)
    trackers: dict[str, Tracker] = {}
    for symbol in symbols:
        if symbol in KNOWN_SYMBOLS:
            trackers[symbol] = KNOWN_SYMBOLS[symbol]
            continue
        index = f"~{symbol}"
        models[index] = _generic_index(_rng(seed, _GENERIC, _key(symbol)))
        trackers[symbol] = Tracker(index, 1, GENERIC_EXPENSE_RATIO)
    return models, trackers


def _generic_index(rng: np.random.Generator) -> IndexModel:
    """An equity index with a random beta to the S&P 500 (beta = corr x vol / SPX vol)."""
    corr, vol = rng.uniform(0.5, 0.85), rng.uniform(0.18, 0.40)
    beta = corr * vol / INDICES["SPX"].vol
    return IndexModel(0.02 + 0.04 * beta, vol, {"MKT": corr}, beta, _EQUITY_CRASH_VOL)


def _crash_regime(rng: np.random.Generator, n: int) -> _Crashes:
    """Crashes as Poisson arrivals lasting days to weeks, never overlapping."""
    intensity, drift, cut = np.zeros(n), np.zeros(n), np.zeros(n)
    mean_gap = TRADING_DAYS / CRASHES_PER_YEAR
    t = int(rng.exponential(mean_gap))
    while t < n:
        days = int(round(np.exp(rng.uniform(*np.log(CRASH_DAYS)))))
        drop = rng.uniform(*CRASH_DROP)
        end = min(t + days, n)
        drift[t:end] = -drop / days
        cut[t:end] = -CRASH_RATE_CUT / days
        intensity[t:end] = 1.0
        tail = np.exp(-np.arange(1, min(n - end, int(6 * AFTERSHOCK_DAYS)) + 1) / AFTERSHOCK_DAYS)
        intensity[end : end + tail.size] = tail
        if tail.size:
            drift[end : end + tail.size] = CRASH_RECOVERY * drop * tail / tail.sum()
        t = end + int(rng.exponential(mean_gap))
    return _Crashes(intensity, drift, cut)


def _shocks(models: Mapping[str, IndexModel], n: int, seed: int) -> np.ndarray:
    """(n, K) unit-variance shocks, correlated through the factors, with fat tails.

    One Student-t scale per day is shared by all indices, so extreme days hit everything.
    """
    factor_rng = _rng(seed, _FACTOR)
    factors = factor_rng.standard_normal((n, len(FACTORS)))
    scale = np.sqrt((T_DOF - 2) / factor_rng.chisquare(T_DOF, n))
    shocks = np.empty((n, len(models)))
    for k, (name, model) in enumerate(models.items()):
        loadings = np.array([model.loadings.get(f, 0.0) for f in FACTORS])
        own = np.sqrt(1.0 - loadings @ loadings)
        shocks[:, k] = factors @ loadings + own * _rng(seed, _IDIO, _key(name)).standard_normal(n)
    return shocks * scale[:, None]


def _garch_variance(shocks: np.ndarray, vols: np.ndarray) -> np.ndarray:
    """(n + 1, K) daily variances; row t is known at the close of day t - 1."""
    long_run = vols**2 / TRADING_DAYS
    omega = long_run * (1.0 - GARCH_ALPHA - GARCH_BETA)
    variance = np.empty((shocks.shape[0] + 1, shocks.shape[1]))
    variance[0] = long_run
    squared = shocks**2
    for t in range(shocks.shape[0]):
        variance[t + 1] = omega + (GARCH_ALPHA * squared[t] + GARCH_BETA) * variance[t]
    return variance


def _index_returns(
    models: Mapping[str, IndexModel],
    shocks: np.ndarray,
    variance: np.ndarray,
    crashes: _Crashes,
    rf_daily: np.ndarray,
) -> np.ndarray:
    """(n, K) daily simple returns: bills + premium + crash drift + scaled shock.

    The premium is unconditional: calm days earn back what crashes take on average.
    """
    premium = np.array([m.premium for m in models.values()]) / TRADING_DAYS
    crash_beta = np.array([m.crash_beta for m in models.values()])
    expected_crash_loss = CRASHES_PER_YEAR * np.mean(CRASH_DROP) * (1.0 - CRASH_RECOVERY)
    calm = premium + crash_beta * expected_crash_loss / TRADING_DAYS
    drift = rf_daily[:, None] + calm + np.outer(crashes.drift, crash_beta)
    returns = drift + _conditional_vol(models, variance[:-1], crashes.intensity) * shocks
    return np.clip(returns, MIN_INDEX_RETURN, MAX_INDEX_RETURN)


def _conditional_vol(
    models: Mapping[str, IndexModel], variance: np.ndarray, intensity: np.ndarray
) -> np.ndarray:
    """Daily vol: GARCH, raised while a crash lasts, capped at MAX_VOL_MULTIPLE x long run."""
    crash_vol = np.array([m.crash_vol for m in models.values()])
    long_run = np.array([m.vol for m in models.values()]) / np.sqrt(TRADING_DAYS)
    vol = (1.0 + np.outer(intensity, crash_vol)) * np.sqrt(variance)
    return np.minimum(vol, MAX_VOL_MULTIPLE * long_run)


def _symbol_prices(
    symbols: Sequence[str],
    trackers: Mapping[str, Tracker],
    index_names: list[str],
    index_returns: np.ndarray,
    rf_daily: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, N) closes by the daily-reset rule and opens part of the way from the last close."""
    n = index_returns.shape[0]
    close, opens = np.empty((n, len(symbols))), np.empty((n, len(symbols)))
    for j, symbol in enumerate(symbols):
        tracker = trackers[symbol]
        r_index = index_returns[:, index_names.index(tracker.index)]
        lev = tracker.leverage
        r = daily_reset_returns(r_index, lev, rf_daily, tracker.expense_ratio)
        first = _rng(seed, _PRICE, _key(symbol)).uniform(20.0, 150.0)
        close[:, j] = first * np.cumprod(1.0 + r)
        previous = np.concatenate(([first], close[:-1, j]))
        overnight = _overnight_share(_rng(seed, _OPEN, _key(tracker.index)), n)
        opens[:, j] = previous * np.exp(overnight * np.log(close[:, j] / previous))
    return close, opens


def _overnight_share(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fraction of each day's log return that happens before the open; shared by every
    fund on the same index, so a 3x fund gaps with its 1x sibling."""
    return np.clip(rng.normal(0.35, 0.3, n), 0.0, 1.0)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary-scale AR(1) noise with persistence `phi` and marginal sd `sd`."""
    innovations = rng.standard_normal(n) * sd * np.sqrt(1.0 - phi**2)
    return _recursive_filter(innovations, phi)


def _recursive_filter(x: np.ndarray, phi: float) -> np.ndarray:
    """y[t] = x[t] + phi * y[t-1] from y[-1] = 0: scipy's lfilter([1], [1, -phi], x) with
    the same arithmetic, so the same bits (tests check it), without importing scipy.signal
    (half a second, on every command that builds a synthetic market). A few thousand steps
    of a Python loop cost a millisecond."""
    y = np.empty(len(x))
    previous = 0.0
    for t, value in enumerate(x.tolist()):
        previous = value + phi * previous
        y[t] = previous
    return y


def _rates(rng: np.random.Generator, crashes: _Crashes) -> tuple[np.ndarray, np.ndarray]:
    """3-month bill rate (>= 0) and 10y-2y spread, percent, mean-reverting; crashes bring
    rate cuts and a steeper curve, as in 2001, 2008 and 2020."""
    n = crashes.cut.size
    bill_noise, spread_noise = rng.standard_normal((2, n)) * RATE_VOL / np.sqrt(TRADING_DAYS)
    bill, spread = rng.uniform(0.5, 4.5), rng.uniform(-0.2, 2.2)
    bills, spreads = np.empty(n), np.empty(n)
    for t in range(n):
        bill += BILL_SPEED * (BILL_MEAN - bill) / TRADING_DAYS + bill_noise[t] + crashes.cut[t]
        bill = max(bill, 0.0)
        spread += SPREAD_SPEED * (SPREAD_MEAN - spread) / TRADING_DAYS + spread_noise[t]
        spread -= 0.5 * crashes.cut[t]
        bills[t], spreads[t] = bill, spread
    return np.round(bills, 2), np.round(np.clip(spreads, -2.5, 4.0), 2)


def _vix(rng: np.random.Generator, next_vol: np.ndarray) -> np.ndarray:
    """VIX at each close: the S&P 500's daily vol expected for tomorrow, annualized x100,
    with a premium and persistent noise; crashes make it spike through that vol."""
    expected = 100 * np.sqrt(TRADING_DAYS) * next_vol
    noisy = VIX_PREMIUM * expected * np.exp(_ar1(rng, next_vol.size, 0.9, 0.08))
    return np.round(np.maximum(noisy, VIX_FLOOR), 2)


def _uncertainty(rng: np.random.Generator, sessions: np.ndarray, vix: np.ndarray) -> MacroSeries:
    """Daily policy uncertainty on every calendar day (as published), rising with VIX."""
    days = np.arange(sessions[0], sessions[-1] + np.timedelta64(1, "D"))
    vix_then = vix[np.searchsorted(sessions, days, side="right") - 1]
    values = 100 * (vix_then / 18.0) ** 1.3 * np.exp(_ar1(rng, days.size, 0.6, 0.3))
    return MacroSeries(UNCERTAINTY, days, np.round(np.clip(values, 10.0, 900.0), 2))
