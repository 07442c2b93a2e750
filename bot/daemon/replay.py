"""`bot run --replay START:END`: the daemon itself (triggers, jobs, engine, trade log) on
a simulated clock with the simulated broker and historical data, as fast as it runs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import structlog

from bot.backtest import cost_model
from bot.broker.replay import ReplayBroker
from bot.clock import SimulatedClock
from bot.config import Settings
from bot.daemon.feeds import HistoryFeed
from bot.daemon.jobs import DaemonContext, TradingJobs
from bot.daemon.service import build_schedule, run_replay
from bot.daemon.sessions import SessionCalendar
from bot.data.base import MarketData
from bot.engine import record_execution
from bot.store.tradelog import TradeLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    run_id: int
    jobs_run: int
    first_day: dt.date
    last_day: dt.date


def parse_span(text: str) -> tuple[dt.date, dt.date]:
    """'2020-01-02:2020-12-31' -> dates; a ValueError saying what was expected otherwise
    (the command line turns it into a usage error)."""
    from bot.config import parse_iso_date

    try:
        start, end = (parse_iso_date(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(
            f"--replay expects START:END as real dates YYYY-MM-DD:YYYY-MM-DD, got {text!r}"
        ) from None
    if end < start:
        raise ValueError(f"--replay: END {end} is before START {start}")
    return start, end


def replay(
    settings: Settings,
    market: MarketData,
    tradelog: TradeLog,
    run_id: int,
    start: dt.date,
    end: dt.date,
) -> ReplayResult:
    """Replay START..END. Like the backtest, START is the first decision day: the clock
    starts just before START's close job, so the first orders fill at the next open."""
    calendar = SessionCalendar()
    sessions = [s for s in calendar.between(start, end)]
    if not sessions:
        raise ValueError(f"no trading session between {start} and {end}")
    first, last = sessions[0], sessions[-1]
    clock = SimulatedClock(first.close + dt.timedelta(minutes=19))
    bt = settings.backtest
    broker = ReplayBroker(
        market.prices.select(settings.symbols),
        bt.initial_cash,
        cost_model(settings),
        settings.rebalance.fractional,
        clock,
    )
    ctx = DaemonContext(
        settings=settings,
        feed=HistoryFeed(market),
        broker=broker,
        tradelog=tradelog,
        clock=clock,
        calendar=calendar,
        instance=f"replay-{run_id}",
        mode="replay",
        order_prefix=f"rp{run_id}",
    )
    jobs = TradingJobs(ctx)
    # Run through the next session's decision (on END's close), as the backtest decides
    # on END's close too; its orders cannot fill inside the span and are cancelled.
    after = calendar.between(last.day + dt.timedelta(days=1), last.day + dt.timedelta(days=10))[0]
    count = run_replay(build_schedule(jobs), jobs, clock, after.open + dt.timedelta(minutes=6))
    for order in broker.venue.cancel_pending("replay ended before the fill day"):
        record_execution(tradelog, order, None)
    tradelog.flush()
    return ReplayResult(run_id, count, first.day, last.day)
