"""Peer implementations of one fixed-weight rebalancing backtest, for the speed benchmark.

The case: long-only fixed target weights, rebalanced at the close on trading days
0, every, 2*every, ... of the span; fractional shares, no costs, fills at that day's
close. Every function returns the daily equity (pd.Series, one value per row of
``prices``, the first value being the equity after the day-0 rebalance, i.e. ``cash``).

Only pandas/numpy here at import time; bt and vectorbt are imported lazily inside
their functions so that this module can be imported where they are not installed
(they belong in a separate virtualenv: see run_peers.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "load_prices",
    "fixed_weight_numpy",
    "fixed_weight_vectorbt",
    "fixed_weight_bt",
    "time_warm",
]


def load_prices(data_dir: Path, symbols: Iterable[str], start, end) -> pd.DataFrame:
    """Adjusted closes, dates x symbols, over [start, end] (inclusive), rows where all exist.

    ``data_dir`` is the folder holding ``<SYM>.csv`` (``date,...,adj_close,...``).
    """
    data_dir = Path(data_dir)
    cols = {}
    for sym in symbols:
        df = pd.read_csv(
            data_dir / f"{sym}.csv",
            usecols=["date", "adj_close"],
            parse_dates=["date"],
            index_col="date",
        )
        cols[sym] = df["adj_close"].astype(float)
    prices = pd.DataFrame(cols)
    prices = prices.loc[pd.Timestamp(start) : pd.Timestamp(end)].dropna(how="any")
    prices.index.name = "date"
    return prices


def _weights_vector(prices: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    missing = set(weights) - set(prices.columns)
    if missing:
        raise KeyError(f"no prices for {sorted(missing)}")
    return np.array([float(weights.get(c, 0.0)) for c in prices.columns])


def fixed_weight_numpy(
    prices: pd.DataFrame, weights: dict[str, float], every: int = 4, cash: float = 100_000.0
) -> pd.Series:
    """Reference: plain numpy loop. On a rebalance day, shares = w * equity / price."""
    px = prices.to_numpy(dtype=float)
    w = _weights_vector(prices, weights)
    n = px.shape[0]
    equity = np.empty(n)
    shares = np.zeros(px.shape[1])
    free_cash = float(cash)
    for t in range(n):
        p = px[t]
        eq = free_cash + shares @ p
        if t % every == 0:
            shares = w * eq / p
            free_cash = eq - shares @ p  # 0 up to rounding when sum(w) == 1
        equity[t] = eq
    return pd.Series(equity, index=prices.index, name="equity")


def fixed_weight_vectorbt(
    prices: pd.DataFrame, weights: dict[str, float], every: int = 4, cash: float = 100_000.0
) -> pd.Series:
    """vectorbt Portfolio.from_orders: target-percent orders on rebalance rows, NaN elsewhere.

    One group with shared cash; call_seq='auto' orders each row's calls so sells run
    before buys (otherwise a buy early in the column order finds no cash and is cut).
    """
    import vectorbt as vbt

    w = _weights_vector(prices, weights)
    size = np.full(prices.shape, np.nan)
    size[::every] = w  # rows 0, every, 2*every, ...
    pf = vbt.Portfolio.from_orders(
        close=prices,
        size=size,
        size_type="targetpercent",
        price=prices,  # fill at the close (the default, made explicit)
        direction="longonly",
        init_cash=cash,
        fees=0.0,
        fixed_fees=0.0,
        slippage=0.0,
        size_granularity=np.nan,  # fractional shares
        min_size=0.0,
        group_by=True,
        cash_sharing=True,
        call_seq="auto",
        freq="1D",
    )
    eq = pf.value()
    return pd.Series(np.asarray(eq, dtype=float), index=prices.index, name="equity")


def fixed_weight_bt(
    prices: pd.DataFrame, weights: dict[str, float], every: int = 4, cash: float = 100_000.0
) -> pd.Series:
    """bt, set up its fastest documented way: RunEveryNPeriods -> WeighSpecified -> Rebalance.

    bt's docs build a fixed-weight portfolio from WeighSpecified and Rebalance; WeighSpecified
    sets temp['weights'] itself, so no Select* algo is needed (SelectAll, which the docs'
    equal-weight example uses to pick the names WeighEqually weighs, filters every row's
    prices and made this run 2.6-3.3x slower for the same equity). No commission function
    (bt's default charges none, without calling a Python hook per trade),
    integer_positions=False (fractional shares, as the docstring advises) and no progress
    bar.

    bt prepends a bootstrap row at (first date - 1 calendar day) on which no algo runs
    and the value is the initial capital; the algo stack first runs on day 0, where
    RunEveryNPeriods(n, offset=0) fires, so the schedule is exactly days 0, n, 2n, ...
    That bootstrap row is dropped from the returned equity.
    """
    import bt

    algos = [
        bt.algos.RunEveryNPeriods(every, offset=0),
        bt.algos.WeighSpecified(**{str(k): float(v) for k, v in weights.items()}),
        bt.algos.Rebalance(),
    ]
    strat = bt.Strategy("fixed_weight", algos)
    test = bt.Backtest(
        strat, prices, initial_capital=cash, integer_positions=False, progress_bar=False
    )
    test.run()
    values = test.strategy.values
    if len(values) != len(prices) + 1 or values.index[1] != prices.index[0]:
        raise AssertionError("unexpected bt bootstrap row layout")
    return pd.Series(values.to_numpy(dtype=float)[1:], index=prices.index, name="equity")


def time_warm(fn: Callable, *args, repeat: int = 5, **kwargs) -> float:
    """Best-of-``repeat`` wall time in seconds, after one untimed warm-up call."""
    fn(*args, **kwargs)  # imports, JIT compilation, caches
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best
