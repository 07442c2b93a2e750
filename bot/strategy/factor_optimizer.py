"""From composite scores to weights: the whitepaper's linear program with a drawn total.

The program, for scores s (one per ETF), the drawn total T and the invested total I:

    maximize    sum_i s_i * w_i
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

Before the signals have history (fewer than two rankable ETFs) the model holds the
whitepaper's static example mix instead (`allocate_static`) under the same rules: the same
invested total min(T, 1, cap x ETFs held), the same per-ETF cap, the excess of a capped
ETF spread over the others in proportion to their static weights (the mix has no scores
to rank them by), and what the caps cannot hold kept in cash.

That vertex is computed directly (`solve_weights`, a sort and a fill): a general LP
solver (scipy's HiGHS, 2 ms a call) found the same point and was most of a robo
backtest's time. The tests keep scipy.optimize.linprog as the oracle.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

_ZERO = 1e-10  # weights below this are rounding residue of the fill


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
    """The linear program above for a given invested total, solved at its vertex: fill
    the eligible ETFs to `cap` in order of falling score (ties: the earlier ETF first)
    until `invested` is placed. RuntimeError if the caps cannot hold `invested`."""
    n = len(scores)
    w = np.zeros(n)
    if invested <= 0.0 or not eligible.any():
        return w
    candidates = np.flatnonzero(eligible)
    if invested > cap * len(candidates) + 1e-12:
        raise RuntimeError(f"allocation LP infeasible: {invested} > {len(candidates)} x cap {cap}")
    ranked = np.nan_to_num(scores[candidates])
    left = float(invested)
    for i in candidates[np.argsort(-ranked, kind="stable")].tolist():
        if left < _ZERO:
            break
        w[i] = min(cap, left)
        left -= w[i]
    return w


def allocate(
    scores: np.ndarray, eligible: np.ndarray, drawn: float, cap: float
) -> Allocation:
    """Invest min(drawn, 1, cap x eligible ETFs) by the LP; the rest stays in cash."""
    invested = invested_total(drawn, cap, int(eligible.sum()))
    return Allocation(solve_weights(scores, eligible, invested, cap), drawn, invested)


def invested_total(drawn: float, cap: float, held: int) -> float:
    """What a decision invests: the drawn total, at most everything and at most what the
    per-ETF cap lets `held` ETFs hold; the rest is cash."""
    return min(drawn, 1.0, cap * held)


def capped_mix(mix: np.ndarray, invested: float, cap: float) -> np.ndarray:
    """`invested` spread in proportion to `mix` with no weight above `cap`: a weight the
    proportion would put above it is held at the cap and its excess spread the same way
    over the rest. RuntimeError if the caps cannot hold `invested`."""
    w = np.zeros(len(mix))
    free = mix > 0
    if invested > cap * int(free.sum()) + 1e-12:
        raise RuntimeError(f"static mix infeasible: {invested} > {int(free.sum())} x cap {cap}")
    left = float(invested)
    while free.any() and left > _ZERO:
        share = mix[free] / mix[free].sum() * left
        over = share > cap
        if not over.any():
            w[free] = share
            break
        held = np.flatnonzero(free)[over]
        w[held] = cap
        left -= cap * len(held)
        free[held] = False
    return w


def allocate_static(mix: np.ndarray, eligible: np.ndarray, drawn: float, cap: float) -> Allocation:
    """The static example mix over the `eligible` ETFs under the LP's own rules: invest
    min(drawn, 1, cap x ETFs held), none above `cap`; the rest stays in cash."""
    held = np.where(eligible, mix, 0.0)
    invested = invested_total(drawn, cap, int((held > 0).sum()))
    return Allocation(capped_mix(held, invested, cap), drawn, invested)
