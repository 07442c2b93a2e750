"""The diversified-leverage model: risk-parity baseline, regime overlay, risk guard."""

from __future__ import annotations

import math

import numpy as np

from bot.config import Settings
from bot.risk import GuardInputs, guard
from bot.strategy.base import DecisionContext, TargetDecision
from bot.strategy.weights import (
    apply_overlay,
    erc_weights,
    inverse_vol_weights,
    mean_variance_weights,
)
from bot.strategy.window_stats import WindowStats
from bot.types import Regime, TargetRow


class LeverageModel:
    """inverse_vol | erc | strategic weights -> overlay -> guard, as the research lays out."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.symbols = symbols = settings.symbols
        universe = settings.universe
        self.leverage = np.array([universe[s].leverage for s in symbols])
        self.is_bond = np.array([universe[s].role == "bond" for s in symbols])
        self.strategic = np.array([universe[s].weight for s in symbols])
        self.overlay = {
            r: np.array([settings.overlay.get(r, {}).get(s, 1.0) for s in symbols]) for r in Regime
        }
        # The assets each regime's overlay does not cut: only they take what the cap frees.
        self.not_cut = {r: multipliers >= 1.0 for r, multipliers in self.overlay.items()}
        st, rk = settings.strategy, settings.risk
        rules = set(rk.rules)
        needs_returns = st.weighting != "strategic" or bool(
            rules & {"volatility", "correlation", "stops"}
        )
        self.returns_window = (
            max(
                st.vol_window,
                st.cov_window if st.weighting == "erc" else 0,
                max(st.mv_mean_window, st.mv_cov_window) if st.weighting == "mean_variance" else 0,
                st.var_window if st.var_adjust and st.weighting == "inverse_vol" else 0,
                rk.vol_history if "volatility" in rules else 0,
                rk.correlation_window if "correlation" in rules else 0,
                rk.vol_window,
            )
            if needs_returns
            else 0
        )

        # returns_window trading days back, in calendar days, with room for holidays
        self.history_calendar_days = max(550, int(self.returns_window * 1.5) + 30)
        self._strategic_by_listing: dict[bytes, np.ndarray | None] = {}
        # Without returns (strategic weights, no rule reading a window) a decision depends
        # only on which assets are listed, the regime and defensive mode: made once each.
        self._decisions: dict[tuple[bytes, Regime, bool], TargetDecision] | None = (
            None if needs_returns else {}
        )
        self._weekly = st.weights_every == "week" and st.weighting != "strategic"
        self._week_baselines: dict[np.datetime64, tuple[np.ndarray, str]] = {}

    def decide(self, ctx: DecisionContext) -> TargetDecision:
        known = self._decisions
        if known is None:
            return self._decide(ctx)
        key = (ctx.tradable.tobytes(), ctx.regime, ctx.defensive)
        decision = known.get(key)
        if decision is None:
            decision = self._decide(ctx)
            if not decision.events:  # events name their day: never reused
                decision.weights.flags.writeable = False  # shared by every such rebalance
                known[key] = decision
        return decision

    def _decide(self, ctx: DecisionContext) -> TargetDecision:
        stats = WindowStats(ctx.returns)  # shared by the weights and the guard
        baseline, how = (
            self._weekly_baseline(ctx) if self._weekly
            else self.baseline(ctx.returns, ctx.tradable, stats)
        )
        overlaid = (
            apply_overlay(baseline, self.overlay[ctx.regime])
            if self.settings.strategy.overlay_enabled
            else baseline
        )
        result = guard(
            overlaid,
            GuardInputs(
                ctx.day, ctx.symbols, self.is_bond, ctx.returns, ctx.closes[-1], ctx.regime,
                ctx.defensive, ctx.tradable, stats,
                self.not_cut[ctx.regime] if self.settings.strategy.overlay_enabled else None,
            ),
            self.settings.risk,
        )
        # Python floats from one tolist() per array: the same values as float(array[i]),
        # without a numpy scalar per element.
        rows = [
            TargetRow(sym, b, o, f, None if math.isnan(stop) else stop, (how, *reasons))
            for sym, b, o, f, stop, reasons in zip(
                ctx.symbols, baseline.tolist(), overlaid.tolist(), result.weights.tolist(),
                result.stops.tolist(), result.reasons, strict=True,
            )
        ]
        stops = result.stops if "stops" in self.settings.risk.rules else None
        return TargetDecision(result.weights, rows, result.events, stops)

    def _weekly_baseline(self, ctx: DecisionContext) -> tuple[np.ndarray, str]:
        """strategy.weights_every = "week": the baseline of the week's first close (the
        same for every rebalance of the week, and after a restart), unless the funds
        priced then and now differ: then today's."""
        from bot.calendar import week_numbers
        from bot.engine import decision_context

        weeks = week_numbers(ctx.dates[-10:])  # a week has at most 5 sessions
        first = ctx.t - int(np.count_nonzero(weeks == weeks[-1])) + 1
        known = self._week_baselines.get(ctx.dates[first])
        if known is None:
            start = decision_context(self, ctx.symbols, ctx.dates, ctx.closes, first,
                                     ctx.regime, ctx.defensive)
            if not np.array_equal(start.tradable, ctx.tradable):
                return self.baseline(ctx.returns, ctx.tradable)
            weights, how = self.baseline(start.returns, start.tradable)
            day = str(ctx.dates[first])[:10]
            known = self._week_baselines[ctx.dates[first]] = (weights, f"{how}, as of {day}")
        return known

    def baseline(
        self, rets: np.ndarray, tradable: np.ndarray, stats: WindowStats | None = None
    ) -> tuple[np.ndarray, str]:
        """Strategy weights before the overlay, and how they were obtained; `stats`: the
        decision's statistics of `rets`, if already made."""
        st = self.settings.strategy
        strategic = self._strategic(tradable)
        if strategic is None:  # before any asset of the universe is listed
            return np.zeros(len(tradable)), "no asset has a price yet: all cash"
        if st.weighting == "strategic":
            return strategic, "strategic weights"
        if not tradable.all() or rets.shape[0] < st.vol_window:
            return strategic, f"{st.weighting}: insufficient history, strategic weights used"
        if st.weighting == "erc":
            window = rets[-st.cov_window :]
            if window.shape[0] < len(tradable) + 1:
                return strategic, "erc: insufficient history, strategic weights used"
            cov = np.cov(window, rowvar=False)
            flat = self._flat(np.sqrt(np.clip(np.diag(cov), 0.0, None)), window.shape[0])
            if flat:
                return strategic, f"erc: {flat}, strategic weights used"
            try:
                return erc_weights(cov), f"erc over {window.shape[0]} days"
            except ArithmeticError as exc:  # never seen on real windows; a decision must not fail
                return strategic, f"erc: {exc}, strategic weights used"
        if st.weighting == "mean_variance":
            return self._mean_variance(rets, strategic)
        stats = stats or WindowStats(rets)
        flat = self._flat(stats.vol(st.vol_window), st.vol_window)
        if flat:
            return strategic, f"inverse_vol: {flat}, strategic weights used"
        var = rets[-st.var_window :] if st.var_adjust and rets.shape[0] >= st.var_window else None
        result = inverse_vol_weights(
            rets[-st.vol_window :], self.leverage, var, st.var_confidence, st.var_factor_floor,
            stats,
        )
        how = f"inverse vol {st.vol_window}d / leverage" + (" x VaR factor" if var is not None else "")
        return result.weights, how

    def _flat(self, vol: np.ndarray, days: int) -> str:
        """Which assets did not move over the window (volatility 0: a fund whose price
        stood still, such as a T-bill fund over a quiet month), whose inverse would be
        infinite; '' if none."""
        flat = [sym for sym, v in zip(self.symbols, vol.tolist(), strict=True) if not v > 0.0]
        return f"{', '.join(flat)} did not move over {days} days (volatility 0)" if flat else ""

    def _strategic(self, tradable: np.ndarray) -> np.ndarray | None:
        """The strategic weights of the assets priced today, scaled to sum to 1 (None if
        none is). Every decision asks and the answer changes only when an asset lists,
        so it is kept per set of priced assets, read-only: a caller cannot alter it."""
        key = tradable.tobytes()
        try:
            return self._strategic_by_listing[key]
        except KeyError:
            pass
        strategic = np.where(tradable, self.strategic, 0.0)
        total = strategic.sum()
        weights = None if total <= 0 else strategic / total
        if weights is not None:
            weights.flags.writeable = False
        self._strategic_by_listing[key] = weights
        return weights

    def _mean_variance(self, rets: np.ndarray, strategic: np.ndarray) -> tuple[np.ndarray, str]:
        """argmin w'Sw - lambda mu'w within the position cap (weights.mean_variance_weights)."""
        st = self.settings.strategy
        if rets.shape[0] < max(st.mv_mean_window, st.mv_cov_window, len(strategic) + 1):
            return strategic, "mean_variance: insufficient history, strategic weights used"
        cov = np.cov(rets[-st.mv_cov_window :], rowvar=False)
        mu = rets[-st.mv_mean_window :].mean(axis=0)
        weights = mean_variance_weights(cov, mu, st.mv_lambda, self.settings.risk.position_cap)
        how = (
            f"mean-variance, lambda {st.mv_lambda:g}: covariance over {st.mv_cov_window} days, "
            f"means over {st.mv_mean_window} days, cap {self.settings.risk.position_cap:g}"
        )
        return weights, how
