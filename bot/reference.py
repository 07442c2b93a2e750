"""Reference portfolios the strategy is reported against, run through the same engine.

Running them through the engine (strategic weights, no overlay, no guard rules) means the
same fill model, costs and calendar apply to all, so differences come from the strategy.
"""

from __future__ import annotations

from typing import Literal

from bot.config import Asset, Settings

# name -> (weights, rebalance every N trading days; None = buy and hold)
REFERENCES: dict[str, tuple[dict[str, float], int | None]] = {
    "SPY buy-and-hold": ({"SPY": 1.0}, None),
    "60/40 SPY/IEF": ({"SPY": 0.6, "IEF": 0.4}, 21),
    "TQQQ only": ({"TQQQ": 1.0}, None),
}

NEVER = 10**9  # a rebalance period no backtest reaches


def fixed_weight_settings(
    base: Settings,
    weights: dict[str, float],
    every_days: int | None,
    schedule: Literal["every_n_days", "weekly"] | None = None,
) -> Settings:
    """`base` turned into a plain fixed-weight portfolio over `weights` (the leverage
    model's strategic weights), rebalanced on `schedule` (default: the base's).

    Plain means every rebalance trades back to the weights exactly: the strategy's
    minimum trade size (a cost filter of the strategy) is not applied to the portfolio
    it is measured against."""
    rebalance = {
        "every_days": every_days or NEVER, "drift": None, "on_defensive_change": False,
        "min_trade_shares": 0.0, "min_trade_notional": 0.0,
    }
    if schedule is not None and schedule != base.rebalance.schedule:
        rebalance |= {"schedule": schedule, "execution_lag_days": 0}
    universe = {
        sym: base.universe.get(sym, Asset()).model_copy(update={"weight": w})
        for sym, w in weights.items()
    }
    return base.model_copy(
        update={
            "universe": universe,
            "overlay": {},
            "strategy": base.strategy.model_copy(
                update={"kind": "leverage", "weighting": "strategic", "overlay_enabled": False}
            ),
            "risk": base.risk.model_copy(update={"rules": (), "position_cap": 1.0}),
            "rebalance": base.rebalance.model_copy(update=rebalance),
        }
    )


def reference_settings(base: Settings) -> dict[str, Settings]:
    """The report's comparison set: SPY, 60/40 (monthly), TQQQ, and the strategy's own
    strategic weights rebalanced on its period. A factor (robo) config is compared with
    SPY buy-and-hold and the whitepaper's static example allocation (its universe
    weights) rebalanced on the same weekly schedule."""
    if base.strategy.kind == "factor":
        static = {sym: a.weight for sym, a in base.universe.items()}
        spy, every = REFERENCES["SPY buy-and-hold"]
        return {
            "SPY buy-and-hold": fixed_weight_settings(base, spy, every, "every_n_days"),
            f"Whitepaper static {base.factor.profile} (weekly)": fixed_weight_settings(
                base, static, None
            ),
        }
    out = {
        name: fixed_weight_settings(base, w, every, "every_n_days")
        for name, (w, every) in REFERENCES.items()
    }
    strategic = {sym: a.weight for sym, a in base.universe.items()}
    out[f"Strategic fixed weights ({base.rebalance.every_days}d)"] = fixed_weight_settings(
        base, strategic, base.rebalance.every_days
    )
    return out


def reference_symbols() -> set[str]:
    return {sym for weights, _ in REFERENCES.values() for sym in weights}


def underlyings(settings: Settings) -> set[str]:
    """The unleveraged funds the universe's ETFs track (decay table, stress tests)."""
    return {a.underlying for a in settings.universe.values() if a.underlying}


def stress_symbols(settings: Settings) -> set[str]:
    """The funds `bot stress` reads: the stress factors' and the underlyings (decay table,
    stress rebuild)."""
    return underlyings(settings) | {settings.stress.market, settings.stress.rates}


def backtest_extras(settings: Settings) -> list[str]:
    """The funds `bot backtest` loads besides the universe: SPY, the reference
    portfolios' (with benchmarks on) and the underlyings. `bot sweep` loads the same:
    every file's days are trading days of the history, so a combination runs on the
    days its `bot backtest` does."""
    extra = reference_symbols() if settings.backtest.benchmarks else set()
    return sorted(extra | {"SPY"} | underlyings(settings))


def trading_symbols(settings: Settings) -> list[str]:
    """The universe, then the reference portfolios' funds: what a backtest needs."""
    return list(dict.fromkeys([*settings.symbols, *sorted(reference_symbols())]))


def supporting_symbols(settings: Settings) -> list[str]:
    """Funds some reports read besides `trading_symbols` (the stress funds). Without them
    those reports say what is missing; the strategy does not need them."""
    return sorted(stress_symbols(settings) - set(trading_symbols(settings)))
