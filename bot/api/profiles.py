"""The robo profiles the API serves: their configs, their data, and the engine's own code
for each answer.

An allocation is `FactorModel.explain` on the context `bot.engine.decision_context`
builds from the profile's history up to the close of the asked day: what the engine
decides there, with every signal, score and reason. A plan is `bot.planner.plan_orders`
sizing that decision for a client's holdings at the same close, as the engine's
`_send` does. Suitability is `bot suitability`'s report of the profile. Nothing here
decides anything itself.

Profile-level answers hold no account's memory: no drawdown defence (an account in
defensive mode would hold less), and the regime, when the config uses one, is decided
afresh on the first session of the asked day's week.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bot.accounts.registry import PROFILES, profile_config
from bot.calendar import week_ends, week_numbers
from bot.config import RebalanceSettings, Settings, load_settings, resolve_data_dir
from bot.data.base import MarketData
from bot.data.file_set import INCOMPLETE_MARKER
from bot.data.history import load_history
from bot.engine import decision_context
from bot.errors import BotError, ConfigError
from bot.planner import below_minimum_trade, plan_orders
from bot.store.export import plain
from bot.strategy.factor import FactorExplanation, FactorModel, lp_reason, score_rank
from bot.strategy.factor_signals import SIGNALS
from bot.strategy.regime import decide_regime
from bot.types import Regime, Side

CACHE_SIZE = 512  # (profile, day) allocations kept; one is a few kB


class NotFound(BotError):
    """A profile, day or account the request names does not exist (HTTP 404)."""


class FieldProblem(BotError):
    """A request field the models accept but the profile does not (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class ProfileSpec:
    """A profile as `bot serve` is told it: a name and the config file it trades."""

    name: str
    config: Path


def default_specs() -> list[ProfileSpec]:
    """The three MiFID II profiles of the account registry (config/robo_*.toml)."""
    return [ProfileSpec(name, profile_config(name)) for name in PROFILES]


def parse_spec(text: str) -> ProfileSpec:
    """`NAME=FILE`, or `FILE` (named by its factor.profile)."""
    name, sep, path = text.partition("=")
    if not sep:
        path = text
        name = load_settings(path).factor.profile
    if not name.strip() or not path.strip():
        raise BotError(f"--profile {text!r}: expected NAME=CONFIG_FILE or CONFIG_FILE")
    return ProfileSpec(name.strip(), Path(path.strip()))


#: (name, size, modification time in ns) of each CSV of a data directory
DataFiles = tuple[tuple[str, int, int], ...]


def data_files(directory: Path) -> DataFiles:
    """What says a data directory changed: `bot data fetch` renames each new file into
    place, so a changed file has a new size or time (a file vanishing mid-scan is left out).
    The marker of a fetch left half done counts too: the loader refuses the folder while
    it is there, and its removal by the next fetch (which may rewrite no file, the
    interrupted one having renamed them all) must be seen as a change to load again."""
    found = []
    marker = directory / INCOMPLETE_MARKER
    paths = [*directory.glob("prices/*.csv"), *directory.glob("macro/*.csv")]
    for path in sorted(paths) + ([marker] if marker.exists() else []):
        try:
            st = path.stat()
        except OSError as exc:  # gone mid-scan, a broken link, no permission
            found.append((f"{path.parent.name}/{path.name}", -1, exc.errno or 0))
            continue
        found.append((f"{path.parent.name}/{path.name}", st.st_size, st.st_mtime_ns))
    return tuple(found)


@dataclass
class Profile:
    """One served profile: validated settings, its market history, its model."""

    name: str
    config: Path
    settings: Settings
    market: MarketData
    model: FactorModel
    dates: np.ndarray  # trading days of the history (datetime64[D])
    close: np.ndarray  # (days, assets) closes of the universe, NaN before listing
    data_dir: Path | None = None  # the CSV directory it was read from (None: synthetic)
    files: DataFiles = ()  # that directory's files as they were when read
    generation: int = 0  # loads of this profile so far: its cached answers are per load

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.settings.symbols

    @cached_property
    def week_ends(self) -> np.ndarray:
        """True on the last session of each week: a weekly schedule's decision days."""
        return week_ends(self.dates)

    @property
    def latest_day(self) -> dt.date:
        return self.dates[-1].astype(dt.date)

    def in_force(self, t: int) -> int:
        """The decision day whose weights hold at day t: a weekly profile decides on the
        last session of each week and keeps those weights until the next one (a
        mid-week decision is what no account of it trades); others decide every day."""
        if self.settings.rebalance.schedule != "weekly":
            return t
        ends = np.flatnonzero(self.week_ends[: t + 1])
        return int(ends[-1]) if ends.size else t

    def day_index(self, day: dt.date | None) -> int:
        """The trading day a request means: the last one on or before `day`, or without a
        day the latest one; a day outside the data is NotFound."""
        if day is None:
            return len(self.dates) - 1
        first = self.dates[0].astype(dt.date)
        if day < first or day > self.latest_day:
            raise NotFound(
                f"date {day.isoformat()}: profile {self.name!r} has data from "
                f"{first.isoformat()} to {self.latest_day.isoformat()}"
            )
        return int(np.searchsorted(self.dates, np.datetime64(day), side="right")) - 1


@dataclass(frozen=True)
class Decision:
    """The model's decision at the close of trading day `t` of a profile."""

    profile: Profile
    t: int
    day: dt.date
    regime: Regime | None  # None: the config uses no regime
    explanation: FactorExplanation

    @property
    def weights(self) -> np.ndarray:
        return self.explanation.decision.weights


class ProfileBook:
    """Every served profile, loaded at start and again when its data files change
    (`reload_changed`); allocations cached per (profile, load, day)."""

    def __init__(self, profiles: Mapping[str, Profile], data_dir: Path | None, synthetic: bool) -> None:
        self.profiles = dict(profiles)
        self.data_dir = data_dir
        self.synthetic = synthetic
        self._decisions: OrderedDict[tuple[str, int, int], Decision] = OrderedDict()
        self._suitability: dict[tuple[str, int], dict[str, Any]] = {}
        self._locks = {name: threading.Lock() for name in self.profiles}
        self._lock = threading.Lock()
        self._seen: dict[str, DataFiles] = {}  # a change seen once, reloaded once it holds

    @classmethod
    def load(
        cls, specs: list[ProfileSpec], data_dir: Path | None = None, synthetic: bool = False
    ) -> ProfileBook:
        """Validate every config and load its data now: a bad file fails `bot serve` at
        start, naming it, rather than a request later."""

        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise BotError(f"--profile: the name {duplicates[0]!r} is given twice")
        profiles = {spec.name: load_profile(spec.name, spec.config, data_dir, synthetic) for spec in specs}
        book = cls(profiles, data_dir, synthetic)
        for name in profiles:  # the model runs on this data: found out now, not per request
            book.decision(name)
        return book

    def watch(self, every: float, stop: threading.Event) -> threading.Thread | None:
        """Check the profiles' data files every `every` seconds on a thread of its own,
        until `stop` is set (None: nothing read from files, nothing to watch)."""
        if every <= 0 or all(p.data_dir is None for p in self.profiles.values()):
            return None

        def loop() -> None:
            import structlog

            while not stop.wait(every):
                try:
                    self.reload_changed()
                except Exception:  # noqa: BLE001 - the watch must outlive any one check
                    structlog.get_logger("bot.api").exception("api.reload_check_failed")

        thread = threading.Thread(target=loop, name="api-data-watch", daemon=True)
        thread.start()
        return thread

    def reload_changed(self) -> list[str]:
        """Load again each profile whose data files changed (a daily `bot data fetch`)
        and have stayed as they are since the previous call, so a fetch still writing
        its files is not read half done; returns the profiles reloaded. A reload that
        fails (a file the loader refuses) keeps the profile's current data, logged."""
        import structlog

        log = structlog.get_logger("bot.api")
        reloaded = []
        for name, profile in list(self.profiles.items()):
            if profile.data_dir is None:
                continue
            files = data_files(profile.data_dir)
            if files == profile.files:
                self._seen.pop(name, None)
                continue
            if self._seen.get(name) != files:
                self._seen[name] = files  # changing: read it once it holds still
                continue
            try:
                fresh = load_profile(name, profile.config, self.data_dir, self.synthetic,
                                     generation=profile.generation + 1)
                if fresh.market.synthetic:  # its prices/ folder is gone (a fetch from scratch)
                    raise BotError(f"{profile.data_dir} holds no prices now; the synthetic "
                                   "market is never served in place of real data")
                self._decision(fresh, None)  # it decides on the new data (and it is cached)
            except Exception as exc:  # noqa: BLE001 - serving the data it has beats stopping
                log.error("api.reload_failed", profile=name, error=f"{type(exc).__name__}: {exc}",
                          serving_through=profile.latest_day.isoformat())
                profile.files = files  # not tried again until the files change again
                continue
            self.profiles[name] = fresh  # one assignment: a request sees one load or the other
            self._forget_older(name, fresh.generation)
            self._seen.pop(name, None)
            reloaded.append(name)
            log.info("api.profile_reloaded", profile=name, latest_day=fresh.latest_day.isoformat(),
                     before=profile.latest_day.isoformat())
        return reloaded

    def _forget_older(self, name: str, generation: int) -> None:
        """Drop the answers of a profile's earlier loads: no request asks for them again,
        and each holds its whole load's market in memory."""
        with self._lock:
            for key in [k for k in self._decisions if k[0] == name and k[1] < generation]:
                del self._decisions[key]
            self._suitability = {k: v for k, v in self._suitability.items()
                                 if k[0] != name or k[1] >= generation}

    def get(self, name: str) -> Profile:
        profile = self.profiles.get(name)
        if profile is None:
            raise NotFound(f"unknown profile {name!r}; expected one of {', '.join(self.profiles)}")
        return profile

    # -- answers ------------------------------------------------------------------------

    def decision(self, name: str, day: dt.date | None = None) -> Decision:
        """The engine's decision for the profile at the close of `day` (default: the one
        in force on the latest data day: the last week's close for a weekly profile),
        computed once per (profile, trading day)."""
        return self._decision(self.get(name), day)

    def _decision(self, profile: Profile, day: dt.date | None) -> Decision:
        t = profile.day_index(day)
        if day is None:
            t = profile.in_force(t)
        key = (profile.name, profile.generation, t)
        with self._lock:
            cached = self._decisions.get(key)
            if cached is not None:
                self._decisions.move_to_end(key)
                return cached
        decision = decide(profile, t)
        with self._lock:
            self._decisions[key] = decision
            while len(self._decisions) > CACHE_SIZE:
                self._decisions.popitem(last=False)
        return decision

    def plan(
        self, name: str, holdings: Mapping[str, float], cash: float, day: dt.date | None = None
    ) -> tuple[Decision, float, list, dt.date]:
        """Orders that move a client's holdings and cash to the profile's decision, sized
        on `day`'s closes (default: the decision in force, sized on the latest closes):
        (decision, the client's equity then, the planner's orders, the closes' day)."""
        profile = self.get(name)
        unknown = [s for s in holdings if s not in profile.symbols]
        if unknown:
            raise FieldProblem(
                f"holdings.{unknown[0]}",
                f"not in the universe of profile {name!r} ({', '.join(profile.symbols)}); "
                "the plan can only trade the profile's ETFs",
            )
        decision = self._decision(profile, day)  # of the same load as the closes below
        t = profile.day_index(day)  # sized on that day's closes: the latest by default
        prices = profile.close[t]
        sized_on = profile.dates[t].astype(dt.date)
        for symbol, price in zip(profile.symbols, prices.tolist(), strict=True):
            if holdings.get(symbol) and not np.isfinite(price):
                raise FieldProblem(
                    f"holdings.{symbol}",
                    f"{symbol} has no price on {sized_on.isoformat()} (not listed yet, or no "
                    "data that day): the holding cannot be valued; give a later date",
                )
        shares = np.array([float(holdings.get(s, 0.0)) for s in profile.symbols])
        equity = cash + float(shares @ np.nan_to_num(prices))
        orders = plan_orders(
            f"{name}-{decision.day:%Y%m%d}-rb",
            profile.symbols,
            decision.weights,
            shares,
            prices,
            equity,
            profile.settings.rebalance,
            f"allocation of profile {name} on {decision.day.isoformat()}",
        )
        return decision, equity, within_cash(orders, cash, profile.settings.rebalance), sized_on

    def suitability(self, name: str) -> dict[str, Any]:
        """`bot suitability`'s report of the profile (a backtest of it and of its static
        mix: a few seconds, once per profile and process)."""
        from bot.robo_cli import profile_report

        profile = self.get(name)
        with self._locks[name]:
            report = self._suitability.get((name, profile.generation))
            if report is None:
                args = argparse.Namespace(
                    start=None, end=None, synthetic=self.synthetic,
                    data_dir=str(self.data_dir) if self.data_dir else None,
                )
                report = plain(profile_report(profile.config, args, profile.market))
                report["config"] = profile.config.name  # not the server's paths
                with self._lock:  # earlier loads' reports go with them (_forget_older)
                    self._suitability[(name, profile.generation)] = report
        return report


#: an excess of the buys over the cash below this is float rounding, not an overdraft
CASH_TOLERANCE = 0.005


def within_cash(orders: list, cash: float, rebalance: RebalanceSettings) -> list:
    """The planner's orders with the buys cut to what the cash and the sells pay for.
    The buys are sized on the whole equity, and a sell below the minimum trade is
    dropped: its value was then spent twice (cash_after -49.09 on $10,000). The live bot
    and the backtests cut buys to the cash at the venue; a plan a client follows must
    not overdraw either."""
    sells = sum(o.quantity * o.reference_price for o in orders if o.side is Side.SELL)
    buys = sum(o.quantity * o.reference_price for o in orders if o.side is Side.BUY)
    if buys <= cash + sells + CASH_TOLERANCE:
        return orders
    scale = max(cash + sells, 0.0) / buys * (1.0 - 1e-12)  # never a cent over, in floats
    out = []
    for order in orders:
        if order.side is Side.BUY:
            quantity = order.quantity * scale
            if not rebalance.fractional:
                quantity = math.floor(quantity + 1e-9)
            # a cut buy obeys the minimum trade as the planner's every other order does
            if below_minimum_trade(quantity, order.reference_price, rebalance.min_trade_shares,
                                   rebalance.min_trade_notional):
                continue
            order = order._replace(quantity=quantity,
                                   reason=f"{order.reason}; cut to the cash the plan has")
        out.append(order)
    return out


def load_profile(name: str, config: Path, data_dir: Path | None, synthetic: bool,
                 generation: int = 0) -> Profile:
    """A profile's settings (validated for the API) and its history, as of now."""
    from bot.runner import BacktestOptions, apply_overrides

    settings = apply_overrides(
        load_settings(config), BacktestOptions(config, synthetic=synthetic), str(config),
    )
    if settings.strategy.kind != "factor":
        raise ConfigError(str(config), ["strategy.kind: the allocation API serves factor (robo) configs"])
    directory = data_dir or resolve_data_dir(settings, config)
    files = data_files(directory)  # before reading: a change while it reads shows next time
    market = load_history(settings, directory)
    prices = market.prices.select(settings.symbols)
    return Profile(
        name, config, settings, market, FactorModel(settings), prices.dates, prices.close,
        None if market.synthetic else directory, files, generation,
    )


def decide(profile: Profile, t: int) -> Decision:
    """FactorModel.explain on the engine's context for day t (see the module docstring)."""
    settings = profile.settings
    regime = None  # as in the engine: decided only for a config that uses it
    if settings.strategy.overlay_enabled or "stops" in settings.risk.rules:
        regime = _week_regime(profile, t)
    ctx = decision_context(
        profile.model, profile.symbols, profile.dates, profile.close, t,
        regime or settings.regime.initial, False,
    )
    return Decision(profile, t, ctx.day, regime, profile.model.explain(ctx))


def _week_regime(profile: Profile, t: int) -> Regime:
    """The regime the engine decides on the first session of day t's week (from scratch)."""
    weeks = week_numbers(profile.dates[: t + 1])
    first = int(np.searchsorted(weeks, weeks[t]))
    return decide_regime(
        profile.dates[first], profile.market.macro, None, profile.settings.regime
    ).regime


# ---------------------------------------------------------------------- JSON views


def number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def profile_view(profile: Profile) -> dict[str, Any]:
    """What `GET /v1/profiles` says of one profile."""
    s = profile.settings
    f = s.factor
    return {
        "name": profile.name,
        "strategy": s.strategy.name,
        "config": profile.config.name,
        "config_hash": s.fingerprint(),
        "intended_srri": list(f.intended_srri),
        "priips_rhp_years": f.priips_rhp_years,
        "signal_weights": f.weights.model_dump(),
        "total_band": [f.total_min, f.total_max],
        "max_weight": f.max_weight,
        "schedule": s.rebalance.schedule,
        "universe": [
            {"symbol": sym, "role": a.role, "description": a.description, "static_weight": a.weight}
            for sym, a in s.universe.items()
        ],
        "data": profile.market.label,
        "synthetic": profile.market.synthetic,
        "latest_day": profile.latest_day.isoformat(),
    }


def allocation_view(decision: Decision, requested: dt.date | None) -> dict[str, Any]:
    """The decision as `GET /v1/profiles/{p}/allocation` returns it: the weights, and per
    ETF every signal (standardized and raw, with the inputs behind it), the score, the
    rank, the LP's reason and the trade log's reason lines."""
    profile = decision.profile
    settings = profile.settings
    x = decision.explanation
    signals, detail, alloc = x.signals, x.signals.detail, x.allocation
    weights = x.decision.weights
    scheduled = None
    if settings.rebalance.schedule == "weekly":  # the engine decides on the week's last session
        scheduled = bool(profile.week_ends[decision.t])
    assets = []
    tradable = np.isfinite(profile.close[decision.t])
    for i, row in enumerate(x.decision.rows):
        asset = settings.universe[row.symbol]
        assets.append({
            "symbol": row.symbol,
            "role": asset.role,
            "description": asset.description,
            "weight": float(weights[i]),
            "lp_weight": row.baseline,
            "static_weight": asset.weight,
            "price": number(profile.close[decision.t, i]),
            "tradable": bool(tradable[i]),
            "ranked": bool(x.ranked[i]),
            "score": number(x.scores[i]) if x.ranked[i] else None,
            "rank": score_rank(x.scores, x.ranked, i),
            "signals": {
                # an ETF left out of the ranking has no z-score (0 would read "average")
                name: {"z": number(signals.z[name][i]) if x.ranked[i] else None,
                       "raw": number(signals.raw[name][i])}
                for name in SIGNALS
            },
            "inputs": {
                "price_vs_fast_ma": number(detail["gap_fast"][i]),
                "price_vs_slow_ma": number(detail["gap_slow"][i]),
                "return_z": number(detail["return_z"][i]),
                "own_month_average": number(detail["own_month"][i]),
                "own_month_years": int(detail["own_month_years"][i]),
                "nov_apr_bias": number(detail["halloween"][i]),
                "turn_of_month": number(detail["tom"][i]),
            },
            "lp_reason": lp_reason(alloc.weights[i], bool(x.ranked[i]), bool(tradable[i]), settings.factor.max_weight)
            if x.used_lp else f"static weight {alloc.weights[i]:.2%}",
            "stop_price": row.stop_price,
            "reasons": list(row.reasons),
        })
    f = settings.factor
    return {
        "profile": profile.name,
        "strategy": settings.strategy.name,
        "day": decision.day.isoformat(),
        "requested_date": None if requested is None else requested.isoformat(),
        "scheduled_rebalance_day": scheduled,
        "method": "factor LP" if x.used_lp else "static example allocation (insufficient history)",
        "regime": None if decision.regime is None else str(decision.regime),
        "signal_weights": f.weights.model_dump(),
        "total": {
            "band": [f.total_min, f.total_max],
            "drawn": alloc.drawn,
            "invested": float(weights.sum()),
            "cash": max(0.0, 1.0 - float(weights.sum())),
            "kept_in_cash_from_draw": alloc.unused,
        },
        "holding_window": {
            "year": x.holding.year, "month": x.holding.month, "turn_of_month": x.holding.turn_of_month,
        },
        "assets": assets,
        "risk_events": [
            {"rule": e.rule, "action": e.action, "symbol": e.symbol} for e in x.decision.events
        ],
        "config_hash": settings.fingerprint(),
        "data": profile.market.label,
        "synthetic": profile.market.synthetic,
    }
