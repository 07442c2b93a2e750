"""Weekly market regime from VIX, the 10y-2y spread and the policy-uncertainty index.

The rule is the research's: UNCERTAINTY if VIX > 35 and the curve is inverted by more
than 50 bp; else TRANSITION if VIX > 25 and policy uncertainty > 150; else GROWTH.
Inputs are the last values published strictly before the decision day, so a backtest
never sees a number a live bot could not have had.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from bot.config import RegimeSettings
from bot.data.base import SPREAD, UNCERTAINTY, VIX, MacroSeries
from bot.types import Regime, RegimeDecision


def classify(vix: float, spread: float, uncertainty: float, th: RegimeSettings) -> Regime:
    """The research's rule, with thresholds from config."""
    if vix > th.vix_uncertainty and spread < th.spread_inversion:
        return Regime.UNCERTAINTY
    if vix > th.vix_transition and uncertainty > th.uncertainty_transition:
        return Regime.TRANSITION
    return Regime.GROWTH


def _known_value(
    series: MacroSeries | None, day: np.datetime64, max_age_days: int
) -> tuple[float | None, dt.date | None, str | None]:
    """Last value before `day`, or a reason why there is none usable."""
    if series is None or len(series.dates) == 0:
        return None, None, "no data"
    found = series.as_of(day, strictly_before=True)
    if found is None:
        return None, None, "no value before the decision day"
    value, when = found
    age = int((day - when).astype("timedelta64[D]").astype(int))
    if age > max_age_days:
        return value, when.astype(dt.date), f"stale ({age} days old)"
    return value, when.astype(dt.date), None


def decide_regime(
    day: np.datetime64,
    macro: dict[str, MacroSeries],
    previous: Regime | None,
    th: RegimeSettings,
) -> RegimeDecision:
    """Classify the regime for `day`; on missing or stale inputs keep the previous regime."""
    vix, vix_date, vix_err = _known_value(macro.get(VIX), day, th.max_staleness_days)
    spread, spread_date, spread_err = _known_value(macro.get(SPREAD), day, th.max_staleness_days)
    epu, epu_date, epu_err = _known_value(macro.get(UNCERTAINTY), day, th.max_staleness_days)
    problems = [
        f"{name}: {err}"
        for name, err in ((VIX, vix_err), (SPREAD, spread_err), (UNCERTAINTY, epu_err))
        if err
    ]
    if problems:
        kept = previous or th.initial
        warning = "; ".join(problems) + f" -> kept {kept.value}"
        regime = kept
    else:
        assert vix is not None and spread is not None and epu is not None
        regime = classify(vix, spread, epu, th)
        warning = None
    return RegimeDecision(
        day=day.astype(dt.date),
        regime=regime,
        vix=vix,
        vix_date=vix_date,
        spread=spread,
        spread_date=spread_date,
        uncertainty=epu,
        uncertainty_date=epu_date,
        warning=warning,
    )
