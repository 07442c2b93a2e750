"""Stress tests of a portfolio: the research's factor shocks and replays of real crises.

**Factor shocks** (research 000's table: market crash -30%, rate shock +200 bp, tariff
escalation) are instantaneous: each fund moves once by its leverage times its index's
move, at most -100% (a crash spread over days costs a daily-reset fund less or more; the
replays show real paths). The liquidity crisis takes the factors' daily moves from a
window of the data: each of its days moves each fund by L x its index's modelled move
that day, compounded as a daily-reset fund does (6-18 March 2020: UPRO -55%, where 3 x
SPY's -19% over the window said -58%); only the factor funds follow their own history,
the others their fitted sensitivities (the 2020 replay holds their real paths). Two
factors drive every index:

- M, the equity market: the return of `stress.market` (SPY);
- the change dy of long Treasury yields, which moves `stress.rates` (TLT) by
  R = -D x dy, D its effective duration (`stress.durations`, an assumption).

Each fund's index moves by b_M x M + b_R x R, with the sensitivities from:

- *market*: the index is the market fund itself (UPRO on SPY): b_M = 1;
- *duration*: the index fund has a duration in config (TMF on TLT): it moves by
  -D_i x dy, i.e. b_R = D_i / D (TMF: 3 x TLT's duration, through its leverage);
- *index beta*: an equity index (QQQ, DIA): b_M = its beta to SPY on daily returns;
- *co-move*: anything else (gold, oil and gas, bond funds without a duration): b_M and
  b_R from a daily regression of its returns on SPY's and TLT's.

A fund whose index has no fund in the data (DIG: Dow Jones U.S. Oil & Gas) is regressed
through its own returns divided by its leverage. Sensitivities are estimated on the
data's daily returns in the calibration window. A scenario fixes M and dy; one left open
takes its historical co-move with the other (the regression of TLT on SPY or back).

**Replays** run the portfolio through the backtest engine over real episodes, twice:
held as it is, and managed by the strategy from it (its rebalances, overlay and guard;
the drawdown rule counts from the episode's start). A fund not listed yet is rebuilt from
its index fund by the daily-reset rule (bot.data.backfill) and reported as such; without
an index fund its weight stays in cash. An episode the data does not reach is reported
as not covered; the tariff-escalation factor shock stands in for April 2025.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bot.config import Settings
from bot.data.backfill import Backfilled, backfill
from bot.data.base import MarketData
from bot.errors import BotError
from bot.research import STRESS_CLAIMS

TRADING_DAYS = 252
MIN_CALIBRATION_DAYS = 60


@dataclass(frozen=True)
class FactorScenario:
    """A factor shock: equity move M and yield change dy (decimal: 0.02 = +200 bp); None
    takes the co-move with the other. With `window`, both come from the data instead:
    SPY's and TLT's daily moves between those closes, applied day by day."""

    key: str
    name: str
    equity: float | None
    yield_change: float | None
    basis: str
    window: tuple[str, str] | None = None


SCENARIOS: tuple[FactorScenario, ...] = (
    FactorScenario(
        "market_crash", "Market crash (-30%)", -0.30, None,
        "S&P 500 -30% at once; Treasuries by their historical co-move with it",
    ),
    FactorScenario(
        "rate_shock", "Rate shock (+200 bp)", 0.0, 0.02,
        "long Treasury yields +200 bp at once, the equity market unchanged (a pure rate "
        "shock; the 2022 replay shows one with equities falling too)",
    ),
    FactorScenario(
        "tariff_escalation", "Tariff escalation (+25%)", -0.12, 0.002,
        "shaped on 2-8 April 2025 after the US tariff announcement: S&P 500 about -12%, "
        "long yields about +20 bp; gold and energy by their co-moves",
    ),
    FactorScenario(
        "liquidity_crisis", "Liquidity crisis (-50%)", None, None,
        "the March 2020 dash for cash, stocks and Treasuries sold together: SPY's and "
        "TLT's moves from the 6th to the 18th, day by day, through each fund's fitted "
        "sensitivities (each compounds L x its index's modelled daily move; the 2020 replay "
        "holds the funds' real paths); with the funds' tracking error against L x their "
        "index over those days",
        window=("2020-03-06", "2020-03-18"),
    ),
)


@dataclass(frozen=True)
class Episode:
    key: str
    name: str
    start: str
    end: str


EPISODES: tuple[Episode, ...] = (
    Episode("gfc", "Financial crisis 2008-09..2009-03", "2008-09-01", "2009-03-31"),
    Episode("covid", "COVID crash 2020-02-19..03-23", "2020-02-19", "2020-03-23"),
    Episode("rates_2022", "Rates and inflation 2022", "2022-01-01", "2022-12-31"),
    Episode("tariffs_2025", "Tariff shock 2025-04", "2025-04-01", "2025-04-30"),
)


@dataclass(frozen=True)
class Portfolio:
    """Weights per symbol (the rest is cash) and where they come from."""

    weights: dict[str, float]
    as_of: str
    source: str

    @property
    def cash(self) -> float:
        return 1.0 - sum(self.weights.values())


@dataclass(frozen=True)
class Sensitivity:
    """How a fund's index moves with the two factors, and how that was found."""

    symbol: str
    leverage: float
    index: str  # the index fund, or "SYM/L" when inferred from the fund itself
    path: str  # market | duration | index beta | co-move | no data
    b_market: float
    b_rate: float
    days: int  # daily returns the estimate used (0: not estimated)


# --------------------------------------------------------------------------- calibration


def returns_frame(market: MarketData) -> pd.DataFrame:
    prices = market.prices
    closes = pd.DataFrame(prices.close, index=pd.DatetimeIndex(prices.dates), columns=list(prices.symbols))
    return closes.pct_change(fill_method=None).iloc[1:]


def factor_days(settings: Settings, data: pd.DataFrame) -> pd.DatetimeIndex:
    """The days of `data` (the calibration window's returns) with both factor funds'
    returns: the days the co-moves and the regressions really use. The one place they are
    picked: calibrate counts them and reports their span (the data's own first day, 1993,
    overstated it by nine years: TLT's returns start in 2002)."""
    st = settings.stress
    return data.index[data[st.market].notna() & data[st.rates].notna()]


def _window(returns: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    st = settings.stress
    lo = pd.Timestamp(st.calibration_start) if st.calibration_start else returns.index[0]
    hi = pd.Timestamp(st.calibration_end) if st.calibration_end else returns.index[-1]
    return returns.loc[(returns.index >= lo) & (returns.index <= hi)]


def _index_returns(
    returns: pd.DataFrame, symbol: str, underlying: str, leverage: float
) -> tuple[pd.Series | None, str]:
    """The index's daily returns: its fund's, else the fund's own divided by its leverage."""
    if underlying and underlying in returns:
        return returns[underlying], underlying
    if symbol in returns:
        return returns[symbol] / leverage, symbol if leverage == 1 else f"{symbol}/{leverage:g}"
    return None, underlying or symbol


def _regress(y: pd.Series, factors: pd.DataFrame) -> tuple[np.ndarray, int]:
    both = pd.concat([y, factors], axis=1).dropna()
    if len(both) < MIN_CALIBRATION_DAYS:
        return np.zeros(factors.shape[1]), len(both)
    x = np.column_stack([np.ones(len(both)), both.iloc[:, 1:].to_numpy()])
    coef, *_ = np.linalg.lstsq(x, both.iloc[:, 0].to_numpy(), rcond=None)
    return coef[1:], len(both)


def calibrate(
    settings: Settings, returns: pd.DataFrame
) -> tuple[list[Sensitivity], dict[str, float], tuple[str, str]]:
    """Every fund's sensitivities, the two co-move betas (TLT on SPY, SPY on TLT), and the
    first and last day of the factor days they were estimated on (factor_days)."""
    st = settings.stress
    data = _window(returns, settings)
    for name, fund in (("market", st.market), ("rates", st.rates)):
        if fund not in data:
            raise BotError(f"stress.{name}: the factor fund {fund} is not in the data "
                           f"(it has {', '.join(sorted(data.columns))})")
    m, r = data[st.market], data[st.rates]
    both = factor_days(settings, data)
    days = len(both)
    if days < MIN_CALIBRATION_DAYS:
        # Every sensitivity would be 0 and every loss understated: refuse, do not guess.
        first, last = st.calibration_start or "the data's start", st.calibration_end or "its end"
        raise BotError(
            f"stress.calibration_start..calibration_end ({first}..{last}) holds {days} days "
            f"of {st.market} and {st.rates} returns; the factor model needs at least "
            f"{MIN_CALIBRATION_DAYS}"
        )
    (rate_on_market,), _ = _regress(r, m.to_frame())
    (market_on_rate,), _ = _regress(m, r.to_frame())
    comove = {"rates_on_market": float(rate_on_market), "market_on_rates": float(market_on_rate)}
    out = []
    for sym, asset in settings.universe.items():
        index, label = _index_returns(data, sym, asset.underlying, asset.leverage)
        name = asset.underlying or sym
        if name == st.market:
            sens = Sensitivity(sym, asset.leverage, st.market, "market", 1.0, 0.0, 0)
        elif name in st.durations:
            ratio = st.durations[name] / st.durations[st.rates]
            sens = Sensitivity(sym, asset.leverage, name, "duration", 0.0, ratio, 0)
        elif index is None:
            sens = Sensitivity(sym, asset.leverage, label, "no data", 0.0, 0.0, 0)
        elif asset.role == "equity":
            (beta,), n = _regress(index, m.to_frame())
            path = "index beta" if n >= MIN_CALIBRATION_DAYS else "no data"
            sens = Sensitivity(sym, asset.leverage, label, path, float(beta), 0.0, n)
        else:
            (b_m, b_r), n = _regress(index, pd.concat([m, r], axis=1))
            path = "co-move" if n >= MIN_CALIBRATION_DAYS else "no data"
            sens = Sensitivity(sym, asset.leverage, label, path, float(b_m), float(b_r), n)
        out.append(sens)
    return out, comove, (str(both[0].date()), str(both[-1].date()))


# --------------------------------------------------------------------------- factor shocks


def factor_moves(
    scenario: FactorScenario, settings: Settings, comove: dict[str, float], closes: pd.DataFrame
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray] | None:
    """(M, R): the market fund's and the rates fund's move; over a scenario's window, their
    daily moves (arrays); None if the window is not in the data."""
    st = settings.stress
    duration = st.durations[st.rates]
    if scenario.window is not None:
        start, end = (pd.Timestamp(d) for d in scenario.window)
        span = closes.loc[(closes.index >= start) & (closes.index <= end), [st.market, st.rates]].dropna()
        if len(span) < 2 or span.index[0] != start or span.index[-1] != end:
            return None
        daily = span.to_numpy()[1:] / span.to_numpy()[:-1] - 1.0
        return daily[:, 0], daily[:, 1]
    if scenario.equity is not None and scenario.yield_change is not None:
        return scenario.equity, -duration * scenario.yield_change
    if scenario.equity is not None:
        return scenario.equity, comove["rates_on_market"] * scenario.equity
    assert scenario.yield_change is not None
    rate = -duration * scenario.yield_change
    return comove["market_on_rates"] * rate, rate


def compound(moves: float | np.ndarray) -> float:
    """One move, or the total of daily moves."""
    return float(np.prod(1.0 + np.atleast_1d(moves)) - 1.0)


def shock(
    portfolio: Portfolio,
    sensitivities: list[Sensitivity],
    market_move: float | np.ndarray,
    rate_move: float | np.ndarray,
) -> tuple[float, list[dict[str, Any]]]:
    """The portfolio's move and each fund's: L x (b_M M + b_R R), floored at -100%; given
    daily moves, each day's, compounded as a daily-reset fund does (held, not rebalanced)."""
    rows, total = [], 0.0
    for s in sensitivities:
        index_daily = s.b_market * np.asarray(market_move) + s.b_rate * np.asarray(rate_move)
        index_move = compound(index_daily)
        fund_move = compound(np.maximum(s.leverage * index_daily, -1.0))
        weight = portfolio.weights.get(s.symbol, 0.0)
        total += weight * fund_move
        rows.append({
            "symbol": s.symbol, "weight": weight, "index_move": index_move,
            "fund_move": fund_move, "contribution": weight * fund_move,
        })
    return total, rows


def tracking_error(
    portfolio: Portfolio, settings: Settings, returns: pd.DataFrame, start: str, end: str
) -> float | None:
    """Annualized std of the portfolio's daily return minus what L x the funds' indices
    gave, over start..end (funds with an index fund in the data only)."""
    span = returns.loc[(returns.index > pd.Timestamp(start)) & (returns.index <= pd.Timestamp(end))]
    diff = pd.Series(0.0, index=span.index)
    used = False
    for sym, weight in portfolio.weights.items():
        asset = settings.universe.get(sym)
        if asset is None or not asset.underlying or asset.underlying not in span or sym not in span:
            continue
        diff = diff + weight * (span[sym] - asset.leverage * span[asset.underlying])
        used = True
    diff = diff.dropna()
    if not used or len(diff) < 2:
        return None
    return float(diff.std(ddof=1) * math.sqrt(TRADING_DAYS))


def factor_section(
    portfolio: Portfolio, settings: Settings, market: MarketData
) -> tuple[list[dict[str, Any]], list[Sensitivity], list[str], tuple[str, str]]:
    """The factor scenarios' rows, the sensitivities, notes, and the calibration's span
    (calibrate)."""
    returns = returns_frame(market)
    prices = market.prices
    closes = pd.DataFrame(prices.close, index=pd.DatetimeIndex(prices.dates), columns=list(prices.symbols))
    sensitivities, comove, span = calibrate(settings, returns)
    duration = settings.stress.durations[settings.stress.rates]
    rows, notes = [], []
    for scenario in SCENARIOS:
        moves = factor_moves(scenario, settings, comove, closes)
        row: dict[str, Any] = {
            "key": scenario.key, "name": scenario.name, "basis": scenario.basis,
            # paper 000's figures are for its leveraged-ETF portfolio, not a robo profile's
            "research": STRESS_CLAIMS.get(scenario.key) if settings.strategy.kind == "leverage" else None,
        }
        if moves is None:
            start, end = scenario.window or ("", "")
            notes.append(f"{scenario.name}: the data does not cover {start}..{end}; not computed")
            rows.append({**row, "covered": False})
            continue
        total, assets = shock(portfolio, sensitivities, *moves)
        market_move, rate_move = compound(moves[0]), compound(moves[1])
        row |= {
            "covered": True, "market_move": market_move, "rates_fund_move": rate_move,
            "yield_change_bp": -rate_move / duration * 1e4, "portfolio_move": total, "assets": assets,
        }
        if scenario.window is not None:
            row["tracking_error"] = tracking_error(portfolio, settings, returns, *scenario.window)
        rows.append(row)
    for s in sensitivities:
        if s.path == "no data":
            notes.append(f"{s.symbol}: no returns to estimate its sensitivity from; taken as 0")
    return rows, sensitivities, notes, span


# --------------------------------------------------------------------------- replays


def _expense_ratio(symbol: str) -> float:
    from bot.data.synthetic import GENERIC_EXPENSE_RATIO, KNOWN_SYMBOLS

    known = KNOWN_SYMBOLS.get(symbol)
    return known.expense_ratio if known is not None else GENERIC_EXPENSE_RATIO


def rebuilt_market(settings: Settings, market: MarketData) -> tuple[MarketData, list[Backfilled]]:
    """The market with each leveraged fund's history before listing rebuilt from its
    index fund (bot.data.backfill)."""
    funds = {
        sym: (a.underlying, a.leverage, _expense_ratio(sym))
        for sym, a in settings.universe.items() if a.underlying
    }
    return backfill(market, funds)


def _curve_stats(equity: np.ndarray) -> dict[str, float]:
    peaks = np.maximum.accumulate(equity)
    daily = equity[1:] / equity[:-1] - 1.0
    return {
        "return": float(equity[-1] / equity[0] - 1.0),
        "max_drawdown": float(np.min(equity / peaks - 1.0)),
        "worst_day": float(daily.min()) if daily.size else 0.0,
    }


def replay(
    episode: Episode,
    portfolio: Portfolio,
    settings: Settings,
    market: MarketData,
    rebuilt: list[Backfilled],
) -> dict[str, Any]:
    """The portfolio held, and managed by the strategy, over one episode."""
    from bot.backtest import run_backtest, scratch_tradelog
    from bot.reference import fixed_weight_settings

    row: dict[str, Any] = {
        "key": episode.key, "name": episode.name, "start": episode.start, "end": episode.end,
    }
    dates = market.prices.dates
    first, last = str(dates[0].astype("datetime64[D]")), str(dates[-1].astype("datetime64[D]"))
    if last < episode.start or first > episode.end:
        return {**row, "covered": False, "note": f"not in the data ({first} to {last})"}
    notes = []
    if last < episode.end:
        notes.append(f"the data ends on {last}: replayed to there")
    span = {"start": episode.start, "end": min(episode.end, last)}
    strategy = settings.model_copy(update={"backtest": settings.backtest.model_copy(update=span)})
    # never rebalanced, whatever the config's schedule: a weekly one (every robo config)
    # kept trading the hold back to the static weights each week
    static = {s: a.weight for s, a in settings.universe.items()}
    hold = fixed_weight_settings(strategy, static, None, "every_n_days")
    weights = np.array([portfolio.weights.get(s, 0.0) for s in settings.symbols])
    results = {
        name: run_backtest(cfg, market, scratch_tradelog(f"stress {name}"), order_prefix="stress",
                           initial_weights=weights)
        for name, cfg in (("hold", hold), ("strategy", strategy))
    }
    held = results["hold"]
    row |= {name: _curve_stats(r.equity) for name, r in results.items()}
    row["covered"] = True
    row["days"] = len(held.dates)
    row["first_day"] = str(held.dates[0].astype("datetime64[D]"))
    row["last_day"] = str(held.dates[-1].astype("datetime64[D]"))
    row["market_return"] = _span_return(market, settings.stress.market, held.dates)
    start_prices = held.closes[0]
    for i, sym in enumerate(settings.symbols):
        if portfolio.weights.get(sym, 0.0) > 0 and not np.isfinite(start_prices[i]):
            notes.append(
                f"{sym} has no price on {row['first_day']} (not listed, no index fund): "
                "its weight stayed in cash"
            )
    for b in rebuilt:
        inside = b.from_day <= row["last_day"] and b.listed > row["first_day"]
        if inside and portfolio.weights.get(b.symbol, 0) > 0:
            notes.append(
                f"{b.symbol} listed {b.listed}: before that rebuilt as {b.leverage:g}x {b.underlying} "
                f"daily, less {b.expense_ratio:.2%}/yr expenses and {b.leverage - 1:g}x the bill rate"
            )
    row["note"] = "; ".join(notes) or None
    return row


def _span_return(market: MarketData, symbol: str, dates: np.ndarray) -> float | None:
    if symbol not in market.prices.symbols:
        return None
    prices = market.prices
    j = prices.index_of(symbol)
    lo, hi = (int(np.searchsorted(prices.dates, d)) for d in (dates[0], dates[-1]))
    a, b = prices.close[lo, j], prices.close[hi, j]
    return float(b / a - 1.0) if np.isfinite(a) and np.isfinite(b) else None


# --------------------------------------------------------------------------- portfolio


def strategy_portfolio(settings: Settings, market: MarketData, label: str) -> Portfolio:
    """The config's current portfolio: where a backtest of it over its span ends."""
    from bot.backtest import run_backtest, scratch_tradelog

    result = run_backtest(settings, market, scratch_tradelog("stress portfolio"), order_prefix="stress")
    weights = result.weights_frame().iloc[-1]
    day = str(result.dates[-1].astype("datetime64[D]"))
    span = f"{result.dates[0].astype('datetime64[D]')}..{day}"
    return Portfolio(
        {s: float(weights[s]) for s in settings.symbols if abs(weights[s]) > 1e-12}, day,
        f"the end of a backtest of {label} ({span})",
    )


def run_portfolio(
    positions: pd.DataFrame, equity: pd.DataFrame, run_id: int, account: int | None = None
) -> Portfolio:
    """A stored run's holdings at its last position snapshot, as weights of that day's
    equity; the frames must be of one account (`account`, None: the run has none)."""
    from bot.errors import BotError

    if positions.empty or equity.empty:
        raise BotError(f"run {run_id} has no position snapshots or equity: nothing to stress")
    if equity.index.has_duplicates:  # one row per account and day: accounts mixed
        raise BotError(
            f"run {run_id}: its equity has several rows a day (several client accounts); "
            "expected the records of one account"
        )
    day = positions["day"].max()
    last = positions[positions["day"] == day]
    value = float(equity.loc[equity.index <= pd.Timestamp(day), "equity"].iloc[-1])
    if not value > 0:
        raise BotError(f"run {run_id} had no equity on {pd.Timestamp(day).date()}")
    weights = {
        str(r.symbol): float(r.market_value) / value for r in last.itertuples() if float(r.quantity) != 0.0
    }
    of_account = "" if account is None else f" (account {account})"
    return Portfolio(
        weights, pd.Timestamp(day).date().isoformat(), f"run {run_id}'s holdings{of_account}"
    )


# --------------------------------------------------------------------------- the report


def stress_report(
    settings: Settings, market: MarketData, portfolio: Portfolio, meta: dict[str, Any]
) -> dict[str, Any]:
    """Everything `bot stress` shows, JSON-safe."""
    unknown = sorted(set(portfolio.weights) - set(settings.symbols))
    if unknown:
        from bot.errors import BotError

        raise BotError(
            f"the portfolio holds {unknown}, not in the config's universe {list(settings.symbols)}"
        )
    factors, sensitivities, notes, (first, last) = factor_section(portfolio, settings, market)
    rebuilt_data, rebuilt = rebuilt_market(settings, market)
    replays = [replay(e, portfolio, settings, rebuilt_data, rebuilt) for e in EPISODES]
    st = settings.stress
    return {
        "meta": {
            **meta,
            "data_label": market.label,
            "portfolio": {"as_of": portfolio.as_of, "source": portfolio.source,
                          "weights": portfolio.weights, "cash": portfolio.cash},
            "model": {
                "market": st.market, "rates": st.rates, "durations": st.durations,
                "calibration": {"start": first, "end": last},
            },
        },
        "sensitivities": [s.__dict__ for s in sensitivities],
        "factor_scenarios": factors,
        "replays": replays,
        "notes": notes,
    }
