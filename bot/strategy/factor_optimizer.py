"""From composite scores to weights: the whitepaper's linear program with a drawn total.

The program, for scores s (one per ETF), the drawn total T and the invested total I:

    maximize    sum_i s_i * w_i                  (scipy.optimize.linprog minimizes -s.w)
    subject to  sum_i w_i = I,   I = min(T, 1, cap * n_eligible)
                0 <= w_i <= cap  (cap = 0.5; 0 for an ETF that cannot be ranked or traded)

T is drawn uniformly in the profile's band [total_min, total_max] by a generator seeded
from (config seed, decision date): a replay, or a daemon restarted on the same day, draws
the same T whatever happened before. Below 100% the rest is cash. Above 100% there is no
leverage: the invested total is capped at 100% and the unused part of the draw is
recorded in the trade log, so the upper half of a band centred on 100% all maps to a
fully invested portfolio.

A linear program's optimum lies on a vertex of the feasible polytope. Here the vertices
are "fill the best-scored ETF to the cap, then the next, ...": at most one weight lies
strictly between 0 and the cap, and only the ranking of the scores matters, not their
size. With cap 0.5 and 4 ETFs a fully invested portfolio is 50/50 in the top two; at a
total of 90% it is 50/40. A small change in scores that swaps two ranks moves 40-50
points of weight at once, so turnover is high by construction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

_ZERO = 1e-10  # LP weights below this are solver residue


def draw_total(seed: int, day: dt.date, low: float, high: float) -> float:
    """Uniform draw in [low, high] from a generator keyed by (seed, day) alone."""
    rng = np.random.default_rng([seed, day.toordinal()])
    return float(low + (high - low) * rng.random())


@dataclass(frozen=True)
class Allocation:
    """The LP's weights and how the drawn total became the invested total."""

    weights: np.ndarray
    drawn: float
    invested: float

    @property
    def unused(self) -> float:
        """Part of the draw not invested (above 100%, or more than the caps can hold)."""
        return max(self.drawn - self.invested, 0.0)


def solve_weights(scores: np.ndarray, eligible: np.ndarray, invested: float, cap: float) -> np.ndarray:
    """The linear program above for a given invested total (HiGHS, deterministic)."""
    n = len(scores)
    upper = np.where(eligible, cap, 0.0)
    if invested <= 0.0 or not eligible.any():
        return np.zeros(n)
    result = linprog(
        -np.where(eligible, np.nan_to_num(scores), 0.0),
        A_eq=np.ones((1, n)),
        b_eq=[invested],
        bounds=list(zip(np.zeros(n), upper, strict=True)),
        method="highs",
    )
    if result.status != 0:
        raise RuntimeError(f"allocation LP failed: {result.message}")
    w = np.clip(result.x, 0.0, upper)
    w[w < _ZERO] = 0.0
    return w


def allocate(
    scores: np.ndarray, eligible: np.ndarray, drawn: float, cap: float
) -> Allocation:
    """Invest min(drawn, 1, cap x eligible ETFs) by the LP; the rest stays in cash."""
    invested = min(drawn, 1.0, cap * int(eligible.sum()))
    return Allocation(solve_weights(scores, eligible, invested, cap), drawn, invested)
