"""Statistics of one decision's trailing return window, each computed once.

A rebalance asks for the same numbers several times: the 20-day volatilities weigh the
assets (inverse vol) and set the stops; the 60-day window's de-meaned returns give both
the VaR factor's volatilities and the guard's correlations. The weights and the guard
take one `WindowStats` per decision and read them from it. Each value is computed by
exactly the arithmetic its users did before (bit for bit), only not repeated.
"""

from __future__ import annotations

import math

import numpy as np


def series_vol(series: np.ndarray) -> float:
    """Daily standard deviation (ddof=1) of one return series: `WindowStats.vol` of it
    as a single column, bit for bit, without the column's extra axis (the guard's
    volatility rule asks twice per decision)."""
    centered = series - np.add.reduce(series) / series.shape[0]
    return math.sqrt(np.einsum("i,i->", centered, centered) / (series.shape[0] - 1))


class WindowStats:
    """Lazily computed, cached statistics of the trailing `returns` (days, assets),
    newest last; `window` n means the last n rows. The arrays returned are shared:
    callers must not modify them."""

    __slots__ = ("returns", "_centered", "_vol")

    def __init__(self, returns: np.ndarray) -> None:
        self.returns = returns
        self._centered: dict[int, np.ndarray] = {}
        self._vol: dict[int, np.ndarray] = {}

    def centered(self, window: int) -> np.ndarray:
        """The last `window` rows minus their column means."""
        c = self._centered.get(window)
        if c is None:
            r = self.returns[-window:]
            # r.mean(axis=0) is this sum over its row count; called directly, without
            # numpy's Python wrapper (_methods._mean), which costs more than the sum
            c = self._centered[window] = r - np.add.reduce(r, axis=0) / r.shape[0]
        return c

    def vol(self, window: int) -> np.ndarray:
        """Daily standard deviation (ddof=1) per asset over the last `window` rows."""
        v = self._vol.get(window)
        if v is None:
            c = self.centered(window)
            v = self._vol[window] = np.sqrt(np.einsum("ij,ij->j", c, c) / (c.shape[0] - 1))
        return v

    def correlation(self, window: int) -> np.ndarray:
        """Pearson correlations over the last `window` rows (a new array: the caller may
        change it). An asset whose returns are constant there (a bill fund, a halted one)
        correlates with nothing: 0 off the diagonal. It made the whole matrix None, and
        the correlation rule stood down for every other fund without a word."""
        r = self.returns[-window:]
        flat = (r == r[0]).all(axis=0)  # a column equal to its first row: max == min
        c = self.centered(window)
        cross = c.T @ c
        scale = np.sqrt(cross.diagonal())
        if not flat.any():
            return cross / (scale[:, None] * scale)  # np.outer's products, without its wrapper
        scale = np.where(flat, 1.0, scale)
        corr = cross / (scale[:, None] * scale)
        corr[flat, :] = 0.0
        corr[:, flat] = 0.0
        corr[flat, flat] = 1.0
        return corr
