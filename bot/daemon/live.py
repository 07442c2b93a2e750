"""Paper and live trading: the daemon's context built from the environment."""

from __future__ import annotations

import datetime as dt

import structlog

from bot.broker.alpaca import AlpacaBroker
from bot.broker.sequenced import SellsFirst, buys_refused_after_the_close
from bot.clock import Clock, WallClock
from bot.config import Settings
from bot.daemon.jobs import DaemonContext, TradingJobs
from bot.daemon.live_feed import AlpacaFeed
from bot.daemon.naming import instance_of
from bot.daemon.reconcile import reconcile
from bot.daemon.sessions import CALENDAR_MAX_AGE_S, SessionCalendar
from bot.data.alpaca import AlpacaMarketData
from bot.data.plausibility import PlausibilityRules
from bot.engine import build_model
from bot.net import ALPACA_POLICY, FRED_POLICY, RetryPolicy
from bot.notify import Notifier
from bot.secrets import load_credentials, load_endpoints, load_fred_key
from bot.store.tradelog import TradeLog

log = structlog.get_logger(__name__)

#: no buy is sent this close to the close: it could reach the venue after it and fill at
#: the next open's prices
BUY_CUTOFF = dt.timedelta(minutes=5)


def instance_name(settings: Settings) -> str:
    """The strategy instance's stable name: its state key and client_order_id prefix."""
    return instance_of(settings.strategy.name)


def build_live(
    settings: Settings,
    tradelog: TradeLog,
    run_id: int,
    *,
    live: bool,
    clock: Clock | None = None,
    policy: RetryPolicy = ALPACA_POLICY,
    fred_policy: RetryPolicy = FRED_POLICY,
) -> TradingJobs:
    """Connect to Alpaca (paper unless live and confirmed), log who we trade for, and
    reconcile the trade log with the broker before any job runs. `policy` bounds the
    retries of every Alpaca request, `fred_policy` those of FRED's downloads."""
    endpoints = load_endpoints(live=live)
    credentials = load_credentials()
    alpaca = AlpacaBroker.connect(
        credentials, base_url=endpoints.trading_url, paper=endpoints.paper, policy=policy
    )
    clock = clock or WallClock()
    calendar = SessionCalendar(alpaca.calendar, max_age=CALENDAR_MAX_AGE_S, source_may_hang=True)
    rules = PlausibilityRules.from_settings(settings.data)
    data = AlpacaMarketData.connect(
        credentials, base_url=endpoints.data_url, policy=policy, rules=rules,
        feed=settings.data.alpaca_feed, latest_feed=settings.data.alpaca_latest_feed,
        now=clock.now,  # the daemon's clock: how old a latest price is, where bars end
    )
    feed = AlpacaFeed(
        data, tradelog, settings.symbols, endpoints.fred_url, clock,
        lookback_days=build_model(settings).history_calendar_days,
        fred_policy=fred_policy, fred_api_key=load_fred_key(), fred_api_url=endpoints.fred_api_url,
    )
    instance = instance_name(settings)  # the start of every client_order_id it sends
    # Buys go out only in a session (never into the next open's prices), not in its last
    # minutes, and sized on the prices of the moment they are released.
    broker = SellsFirst(
        alpaca,
        incident=tradelog.incident,
        market_open=lambda now: calendar.in_session(now, before_close=BUY_CUTOFF),
        prices=feed.sizing_prices,
        whole_shares=not settings.rebalance.fractional,
        order_prefix=instance,
        clock=clock.now,
    )
    alpaca.send_gate = buys_refused_after_the_close(calendar.in_session, clock.now)
    alpaca.require_tradable(settings.symbols, settings.rebalance.fractional)
    mode = "paper" if endpoints.paper else "live"
    account = broker.account()
    log.info(
        "connected",
        mode=mode,
        account=account.account_number,
        equity=round(account.equity, 2),
        cash=round(account.cash, 2),
        status=account.status,
        run=run_id,
    )
    if account.cannot_trade:  # each open job will say so too, and send nothing
        log.warning("account cannot trade", reason=account.cannot_trade)
    broker.refresh()
    ctx = DaemonContext(
        settings=settings,
        feed=feed,
        broker=broker,
        tradelog=tradelog,
        clock=clock,
        calendar=calendar,
        instance=instance,
        mode=mode,
        order_prefix=instance,
        notifier=Notifier.from_settings(settings, mode),
    )
    reconcile(tradelog, broker, instance, settings.symbols, clock.now(), mode)
    return TradingJobs(ctx)
