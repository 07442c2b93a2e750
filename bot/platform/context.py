"""What a worker process keeps between tasks: its database engine, the shared budget and
locks in Redis, a Broker API connection per thread, each profile's config and market
history, the batches' decisions and the day's prefetched positions.

Nothing about an account is kept: every task reads the account's state from the trade
log and the broker, so any worker can take any account's next task.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import redis
import structlog

from bot.accounts.registry import AccountRegistry, not_a_robo_profile, profile_config
from bot.broker.broker_api import BrokerPlatform, PositionsSnapshot
from bot.clock import WallClock
from bot.config import Settings, load_settings, parse_settings
from bot.daemon.feeds import HistoryFeed, MarketFeed
from bot.daemon.sessions import SessionCalendar
from bot.data.base import MarketData
from bot.engine import build_model
from bot.errors import BotError
from bot.net import ALPACA_POLICY, RetryPolicy
from bot.platform.lease import LeasedBudget, keep_current, request_limits
from bot.platform.settings import PlatformSettings
from bot.platform.store import StoredDecision, load_decisions
from bot.platform.throttle import AccountLocks, TokenBucket
from bot.store.tradelog import TradeLog

log = structlog.get_logger(__name__)

#: no buy goes out this close to the close (as in the daemon: bot.daemon.live)
BUY_CUTOFF = dt.timedelta(minutes=5)
#: no rebalance starts later in a session than this before its close (the daemon's rule,
#: OPEN_PLAN): its sells must fill and its buys go out after them, before the close
REBALANCE_CUTOFF = dt.timedelta(minutes=60)
#: how long the venue's clock answer is used before it is asked again
CLOCK_MAX_AGE = 60.0


@dataclass(frozen=True)
class Profile:
    """A profile's config, its market history and what its target model needs."""

    name: str
    settings: Settings
    feed: MarketFeed
    history_calendar_days: int


class WorkerContext:
    def __init__(self, settings: PlatformSettings, database_url: str, *, live: bool = False) -> None:
        self.settings = settings
        self.live = live
        self.mode = "live" if live else "paper"
        self.clock = WallClock()
        self.calendar = SessionCalendar()
        self.database_url = database_url
        self.engine = TradeLog.open(database_url).engine  # schema checked once per process
        self.registry = AccountRegistry(self.engine)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.namespace = settings.queue_name  # Redis keys of one platform
        self.budget = TokenBucket(
            self.redis, f"{self.namespace}:broker-budget", settings.requests_per_second,
            settings.burst,
        )
        self.locks = AccountLocks(self.redis, self.namespace, settings.lease_seconds)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._profiles: dict[str, Profile] = {}
        self._decisions: dict[int, dict[str, StoredDecision]] = {}
        self._snapshots: dict[int, PositionsSnapshot] = {}
        self._venue_clock: tuple[float, dt.datetime, bool, dt.datetime] | None = None

    # -- per thread ------------------------------------------------------------------------

    def broker_platform(self) -> BrokerPlatform:
        """This thread's Broker API connection (a requests session is not shared between
        threads), every request drawing on the shared budget and keeping the lease of the
        task that makes it."""
        platform = getattr(self._local, "platform", None)
        if platform is None:
            policy = RetryPolicy(base_delay=self.settings.http_retry_delay,
                                 max_delay=max(8.0, self.settings.http_retry_delay),
                                 **request_limits(self.settings.lease_seconds))
            platform = BrokerPlatform.from_env(live=self.live, throttle=LeasedBudget(self.budget),
                                               policy=policy)
            self._local.platform = platform
        return platform

    def tradelog(self, run_id: int | None) -> TradeLog:
        """A trade log recording into `run_id` (one per task: a TradeLog buffers for one
        thread)."""
        tradelog = TradeLog(self.engine)
        tradelog.run_id = run_id
        return tradelog

    # -- per process, cached -------------------------------------------------------------

    def profile(self, name: str) -> Profile:
        with self._lock:
            found = self._profiles.get(name)
            if found is None:
                found = self._profiles[name] = self._load_profile(name)
            return found

    def _load_profile(self, name: str) -> Profile:
        path = profile_config(name)
        settings = load_settings(path)
        problem = not_a_robo_profile(settings, name)  # registered before the registry refused it
        if problem:
            raise BotError(problem)
        feed = self.market_feed(settings)
        return Profile(name, settings, feed, build_model(settings).history_calendar_days)

    def market_feed(self, settings: Settings) -> MarketFeed:
        """Where a profile's history comes from (BOT_PLATFORM_DATA)."""
        source = self.settings.data
        if source == "alpaca":
            return CachedFeed(self._alpaca_feed(settings))
        from bot.data.history import load_history

        if source == "synthetic":
            raw = settings.model_dump(mode="json")
            raw["data"]["source"] = "synthetic"
            return HistoryFeed(load_history(parse_settings(raw, "platform"), Path(".")))
        return HistoryFeed(load_history(settings, Path(source).expanduser()))

    def _alpaca_feed(self, settings: Settings) -> MarketFeed:
        from bot.daemon.live_feed import AlpacaFeed
        from bot.data.alpaca import AlpacaMarketData
        from bot.data.plausibility import PlausibilityRules
        from bot.secrets import load_credentials, load_endpoints, load_fred_key

        endpoints = load_endpoints(live=self.live)
        rules = PlausibilityRules.from_settings(settings.data)
        # Its requests keep the lease of the task that makes them (sizing prices), and wait
        # no longer than the lease allows; the data API has its own limit, not the budget.
        policy = replace(ALPACA_POLICY, throttle=keep_current, **request_limits(self.settings.lease_seconds))
        data = AlpacaMarketData.connect(load_credentials(), base_url=endpoints.data_url, rules=rules,
                                        policy=policy,
                                        feed=settings.data.alpaca_feed,
                                        latest_feed=settings.data.alpaca_latest_feed,
                                        now=self.clock.now)
        tradelog = TradeLog(self.engine)  # the macro cache; used under CachedFeed's lock
        return AlpacaFeed(data, tradelog, settings.symbols, endpoints.fred_url, self.clock,
                          lookback_days=build_model(settings).history_calendar_days,
                          fred_api_key=load_fred_key(), fred_api_url=endpoints.fred_api_url)

    def decision(self, run_id: int, profile: str) -> StoredDecision:
        found = self.decided(run_id, profile)
        if found is None:
            raise BotError(f"batch {run_id} has no decision for profile {profile}")
        return found

    def decided(self, run_id: int, profile: str) -> StoredDecision | None:
        """The batch's decision for `profile`, or None if the batch decided no such
        profile (an account's profile changed after the batch was decided)."""
        with self._lock:
            decisions = self._decisions.get(run_id)
            if decisions is None:
                decisions = self._decisions[run_id] = load_decisions(self.engine, run_id)
        return decisions.get(profile)

    def positions_snapshot(self, run_id: int) -> PositionsSnapshot:
        """Every account's positions from one call, taken once per batch and process
        (before the batch's first orders: Alpaca reports them as of the last close)."""
        with self._lock:
            snapshot = self._snapshots.get(run_id)
            if snapshot is None:
                snapshot = self._snapshots[run_id] = self.broker_platform().prefetch_positions()
                log.info("positions prefetched", run=run_id, accounts=len(snapshot))
            return snapshot

    def market_open(self, now: dt.datetime, before_close: dt.timedelta = BUY_CUTOFF) -> bool:
        """Whether the venue's clock says a session is open and its close is more than
        `before_close` away (asked at most once a minute per process). The default:
        whether buys may go out now."""
        venue_now, is_open, next_close = self._venue()
        return is_open and venue_now < next_close - before_close

    def venue_now(self) -> dt.datetime:
        """The time by the venue's clock (asked at most once a minute per process)."""
        return self._venue()[0]

    def _venue(self) -> tuple[dt.datetime, bool, dt.datetime]:
        """The venue's time now, whether it is in session and its next close."""
        with self._lock:
            known = self._venue_clock
            if known is None or time.monotonic() - known[0] > CLOCK_MAX_AGE:
                clock = self.broker_platform().clock()
                known = self._venue_clock = (
                    time.monotonic(), clock.timestamp, clock.is_open, clock.next_close
                )
        fetched, venue_time, is_open, next_close = known
        return venue_time + dt.timedelta(seconds=time.monotonic() - fetched), is_open, next_close


class CachedFeed:
    """A live feed asked once per decision day (every account of a profile shares the
    day's history) and at most every 30 s for sizing prices."""

    def __init__(self, feed: MarketFeed, max_age: float = 30.0) -> None:
        self.feed = feed
        self.max_age = max_age
        self._lock = threading.Lock()
        self._history: dict[dt.date, MarketData] = {}
        self._prices: dict[tuple[str, ...], tuple[float, np.ndarray | None]] = {}

    def history(self, through: dt.date) -> MarketData:
        with self._lock:
            found = self._history.get(through)
            if found is None:
                self._history = {through: self.feed.history(through)}  # one day kept
                found = self._history[through]
            return found

    def sizing_prices(self, symbols: tuple[str, ...]) -> np.ndarray | None:
        with self._lock:
            known = self._prices.get(symbols)
            if known is None or time.monotonic() - known[0] > self.max_age:
                known = self._prices[symbols] = (time.monotonic(), self.feed.sizing_prices(symbols))
            return known[1]
