"""The simulated market of the soak, around the fake Alpaca and FRED servers.

The harness moves time with `advance(when)`: the venue's clock follows (routing orders
queued while closed at the open, expiring day orders at the close), prices follow an
intraday path from each session's open to its close, working orders fill at seeded
random (whole, part, or not yet; on some sessions sells fill only half and expire so at
the close), FRED publishes each observation the day after its date, and the lowest cash
the account ever showed is kept. Bars and series come from a MarketData (the synthetic
market by default, or a CSV directory such as ../shared/data).
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

import numpy as np

from bot.daemon.sessions import exchange_sessions
from bot.data.base import MarketData
from bot.data.fred import FRED_IDS
from tests.fakes import FakeServer, Fault, Request
from tests.fakes.alpaca_ledger import ROUTED
from tests.fakes.alpaca_server import KEY_ID, SECRET, DailyBar, FakeAlpaca, FakeSession
from tests.fakes.fred_server import FakeFred

NEW_YORK = ZoneInfo("America/New_York")
#: prices stay at the open for this long, then move linearly to the close
OPENING_AUCTION = dt.timedelta(minutes=30)
NANO = Decimal("0.000000001")


@dataclass(frozen=True)
class Execution:
    """How the venue executes working orders, drawn at seeded random.

    Each tick (every time the harness moves the clock within a session) a routed order
    fills completely with probability `fill_now`, part of what is left with `fill_part`,
    or not yet. Per session, a POSTed market order is answered already filled with the
    shares and probabilities of `answered_filled` (Alpaca often answers a liquid market
    order filled), and with probability `sticky_sells` the session's sells fill only half
    and the rest expires at the close (the case that leaves buys queued overnight)."""

    fill_now: float = 0.8
    fill_part: float = 0.12
    answered_filled: tuple[tuple[float, float], ...] = ((0.0, 0.5), (1.0, 0.35), (0.5, 0.15))
    sticky_sells: float = 0.08


@dataclass
class SessionDraw:
    day: dt.date
    answered_filled: float
    sticky_sells: bool


def venue_sessions(start: dt.date, end: dt.date) -> list[FakeSession]:
    """NYSE sessions (holidays, early closes) as the fake's calendar serves them."""
    out = []
    for s in exchange_sessions(start, end):
        local_open = s.open.astimezone(NEW_YORK).strftime("%H:%M")
        local_close = s.close.astimezone(NEW_YORK).strftime("%H:%M")
        out.append(FakeSession(s.day, open=local_open, close=local_close))
    return out


@dataclass
class Traps:
    """Faults the harness arms for a kill point, asked before the random faults: each
    trap answers the first request its predicate accepts, once. Shared by both servers'
    handler threads and the harness, hence the lock."""

    armed: list[tuple[str, Callable[[Request], bool], Fault]] = field(default_factory=list)
    sprung: list[tuple[str, Fault]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, name: str, accepts: Callable[[Request], bool], fault: Fault) -> Fault:
        with self.lock:
            self.armed.append((name, accepts, fault))
        return fault

    def disarm(self) -> None:
        with self.lock:
            self.armed.clear()

    def __call__(self, request: Request) -> Fault | None:
        with self.lock:
            for i, (name, accepts, fault) in enumerate(self.armed):
                if accepts(request):
                    del self.armed[i]
                    self.sprung.append((name, fault))
                    return fault
        return None

    def release_all(self) -> None:
        with self.lock:
            for _, fault in self.sprung:
                fault.release()


class FaultPolicy:
    """Traps first, then the random faults (if any)."""

    def __init__(self, traps: Traps, random_faults=None) -> None:
        self.traps = traps
        self.random_faults = random_faults

    def __call__(self, request: Request) -> Fault | None:
        fault = self.traps(request)
        if fault is None and self.random_faults is not None:
            fault = self.random_faults(request)
        return fault


class SoakVenue:
    """Fake Alpaca + FRED serving `market` around `days` (the soak's sessions)."""

    def __init__(
        self,
        market: MarketData,
        symbols: tuple[str, ...],
        days: list[dt.date],
        *,
        seed: int,
        cash: float = 100_000.0,
        holdings: dict[str, float] | None = None,
        execution: Execution | None = None,
    ) -> None:
        self.symbols = symbols
        self.days = days
        self.execution = execution or Execution()
        self._rng = random.Random(f"venue-{seed}")
        sessions = venue_sessions(days[0] - dt.timedelta(days=40), days[-1] + dt.timedelta(days=40))
        self.sessions = sessions
        self.alpaca = FakeAlpaca(cash=cash, now=sessions[0].open_utc, sessions=sessions)
        self.fred = FakeFred()
        self.traps = Traps()
        self.alpaca.fault_policy = FaultPolicy(self.traps)
        self.fred.fault_policy = FaultPolicy(self.traps)
        self._load_prices(market, days[-1])
        self._load_macro(market)
        first = self._bar_index(days[0] - dt.timedelta(days=1))
        self._set_prices({s: float(self._close[first, j]) for j, s in enumerate(symbols)})
        for symbol, value in (holdings or {}).items():  # bought before the soak
            price = self.alpaca.prices[symbol]
            quantity = Decimal(repr(value / price)).quantize(NANO)
            self.alpaca.hold(symbol, float(quantity), price)
            self.alpaca.cash -= quantity * Decimal(repr(price))
        self.holdings_at_start = {s: p.qty for s, p in self.alpaca.positions.items()}
        self.equity_at_start = self.equity()
        self.min_cash = float(self.alpaca.cash)
        self.negative_cash = 0  # observations of a cash balance below zero
        self.draws: dict[dt.date, SessionDraw] = {}
        self._revealed: dt.date | None = None

    # --- set-up ----------------------------------------------------------------------

    def _load_prices(self, market: MarketData, last: dt.date) -> None:
        prices = market.prices.select(self.symbols)
        keep = prices.dates <= np.datetime64(last)
        self._dates = prices.dates[keep].astype("datetime64[D]")
        self._open = np.where(np.isfinite(prices.open[keep]), prices.open[keep], prices.close[keep])
        self._close = prices.close[keep]
        days = self._dates.astype(object)
        for j, symbol in enumerate(self.symbols):
            self.alpaca.daily_bars[symbol] = [
                DailyBar(d, float(o), float(max(o, c)), float(min(o, c)), float(c))
                for d, o, c in zip(days, self._open[:, j], self._close[:, j], strict=True)
                if np.isfinite(c)
            ]
        missing = [d for d in self.days if np.datetime64(d) not in set(self._dates)]
        if missing:
            raise ValueError(f"the market has no bars for soak sessions {missing[:3]}...")

    def _load_macro(self, market: MarketData) -> None:
        self._macro: dict[str, tuple[list[dt.date], list[float]]] = {}
        for name, series in market.macro.items():
            days = series.dates.astype("datetime64[D]").astype(object).tolist()
            self._macro[FRED_IDS[name]] = (days, series.values.tolist())

    def _bar_index(self, day: dt.date) -> int:
        """Row of the last bar on or before `day`."""
        return int(np.searchsorted(self._dates, np.datetime64(day), side="right")) - 1

    # --- serving ---------------------------------------------------------------------

    def start(self) -> None:
        self.alpaca.start()
        self.fred.start()

    def stop(self) -> None:
        self.traps.release_all()
        self.alpaca.stop()
        self.fred.stop()

    def env(self) -> dict[str, str]:
        """The environment that points the bot at this venue."""
        return {
            "APCA_API_KEY_ID": KEY_ID,
            "APCA_API_SECRET_KEY": SECRET,
            "APCA_API_BASE_URL": self.alpaca.url,
            "APCA_API_DATA_URL": self.alpaca.url,
            "BOT_FRED_URL": self.fred.url,
        }

    def set_random_faults(self, random_faults) -> None:
        for server in (self.alpaca, self.fred):
            policy = server.fault_policy
            assert isinstance(policy, FaultPolicy)
            policy.random_faults = random_faults

    @property
    def servers(self) -> tuple[FakeServer, FakeServer]:
        return self.alpaca, self.fred

    # --- time ------------------------------------------------------------------------

    def session_at(self, when: dt.datetime) -> FakeSession | None:
        return self.alpaca.session_at(when)

    def advance(self, when: dt.datetime) -> None:
        """Move the venue to `when`: its clock, prices, FRED, then a market tick."""
        with self.alpaca.lock:
            if when > self.alpaca.now:
                self.alpaca.set_now(when)
            self._set_prices(self.price_at(when))
            self._reveal_macro(when)
            session = self.session_at(when)
            if session is not None:
                self._trade(self._draw(session.day))
        self.observe_cash()

    def equity(self) -> float:
        """Cash plus positions at the current prices."""
        with self.alpaca.lock:
            held = sum(float(p.qty) * self.alpaca.prices[s] for s, p in self.alpaca.positions.items())
            return float(self.alpaca.cash) + held

    def observe_cash(self) -> None:
        cash = float(self.alpaca.cash)
        self.min_cash = min(self.min_cash, cash)
        if cash < 0:
            self.negative_cash += 1

    def price_at(self, when: dt.datetime) -> dict[str, float]:
        """Each symbol's price: the open for the first half hour, then a straight line to
        the close; after the close (and overnight) the close."""
        started = [s for s in self.sessions if s.open_utc <= when]
        if not started:
            row = self._bar_index(self.sessions[0].day - dt.timedelta(days=1))
            return {s: float(self._close[row, j]) for j, s in enumerate(self.symbols)}
        session = started[-1]
        row = self._bar_index(session.day)
        opens, closes = self._open[row], self._close[row]
        span = (session.close_utc - session.open_utc - OPENING_AUCTION).total_seconds()
        into = (when - session.open_utc - OPENING_AUCTION).total_seconds()
        share = min(1.0, max(0.0, into / span)) if span > 0 else 1.0
        return {
            s: float(opens[j] + (closes[j] - opens[j]) * share) for j, s in enumerate(self.symbols)
        }

    def _set_prices(self, prices: dict[str, float]) -> None:
        self.alpaca.prices = dict(prices)
        self.alpaca.latest_trades = dict(prices)
        self.alpaca.latest_bars = dict(prices)

    def _reveal_macro(self, when: dt.datetime) -> None:
        """FRED has every observation dated before today (New York)."""
        today = when.astimezone(NEW_YORK).date()
        if today == self._revealed:
            return
        self._revealed = today
        for fred_id, (days, values) in self._macro.items():
            k = bisect.bisect_left(days, today)
            self.fred.series[fred_id] = list(zip(days[:k], values[:k], strict=True))

    # --- executions ------------------------------------------------------------------

    def _draw(self, day: dt.date) -> SessionDraw:
        draw = self.draws.get(day)
        if draw is None:
            ex = self.execution
            sticky = self._rng.random() < ex.sticky_sells
            u, edge, share = self._rng.random(), 0.0, 0.0
            for candidate, probability in ex.answered_filled:
                edge += probability
                if u < edge:
                    share = candidate
                    break
            draw = self.draws[day] = SessionDraw(day, 0.0 if sticky else share, sticky)
        self.alpaca.fill_on_submit = draw.answered_filled
        return draw

    def _trade(self, draw: SessionDraw) -> None:
        """One tick of the market: working orders fill whole, in part, or not yet."""
        ex = self.execution
        for order in list(self.alpaca.orders):
            if order.data["status"] not in ROUTED:
                continue
            rest = order.qty - order.filled
            if draw.sticky_sells and order.data["side"] == "sell":
                if order.filled == 0:
                    self.alpaca.fill(order.data["id"], float((rest / 2).quantize(NANO, ROUND_DOWN)))
                continue
            u = self._rng.random()
            if u < ex.fill_now:
                self.alpaca.fill(order.data["id"])
            elif u < ex.fill_now + ex.fill_part:
                part = (rest * Decimal(repr(self._rng.uniform(0.2, 0.8)))).quantize(NANO, ROUND_DOWN)
                if part > 0:
                    self.alpaca.fill(order.data["id"], float(part))
