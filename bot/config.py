"""Validated settings: TOML files in config/, secrets and paths from the environment.

Every field has a default that matches the research, so a config file only states what
it changes. Validation reports every bad field at once, by its dotted name, with what was
expected: users fix a config in one pass instead of one error per run. Types are strict:
"3" is not a number and "yes" is not a boolean (a quoted value is usually a mistake that
lax parsing would hide), and amounts that no run could mean are refused with their range.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.store.locate import SUPPORTED_BACKENDS, anchor_sqlite_url, env_store_url
from bot.types import Regime, is_ticker

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(ge=1)]
# TOML has no enums and no tuples: a string names a regime, an array is a tuple. These
# conversions stay allowed under the models' strict mode (only this level is relaxed).
Lax = Strict(False)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_iso_date(text: str) -> dt.date:
    """A calendar date written YYYY-MM-DD. Stricter than date.fromisoformat, which also
    takes 20100301 and 2010-W09, forms numpy and the reports do not read."""
    if not _ISO_DATE.fullmatch(text):
        raise ValueError("expected a date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError("expected a real calendar date YYYY-MM-DD") from None


def _date_text(value: Any) -> Any:
    """TOML's native dates (start = 2010-03-01, unquoted) are as good as quoted ones."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _check_date(text: str) -> str:
    parse_iso_date(text)
    return text


# Dates stay text (numpy and the reports take them as given) but must be real dates, so a
# typo fails `bot config check` instead of a backtest halfway through.
IsoDate = Annotated[str, BeforeValidator(_date_text), AfterValidator(_check_date)]


# The end of a report period: a date, or "present" for one still running (2025-present).
PRESENT = "present"


def _check_period_end(text: str) -> str:
    if text != PRESENT:
        try:
            parse_iso_date(text)
        except ValueError:
            raise ValueError('expected a date YYYY-MM-DD or "present"') from None
    return text


PeriodEnd = Annotated[str, BeforeValidator(_date_text), AfterValidator(_check_period_end)]

# The research's three regimes (001: 2017-2021, 2021-2025, 2025-present), as calendar
# years that do not overlap: a period ends the day before the next one starts.
RESEARCH_PERIODS: list[tuple[str, str, str]] = [
    ("Pre-pandemic growth 2017-2021", "2017-01-01", "2020-12-31"),
    ("Post-pandemic recovery 2021-2025", "2021-01-01", "2024-12-31"),
    ("Current environment 2025-present", "2025-01-01", PRESENT),
]


def in_range(low: float, high: float) -> AfterValidator:
    """A bound on both sides whose error states the whole range (pydantic's own names
    only the side that failed)."""

    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"expected a value from {low:g} to {high:g}")
        return value

    return AfterValidator(check)


def _check_allowed_day(entry: str) -> str:
    from bot.data.plausibility import allowed_day

    allowed_day(entry)
    return entry


# "TQQQ:2020-03-16": a day whose extreme value the data checks should accept.
AllowedDay = Annotated[str, AfterValidator(_check_allowed_day)]


def _check_database_url(url: str) -> str:
    """store.url must be a SQLAlchemy URL of a database the trade log supports: the
    engine would fail later otherwise, after the data had loaded."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        backend = None
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            "expected a SQLite or PostgreSQL database URL such as sqlite:///var/tradelog.sqlite "
            "or postgresql+psycopg://user@host/db"
        )
    return url


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default. inf and
    nan are refused too: no threshold or amount is meaningful as either, and a NaN cash
    balance would be stored as NaN equity. Types are strict ("3" is no number, "yes" no
    boolean); only enums and tuples take TOML's strings and arrays (see `Lax`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class Asset(_Strict):
    """One instrument of the universe: its leverage (beta) and strategic weight, and the
    unleveraged fund of the index it tracks (QQQ for TQQQ), which the volatility-decay
    table and the stress tests read; empty when the data has none."""

    leverage: Annotated[float, Field(gt=0.0, le=5.0)] = 1.0
    weight: Fraction = 0.0
    role: Literal["equity", "bond", "commodity"] = "equity"
    description: str = ""
    underlying: str = ""


class StrategySettings(_Strict):
    name: str = "diversified_leverage"

    @field_validator("name")
    @classmethod
    def _name_names_something(cls, name: str) -> str:
        """The name starts every client_order_id and keys the saved state (its letters,
        digits and '_'): a blank one would give every order a bare '-' prefix."""
        if not any(ch.isascii() and ch.isalnum() for ch in name):
            raise ValueError(f"expected a name with a letter or digit (it names the bot's "
                             f"orders and saved state), got {name!r}")
        return name

    kind: Literal["leverage", "factor"] = "leverage"  # which target model (bot.engine.build_model)
    weighting: Literal["inverse_vol", "erc", "mean_variance", "strategic"] = "inverse_vol"
    vol_window: Annotated[int, Field(ge=2, le=1000)] = 20
    cov_window: Annotated[int, Field(ge=2, le=1000)] = 60
    # mean_variance: w = argmin w'Sw - lambda mu'w, long only, capped at risk.position_cap;
    # S over mv_cov_window days, mu over mv_mean_window days (daily returns). The research
    # gives no lambda; 0 is the minimum-variance portfolio.
    mv_lambda: Annotated[float, Field(ge=0.0, le=1000.0)] = 1.0
    mv_mean_window: Annotated[int, Field(ge=2, le=1000)] = 252
    mv_cov_window: Annotated[int, Field(ge=2, le=1000)] = 60
    var_adjust: bool = True
    var_confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    var_window: Annotated[int, Field(ge=10, le=1000)] = 60
    var_factor_floor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    overlay_enabled: bool = True
    # When the baseline weights are computed: at every rebalance, or once a week, on the
    # week's first close, as the research's blueprint can be read (docs/strategy.md);
    # the risk guard runs at every rebalance either way.
    weights_every: Literal["rebalance", "week"] = "rebalance"


class SignalWeights(_Strict):
    """Weights of the four standardized signals in the composite score (sum to 1)."""

    relative_strength: Fraction = 0.30
    trend: Fraction = 0.30
    mean_reversion: Fraction = 0.25
    seasonality: Fraction = 0.15

    @model_validator(mode="after")
    def _sum_to_one(self) -> SignalWeights:
        total = self.relative_strength + self.trend + self.mean_reversion + self.seasonality
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"signal weights must sum to 1, got {total:.6f}")
        return self


class FactorSettings(_Strict):
    """The robo-advisor factor model (strategy.kind = "factor"); defaults are the
    whitepaper's balanced profile. See bot/strategy/factor.py for the exact rules."""

    profile: str = "balanced"
    weights: SignalWeights = SignalWeights()
    total_min: Annotated[float, Field(gt=0.0, le=2.0)] = 0.90  # band of the drawn total weight
    total_max: Annotated[float, Field(gt=0.0, le=2.0)] = 1.10
    max_weight: Annotated[float, Field(gt=0.0, le=1.0)] = 0.50  # LP upper bound per ETF
    seed: Annotated[int, Field(ge=0)] = 7  # with the decision date, seeds the draw of the total
    rs_window: Annotated[int, Field(ge=2, le=1000)] = 63  # relative strength: ~3 months
    tf_fast: Annotated[int, Field(ge=2, le=1000)] = 50  # trend: fast moving average
    tf_slow: Annotated[int, Field(ge=2, le=1000)] = 200  # trend: slow moving average
    mr_window: Annotated[int, Field(ge=1, le=250)] = 5  # mean reversion: recent return
    mr_lookback: Annotated[int, Field(ge=10, le=1000)] = 63  # ... against this many days
    se_min_years: Annotated[int, Field(ge=1, le=50)] = 3  # own-month average needs this many
    se_years: Annotated[int, Field(ge=1, le=50)] = 10  # ... of at most this many earlier years
    tom_days_before: Annotated[int, Field(ge=0, le=5)] = 1  # turn of month: last n days ...
    tom_days_after: Annotated[int, Field(ge=0, le=10)] = 3  # ... and first n days of a month
    holding_days: Annotated[int, Field(ge=1, le=30)] = 5  # sessions a decision is held
    intended_srri: Annotated[
        tuple[Annotated[int, Field(ge=1, le=7)], Annotated[int, Field(ge=1, le=7)]], Lax
    ] = (3, 5)
    priips_rhp_years: Annotated[float, Field(gt=0.0, le=30.0)] = 5.0  # recommended holding period

    @model_validator(mode="after")
    def _ordered(self) -> FactorSettings:
        problems = []
        if self.total_min > self.total_max:
            problems.append(f"total_min {self.total_min} must not exceed total_max {self.total_max}")
        if self.tf_fast >= self.tf_slow:
            problems.append(f"tf_fast {self.tf_fast} must be shorter than tf_slow {self.tf_slow}")
        # A window as long as the lookback is measured against its own mean (z = 0 always);
        # longer, it has no z at all and every decision falls back to the static mix.
        if self.mr_window >= self.mr_lookback:
            problems.append(
                f"mr_window {self.mr_window} must be shorter than mr_lookback {self.mr_lookback}"
            )
        if self.se_min_years > self.se_years:
            problems.append(f"se_min_years {self.se_min_years} must not exceed se_years {self.se_years}")
        if self.intended_srri[0] > self.intended_srri[1]:
            problems.append(f"intended_srri {list(self.intended_srri)} must be [low, high]")
        if problems:
            raise ValueError("; ".join(problems))
        return self


#: calendar days from a macro value's observation date to its publication (FRED)
PUBLICATION_LAG_DAYS = {"VIX": 0, "T10Y2Y": 0, "USEPUINDXD": 1}


def _over_default_lags(value: Any) -> Any:
    return {**PUBLICATION_LAG_DAYS, **value} if isinstance(value, dict) else value


class RegimeSettings(_Strict):
    """Thresholds of the weekly regime rule (research: VIX 35 / -50 bp, VIX 25 / EPU 150),
    each within the range its series can take (bot.data.plausibility.MACRO_RANGES)."""

    vix_uncertainty: Annotated[float, in_range(5.0, 150.0)] = 35.0
    spread_inversion: Annotated[float, in_range(-10.0, 10.0)] = -0.50
    vix_transition: Annotated[float, in_range(5.0, 150.0)] = 25.0
    uncertainty_transition: Annotated[float, in_range(0.0, 3000.0)] = 150.0
    max_staleness_days: PositiveInt = 10
    # The daily policy-uncertainty index is read as its mean over the last 7 calendar days
    # published: one day's value swings with the weekday (Sundays average 165 and exceed
    # 150 on 44% of days, Saturdays 122 and 24%, 2010-2024), so a single value made the
    # weekly rule depend on which weekday a holiday left last. 1 reads one day's value.
    uncertainty_mean_days: Annotated[int, Field(ge=1, le=31)] = 7
    initial: Annotated[Regime, Lax] = Regime.TRANSITION
    # Calendar days between a value's observation date and its publication: a value is
    # used from the day after it is published. The policy-uncertainty index of a day is
    # published the next day; VIX closes and the Treasury spread the same day. Backtest
    # and live read the series through the same rule.
    # A table naming some series keeps the others' defaults: `{ VIX = 1 }` must not give
    # the policy-uncertainty index a lag of 0 (a day's value used before it is published).
    publication_lag_days: Annotated[
        dict[Literal["VIX", "T10Y2Y", "USEPUINDXD"], Annotated[int, Field(ge=0, le=60)]],
        BeforeValidator(_over_default_lags),
    ] = Field(default_factory=lambda: dict(PUBLICATION_LAG_DAYS))

    @model_validator(mode="after")
    def _transition_below_uncertainty(self) -> RegimeSettings:
        if self.vix_transition > self.vix_uncertainty:
            raise ValueError(
                f"vix_transition {self.vix_transition:g} must not exceed vix_uncertainty "
                f"{self.vix_uncertainty:g} (TRANSITION is the milder regime; swapped values?)"
            )
        return self


RuleName = Literal["volatility", "drawdown", "correlation", "stops"]


class RiskSettings(_Strict):
    position_cap: Annotated[float, Field(gt=0.0, le=1.0)] = 0.30
    rules: Annotated[tuple[RuleName, ...], Lax] = ("volatility", "drawdown", "correlation", "stops")

    @field_validator("rules")
    @classmethod
    def _each_rule_once(cls, rules: tuple[str, ...]) -> tuple[str, ...]:
        """The rules in RuleName's order, each once. The list says which run, not in what
        order (the guard's is fixed), so two orders are one config: one fingerprint, and a
        sweep over both orders is refused as the same combination twice. A rule listed
        twice runs once, as it always has (refusing it would also refuse the stored
        configs of runs recorded with one)."""
        return tuple(name for name in get_args(RuleName) if name in rules)

    # Windows in trading days, at most 1000 (4 years) like the strategy's: a rule whose
    # window is longer than the data never fires, silently.
    vol_window: Annotated[int, Field(ge=2, le=1000)] = 20
    vol_history: Annotated[int, Field(ge=10, le=1000)] = 252
    vol_high: Annotated[float, Field(gt=1.0)] = 1.5
    vol_low: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.7
    high_vol_risk_scale: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.75
    low_vol_risk_scale: Annotated[float, Field(gt=1.0, le=3.0)] = 1.25
    # Share of the bond sleeve the low-volatility rule may not sell to fund the risk
    # assets' increase. 0 (the research's rule): it may sell all of it, and with the
    # default weights it does on about a quarter of the days (docs/strategy.md).
    low_vol_bond_floor: Fraction = 0.0
    drawdown_enter: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.10
    drawdown_exit: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    defensive_cash: Fraction = 0.50
    defensive_max_days: PositiveInt = 63
    correlation_window: Annotated[int, Field(ge=5, le=1000)] = 60
    correlation_max: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.80
    cluster_cap: Annotated[float, Field(gt=0.0, le=1.0)] = 0.45
    # stop = price x (1 - alpha x daily vol x regime factor): beyond 10 it never triggers
    stop_alpha: Annotated[float, Field(gt=0.0), in_range(0.0, 10.0)] = 3.0
    stop_regime_factor: dict[Annotated[Regime, Lax], Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=lambda: {
            Regime.GROWTH: 1.2,
            Regime.TRANSITION: 1.0,
            Regime.UNCERTAINTY: 0.8,
        }
    )

    @model_validator(mode="after")
    def _exit_below_enter(self) -> RiskSettings:
        if self.vol_window >= self.vol_history:
            raise ValueError(
                f"vol_window ({self.vol_window}) must be shorter than vol_history "
                f"({self.vol_history}), the level it is compared with"
            )
        if self.drawdown_exit >= self.drawdown_enter:
            raise ValueError(
                "drawdown_exit must be below drawdown_enter "
                f"(got exit {self.drawdown_exit} >= enter {self.drawdown_enter})"
            )
        missing = [r.value for r in Regime if r not in self.stop_regime_factor]
        if missing:
            raise ValueError(f"stop_regime_factor needs a factor for {missing}")
        return self


class RebalanceSettings(_Strict):
    """When to trade: `every_n_days` (the leverage strategy: every N trading days or on
    drift) or `weekly` (the factor model: on the last trading day of each week). Orders
    go out `execution_lag_days` trading days after the decision (0: at once, i.e. filled
    at the next open; 5: about a week later)."""

    schedule: Literal["every_n_days", "weekly"] = "every_n_days"
    execution_lag_days: Annotated[int, Field(ge=0, le=30)] = 0
    every_days: PositiveInt = 4
    drift: Annotated[float, Field(ge=0.0, le=1.0)] | None = 0.05
    min_trade_shares: Annotated[float, Field(ge=0.0)] = 0.0
    min_trade_notional: Annotated[float, Field(ge=0.0)] = 50.0
    fractional: bool = True
    on_defensive_change: bool = True


FillModel = Literal["next_open", "next_close", "same_close"]


class BacktestSettings(_Strict):
    start: IsoDate | None = "2010-03-01"
    end: IsoDate | None = None
    initial_cash: Annotated[float, in_range(100.0, 1e11)] = 100_000.0
    fill: FillModel = "next_open"
    commission_per_share: Annotated[float, Field(ge=0.0)] = 0.0
    commission_bps: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.0
    slippage_bps: Annotated[float, Field(ge=0.0, le=1000.0)] = 5.0
    benchmarks: bool = True
    # (name, first day, last day or "present"); a period the run does not reach is left
    # out of the report.
    periods: list[Annotated[tuple[str, IsoDate, PeriodEnd], Lax]] = Field(
        default_factory=lambda: list(RESEARCH_PERIODS)
    )

    @model_validator(mode="after")
    def _spans_ordered(self) -> BacktestSettings:
        problems = []
        if self.start and self.end and self.start >= self.end:
            problems.append(f"start {self.start} must be before end {self.end}")
        for i, (name, start, end) in enumerate(self.periods):
            if end != PRESENT and start >= end:
                problems.append(f"periods[{i}] {name!r}: start {start} must be before end {end}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DataSettings(_Strict):
    """Where history comes from, and how strict the plausibility checks of every loaded
    series are (bot.data.plausibility): a daily log move is refused when it exceeds both
    `jump_floor` and `jump_scale_multiple` x the series' robust daily scale; a real
    extreme day is accepted with `allow_extreme = ["TQQQ:2020-03-16", "VIX:2020-03-16"]`."""

    source: Literal["auto", "csv", "synthetic"] = "auto"
    directory: str = "data"  # inside the clone: where `bot data fetch` writes
    # Alpaca's daily bars: "sip" (every exchange: the official open and close auctions;
    # free for data older than 15 minutes, which is all the bot asks bars for) or "iex"
    # (one exchange's prints: a thin fund may miss a day)
    alpaca_feed: Literal["iex", "sip"] = "sip"
    # Alpaca's latest trade prices, which size orders: "iex" (free, real time), "sip"
    # (needs Alpaca's paid plan: free keys get HTTP 403) or "delayed_sip" (15 minutes old)
    alpaca_latest_feed: Literal["iex", "sip", "delayed_sip"] = "iex"
    synthetic_seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 7  # numpy seeds are non-negative
    synthetic_start: IsoDate = "2008-01-02"
    synthetic_end: IsoDate = "2024-12-31"
    jump_scale_multiple: Annotated[float, in_range(5.0, 1000.0)] = 25.0
    jump_floor: Annotated[float, in_range(0.05, 5.0)] = 0.25
    allow_extreme: Annotated[tuple[AllowedDay, ...], Lax] = ()

    @model_validator(mode="after")
    def _span_ordered(self) -> DataSettings:
        if self.synthetic_start >= self.synthetic_end:
            raise ValueError(
                f"synthetic_start {self.synthetic_start} must be before "
                f"synthetic_end {self.synthetic_end}"
            )
        return self


class StressSettings(_Strict):
    """The factor model of `bot stress` (bot/stress.py). Two factors: the equity market
    (the return of `market`) and long Treasury yields, whose change moves the `rates`
    fund by -duration x change. `durations` are effective durations in years, an
    assumption (iShares gives TLT about 16-17 years over 2020-2024); a fund listed there
    moves by its own duration. Every other sensitivity is estimated on the data's daily
    returns between calibration_start and calibration_end (default: all of it)."""

    market: str = "SPY"
    rates: str = "TLT"
    durations: dict[str, Annotated[float, Field(gt=0.0, le=40.0)]] = Field(
        default_factory=lambda: {"TLT": 16.5}
    )
    calibration_start: IsoDate | None = None
    calibration_end: IsoDate | None = None

    @field_validator("durations")
    @classmethod
    def _durations_by_ticker(cls, durations: dict[str, float]) -> dict[str, float]:
        """Keys are matched to the data's columns as written: 'tlt' would never match TLT."""
        bad = [key for key in durations if not is_ticker(key)]
        if bad:
            raise ValueError(f"expected tickers in capitals as keys (e.g. TLT), got {bad}")
        return durations

    @model_validator(mode="after")
    def _rates_have_a_duration(self) -> StressSettings:
        for name, fund in (("market", self.market), ("rates", self.rates)):
            if not is_ticker(fund):
                raise ValueError(f"{name}: expected a ticker in capitals (e.g. SPY), got {fund!r}")
        if self.rates not in self.durations:
            raise ValueError(f"durations needs the duration of the rates fund {self.rates!r}")
        start, end = self.calibration_start, self.calibration_end
        if start is not None and end is not None and start >= end:
            raise ValueError(f"calibration_start {start} must come before calibration_end {end}")
        return self


NotifyEvent = Literal["trades", "risk", "failures", "daily"]


class NotifySettings(_Strict):
    """What the daemon reports through the notification URLs (bot.notify). The URLs
    themselves carry tokens, so they come from BOT_NOTIFY_URLS (environment or secrets
    file), never from this file."""

    events: Annotated[tuple[NotifyEvent, ...], Lax] = ("trades", "risk", "failures", "daily")
    replay: bool = False  # also notify during `bot run --replay` (off: replays stay fast and quiet)


class StoreSettings(_Strict):
    url: Annotated[str, AfterValidator(_check_database_url)] = "sqlite:///var/tradelog.sqlite"


class Settings(_Strict):
    """The whole configuration of one strategy instance."""

    strategy: StrategySettings = StrategySettings()
    universe: dict[str, Asset]
    factor: FactorSettings = FactorSettings()
    regime: RegimeSettings = RegimeSettings()
    overlay: dict[Annotated[Regime, Lax], dict[str, Annotated[float, Field(ge=0.0)]]] = Field(
        default_factory=dict
    )
    risk: RiskSettings = RiskSettings()
    rebalance: RebalanceSettings = RebalanceSettings()
    backtest: BacktestSettings = BacktestSettings()
    data: DataSettings = DataSettings()
    store: StoreSettings = StoreSettings()
    stress: StressSettings = StressSettings()
    notify: NotifySettings = NotifySettings()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = []
        if not self.universe:
            problems.append("universe: expected at least one asset")
        for sym, asset in self.universe.items():
            if not is_ticker(sym):
                problems.append(f"universe.{sym}: expected an upper-case ticker symbol")
            if asset.underlying and (not is_ticker(asset.underlying) or asset.underlying == sym):
                problems.append(
                    f"universe.{sym}.underlying: expected the upper-case ticker of another "
                    f"fund (or empty), got {asset.underlying!r}"
                )
        total = sum(a.weight for a in self.universe.values())
        if self.universe and abs(total - 1.0) > 1e-6:
            problems.append(f"universe.*.weight: strategic weights must sum to 1, got {total:.6f}")
        for regime, table in self.overlay.items():
            for sym in table:
                if sym not in self.universe:
                    problems.append(
                        f"overlay.{regime.value}.{sym}: not in universe {sorted(self.universe)}"
                    )
            # A symbol the table leaves out keeps multiplier 1 (bot.strategy.leverage).
            if self.universe and all(table.get(sym, 1.0) == 0.0 for sym in self.universe):
                problems.append(
                    f"overlay.{regime.value}: every multiplier is 0, which leaves nothing to "
                    "weigh; give at least one asset a multiplier above 0"
                )
        if len(self.universe) == 1 and self.strategy.weighting in ("erc", "mean_variance"):
            problems.append(
                f"strategy.weighting: {self.strategy.weighting} weighs assets against each "
                "other and needs at least two in the universe (one asset: inverse_vol or "
                "strategic)"
            )
        problems += self._unknown_waivers()
        if self.strategy.kind == "factor" and self.risk.position_cap < self.factor.max_weight - 1e-12:
            problems.append(
                f"risk.position_cap: {self.risk.position_cap:g} is below factor.max_weight "
                f"{self.factor.max_weight:g}: the guard would cut the optimiser's answer and "
                "spread the excess over the lowest-scored funds, which no LP chose; set "
                "risk.position_cap equal to factor.max_weight"
            )
        if self.universe and self.risk.position_cap * len(self.universe) < 1.0 - 1e-9:
            problems.append(
                f"risk.position_cap: {self.risk.position_cap} x {len(self.universe)} assets "
                "cannot hold 100% (raise the cap or add assets)"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _unknown_waivers(self) -> list[str]:
        """data.allow_extreme entries naming no series the bot loads for this config: the
        waiver compares names exactly, so "tqqq" or "TQQQQ" could never apply, and the
        load would still stop on the day it was meant to accept."""
        from bot.data.base import MACRO_SERIES
        from bot.reference import reference_symbols, stress_symbols

        known = {*self.universe, *reference_symbols(), *stress_symbols(self), "SPY", *MACRO_SERIES}
        problems = []
        for entry in self.data.allow_extreme:
            name = entry.partition(":")[0].strip()
            if name not in known:
                problems.append(
                    f"data.allow_extreme: {entry!r} names {name!r}, which is none of the "
                    f"series this config loads ({', '.join(sorted(known))}): it would never apply"
                )
        return problems

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.universe)

    def fingerprint(self) -> str:
        """A short hash that identifies this exact configuration in the trade log (the
        stored form: a password does not change it, nor can it be guessed from it)."""
        blob = json.dumps(self.stored_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def stored_dict(self) -> dict:
        """The configuration as the trade log keeps it (runs.config): the password of
        store.url replaced by ***, since the database must never hold a secret."""
        from bot.store.engines import mask_url

        raw = self.model_dump(mode="json")
        raw["store"]["url"] = mask_url(raw["store"]["url"])
        return raw


def _describe(err: dict) -> str:
    """One line per pydantic error: dotted field name, what was expected, what was given."""
    path = [
        str(p) for p in err["loc"]
        if p != "[key]" and not str(p).startswith(("function-after", "function-before"))
    ]
    loc = ".".join(path)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg += _known_names(path)
    given = err.get("input")
    database_url = loc.endswith(".url") and isinstance(given, str)
    if database_url:  # may hold a password
        from bot.store.engines import mask_url

        given = mask_url(given)
    # An unknown key's value is never quoted: a password or a notification URL put in
    # the config by mistake (they belong in the environment) would reach the terminal
    # and the daemon's journal. Nor is any other value holding a URL (its token).
    if isinstance(given, dict) or err["type"] in ("missing", "extra_forbidden"):
        shown = ""
    elif _names_a_secret(path) or (isinstance(given, str) and _keyed_entry(path)):
        # APCA_API_SECRET_KEY = "..." pasted under [universe] or [overlay.X] is read as
        # an asset or a multiplier of that name: its value is no one's to see
        shown = " (a string, not shown: it may be a secret)"
    elif "://" in repr(given) and not database_url:
        shown = " (got a URL, not shown: it may hold a token)"
    elif isinstance(given, str) and repr(given) in msg:  # the message names it already
        shown = ""
    elif isinstance(given, dt.datetime):  # as the TOML file wrote it
        shown = f" (got {given.isoformat()})"
    else:
        shown = f" (got {given!r})"
    if err["type"] == "missing" and len(path) == 4 and path[:2] == ["backtest", "periods"]:
        msg = "expected [name, start, end], e.g. [\"2020 crash\", \"2020-02-19\", \"2020-03-23\"]"
    hint = _STRICT_HINTS.get((err["type"], type(given)), "")
    if err["type"] in ("float_type", "int_type") and isinstance(given, str) and not _numeric(given):
        hint = ""  # "abc" is no quoted number: the message says a number is expected
    return f"{loc or '<root>'}: {msg}{shown}{hint}"


_SECRET_WORDS = ("key", "secret", "token", "passw")


def _names_a_secret(path: list[str]) -> bool:
    """A location whose name says it holds a secret (no setting's name does)."""
    return any(word in str(part).lower() for part in path for word in _SECRET_WORDS)


def _keyed_entry(path: list[str]) -> bool:
    """An entry of a table keyed by the user's names (an asset of [universe], a
    multiplier of [overlay.REGIME]): a string there is a setting put in the wrong table."""
    return (len(path) == 2 and path[0] == "universe") or (len(path) == 3 and path[0] == "overlay")


def describe_override(spec: str) -> str:
    """A --set KEY=VALUE for a message: a value holding a URL (a database password, a
    notification token) or under a secret-sounding name is not repeated."""
    key, sep, value = spec.partition("=")
    if sep and ("://" in value or _names_a_secret([key])):
        return f"{key}=(not shown)"
    return spec


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _known_names(path: list[str]) -> str:
    """For an unknown key: the field it was probably meant to be, else the fields its
    table has ("risk.vol_hgih" -> "vol_high"), so a typo is fixed without the docs."""
    kind: Any = Settings
    for part in path[:-1]:
        while get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        if get_origin(kind) is dict:  # universe.TQQQ: the key is a symbol, not a field
            kind = get_args(kind)[1]
        elif isinstance(kind, type) and issubclass(kind, BaseModel) and part in kind.model_fields:
            kind = kind.model_fields[part].annotation
        else:
            return ""
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        return ""
    names = list(kind.model_fields)
    close = difflib.get_close_matches(path[-1], names, n=1)
    return f"; did you mean {close[0]}?" if close else f"; expected one of {', '.join(names)}"


# What to write instead, for the values strict types refuse that lax parsing would take.
_STRICT_HINTS: dict[tuple[str, type], str] = {
    ("float_type", str): ": write the number without quotes",
    ("int_type", str): ": write the number without quotes",
    ("int_type", float): ": expected a whole number (no decimal point)",
    ("bool_type", str): ": write true or false, without quotes",
    ("bool_type", int): ": write true or false",
    ("string_type", dt.datetime): ": expected a date YYYY-MM-DD, without a time",
    ("tuple_type", str): ': write a list in brackets, e.g. ["a", "b"]',
}


def parse_settings(raw: dict, source: str = "<dict>") -> Settings:
    """Validate a raw mapping; raise ConfigError listing every problem."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = _problems(exc.errors())
        problems += [p for p in _checks_between_fields(raw, exc) if p not in problems]
        raise ConfigError(source, problems) from None


def _problems(errors: list) -> list[str]:
    problems = []
    for err in errors:
        if err["type"] == "value_error" and not err["loc"]:
            problems.extend(err["msg"].removeprefix("Value error, ").split("\n"))
        else:
            problems.append(_describe(err))
    return problems


def _checks_between_fields(raw: dict, exc: ValidationError) -> list[str]:
    """What the checks between fields find (weights summing to 1, drawdown exit below
    entry, overlay symbols in the universe): pydantic runs them only once every field of
    their table parses, so one typo hid them until the next try. The mapping is checked
    again without the fields already reported (their defaults stand in), and only those
    checks' findings are kept: every problem in one pass. A check reading a table that
    lost a field to a default would judge the default, not the file (a quoted "0.15"
    made "exit 0.12 >= enter 0.1"): findings about such tables, or naming the universe
    once an entry of it was set aside, are left out."""
    import copy

    pruned = copy.deepcopy(raw)
    dropped: set[str] = set()  # tables with a field replaced by its default: no findings on them
    found: list[str] = []
    errors = exc.errors()
    for _ in range(3):  # a table's own check failing hides the checks of the whole file
        for err in errors:
            _drop(pruned, err["loc"])
            if err["loc"] and err["type"] != "extra_forbidden":  # an unknown key hides no value
                dropped.add(str(err["loc"][0]))
        try:
            Settings.model_validate(pruned)
            break
        except ValidationError as again:
            errors = again.errors()
            # checks across tables (no location of their own) read the universe: once
            # an entry of it was set aside they judge the rest ("0.3 x 3 assets" of 4)
            checks = [e for e in errors if e["type"] == "value_error"
                      and not ("universe" in dropped and not e["loc"])]
            found += [p for p in _problems(checks)
                      if p.split(".", 1)[0].split(":", 1)[0] not in dropped
                      and not ("universe" in dropped and "universe" in p)]
            if all(not e["loc"] for e in errors):  # nothing left to set aside
                break
        except Exception:  # noqa: BLE001 - a second opinion only; the first errors stand
            break
    return list(dict.fromkeys(found))


def _drop(raw: Any, loc: tuple) -> None:
    """Remove the value at `loc` (a pydantic error location) from nested mappings; a
    location inside a list drops the whole list."""
    parent: Any = None
    key: Any = None
    node = raw
    for part in loc:
        if not isinstance(node, dict):
            break
        if part not in node:
            return
        parent, key, node = node, part, node[part]
    if isinstance(parent, dict):
        parent.pop(key, None)


def load_settings(path: str | Path) -> Settings:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        raw = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_settings(raw, str(path))


def _read_text(path: Path) -> str:
    """The file's text, or a ConfigError naming it: a wrong path given to `bot config
    check` (a directory, a binary file) is a user's mistake, not a crash."""
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is no TOML error
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), ["is a directory, expected a TOML file"]) from None
    except PermissionError:
        raise ConfigError(str(path), ["permission denied"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not UTF-8 text (byte {exc.start}): expected a TOML file"]
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot be read: {exc.strerror or exc}"]) from None


def _config_base(config_path: Path | None) -> Path:
    """Where relative paths in a config file start: for a file in a folder named
    `config`, that folder's parent (the repository root for config/*.toml); for any
    other file, its own folder (a copy in ~/bot/my.toml keeps var/ and data/ in ~/bot,
    not in ~); the working directory without a file."""
    if config_path is None:
        return Path.cwd()
    folder = config_path.resolve().parent
    return folder.parent if folder.name == "config" else folder


class DefaultDataDir(type(Path())):  # type: ignore[misc]
    """The data directory nobody chose (no --data-dir, no BOT_DATA_DIR, the default
    data.directory). Only here may missing data mean the synthetic market: a directory the
    user named and mistyped must fail, not quietly backtest made-up prices."""


def resolve_data_dir(settings: Settings, config_path: Path | None) -> Path:
    """BOT_DATA_DIR wins; a relative directory is taken from where the config's relative
    paths start (_config_base: the repository root for files in config/), so commands
    work from any directory. The
    default directory comes back as a DefaultDataDir (see there)."""
    env = os.environ.get("BOT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    d = Path(settings.data.directory).expanduser()
    if not d.is_absolute():
        d = (_config_base(config_path) / d).resolve()
    if settings.data.directory == DataSettings.model_fields["directory"].default:
        return DefaultDataDir(d)
    return d


def resolve_store_url(settings: Settings, config_path: Path | None) -> str:
    """BOT_DATABASE_URL wins; a relative SQLite path in store.url is anchored like the
    data directory (_config_base)."""
    return env_store_url() or anchor_sqlite_url(settings.store.url, _config_base(config_path))
