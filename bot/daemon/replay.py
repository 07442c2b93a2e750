"""`bot run --replay START:END`: the daemon itself (triggers, jobs, engine, trade log) on
a simulated clock with the simulated broker and historical data, as fast as it runs."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bot.backtest import cost_model
from bot.broker.base import TradingSession
from bot.broker.replay import ReplayBroker
from bot.clock import SimulatedClock
from bot.config import Settings
from bot.daemon.commits import REPLAY_BATCH, CommitPolicy
from bot.daemon.feeds import HistoryFeed
from bot.daemon.jobs import DaemonContext, TradingJobs
from bot.daemon.service import build_schedule, run_replay
from bot.daemon.sessions import (
    DAYS_AHEAD,
    SessionCalendar,
    exchange_calendar_bounds,
    exchange_sessions,
    week_window,
)
from bot.data.base import MarketData
from bot.errors import BotError
from bot.notify import Notifier
from bot.store.tradelog import TradeLog

log = structlog.get_logger(__name__)

#: why orders still waiting at the simulated venue are closed when a replay ends
ENDED = "replay ended before the fill day"
INTERRUPTED = "replay interrupted before the fill day"
FAILED = "replay failed before the fill day"


@dataclass(frozen=True)
class ReplayResult:
    run_id: int
    jobs_run: int
    first_day: dt.date
    last_day: dt.date
    failures: tuple[tuple[str, dt.datetime], ...] = ()  # failed jobs: name, simulated time
    interrupted: bool = False  # a stop request ended it before END
    stopped_at: dt.datetime | None = None  # the simulated time it reached
    orders_canceled: int = 0  # left waiting at the venue and closed at the end

    @property
    def jobs_failed(self) -> int:
        return len(self.failures)


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


def _calendar_reach(end: dt.date, last_known: dt.date) -> dt.date | None:
    """The last day the scheduler reads sessions for when a replay ends on `end`: after
    its last job it asks for the next fire time, in the week of the next session, and
    SessionCalendar reads that week's window. None if the calendar knows no session
    after `end` within two weeks."""
    following = end + dt.timedelta(days=1)
    if following > last_known:
        return None
    upcoming = exchange_sessions(following, min(end + dt.timedelta(days=14), last_known))
    if not upcoming:
        return None
    return week_window(upcoming[0].day)[1]


def _check_calendar_room(start: dt.date, end: dt.date) -> None:
    """Refuse, before any run is recorded, a span whose last jobs would ask for sessions
    past the offline calendar's last one (they used to fail with DateOutOfBounds at the
    end of the replay)."""
    last_known = exchange_calendar_bounds()[1]

    def fits(day: dt.date) -> bool:
        reach = _calendar_reach(day, last_known)
        return reach is not None and reach <= last_known

    if fits(end):
        return
    latest = end - dt.timedelta(days=1)
    while not fits(latest):  # within a month: the look-ahead is about three weeks
        latest -= dt.timedelta(days=1)
    raise BotError(
        f"--replay {start}:{end} ends too close to the end of the exchange calendar: "
        f"exchange_calendars knows sessions up to {last_known}, and the scheduler reads "
        f"{DAYS_AHEAD} days past the week of the session after the replay's end; end it by {latest}"
    )


def check_span(start: dt.date, end: dt.date, market: MarketData) -> list[TradingSession]:
    """The span's sessions, or a BotError before any run is recorded: START:END must hold
    a trading session and every one of them must be in the data. A span running past the
    data, or starting before it, is refused rather than clipped: those jobs could only
    fail, and a replay that quietly covers less than was asked is easy to misread."""
    dates = market.prices.dates
    first, last = (dt.date.fromisoformat(str(d)[:10]) for d in (dates[0], dates[-1]))
    if start > last or end < first:
        raise BotError(
            f"--replay {start}:{end} is outside the data: {market.label} covers {first} to {last}"
        )
    try:
        sessions = exchange_sessions(start, end)
    except Exception as exc:
        # imported only here: a span inside the stored session table never loads the library
        from exchange_calendars.errors import DateOutOfBounds

        if not isinstance(exc, DateOutOfBounds):
            raise
        raise BotError(f"--replay {start}:{end}: outside the exchange calendar ({exc})") from None
    if not sessions:
        raise BotError(f"--replay {start}:{end}: no trading session in that span")
    _check_calendar_room(start, end)
    if sessions[0].day < first:  # its first sessions have no bar: every job would fail
        raise BotError(
            f"--replay {start}:{end} starts before the data: the first day of "
            f"{market.label} is {first}; replay from it with --replay {first}:{end}"
        )
    if sessions[-1].day > last:
        raise BotError(
            f"--replay {start}:{end} runs past the end of the data: the last day of "
            f"{market.label} is {last}; replay up to it with --replay {start}:{last}"
        )
    return sessions


def replay(
    settings: Settings,
    market: MarketData,
    tradelog: TradeLog,
    run_id: int,
    start: dt.date,
    end: dt.date,
    stop: threading.Event | None = None,
    progress: Callable[[float], None] | None = None,
    commits: CommitPolicy = REPLAY_BATCH,
) -> ReplayResult:
    """Replay START..END. Like the backtest, START is the first decision day: the clock
    starts just before START's close job, so the first orders fill at the next open.
    Setting `stop` ends it after the running job; either way the orders still waiting
    at the simulated venue are closed, since that venue ends with the process.
    `progress` hears the share of the span done (0..1) after every job. `commits`: when
    the trade log commits (in batches: a replay is a simulation, bot.daemon.commits)."""
    calendar = SessionCalendar()
    sessions = [s for s in calendar.between(start, end)]
    if not sessions:
        raise ValueError(f"no trading session between {start} and {end}")
    if settings.backtest.fill != "next_open":
        # the daemon's market orders fill at the open after the decision: so do its replays
        log.warning("a replay fills at the next open, as the daemon does; backtest.fill "
                    "applies to backtests only", fill=settings.backtest.fill)
    first, last = sessions[0], sessions[-1]
    clock = SimulatedClock(first.close + dt.timedelta(minutes=19))
    broker = ReplayBroker(
        market.prices.select(settings.symbols),
        settings.backtest.initial_cash,
        cost_model(settings),
        settings.rebalance.fractional,
        clock,
    )
    notifier = Notifier.from_settings(settings, "replay") if settings.notify.replay else None
    jobs = TradingJobs(
        _context(settings, market, broker, tradelog, clock, calendar, run_id, notifier, commits)
    )
    # Run through the next session's decision (on END's close), as the backtest decides
    # on END's close too; its orders cannot fill inside the span and are cancelled.
    after = calendar.between(last.day + dt.timedelta(days=1), last.day + dt.timedelta(days=10))[0]
    finish = after.open + dt.timedelta(minutes=6)
    begin = clock.now()

    def advanced(when: dt.datetime) -> None:
        if progress is not None:
            progress(min(1.0, (when - begin) / (finish - begin)))

    try:
        loop = run_replay(build_schedule(jobs), jobs, clock, finish, stop, advanced)
    except BaseException:
        _close_after_failure(broker, tradelog, clock.now())
        raise
    finally:
        jobs.close()
    if progress is not None and not loop.interrupted:
        progress(1.0)
    canceled = _close_pending(broker, tradelog, INTERRUPTED if loop.interrupted else ENDED,
                              clock.now())
    return ReplayResult(
        run_id, loop.jobs_run, first.day, last.day, tuple(loop.failures),
        loop.interrupted, clock.now(), canceled,
    )


def _context(
    settings: Settings,
    market: MarketData,
    broker: ReplayBroker,
    tradelog: TradeLog,
    clock: SimulatedClock,
    calendar: SessionCalendar,
    run_id: int,
    notifier: Notifier | None = None,
    commits: CommitPolicy = REPLAY_BATCH,
) -> DaemonContext:
    return DaemonContext(
        settings=settings,
        feed=HistoryFeed(market),
        broker=broker,
        tradelog=tradelog,
        clock=clock,
        calendar=calendar,
        instance=f"replay-{run_id}",
        mode="replay",
        order_prefix=f"rp{run_id}",
        notifier=notifier,
        commits=commits,
    )


def _close_pending(
    broker: ReplayBroker, tradelog: TradeLog, reason: str, at: dt.datetime
) -> int:
    """Cancel and record (at `at`, the replay's time) what still waits for a fill day,
    as the backtest does: nothing will ever fill it, and an order left `accepted` would
    look open forever."""
    canceled = broker.close_pending(reason)
    for order in canceled:
        tradelog.execution(order, None, at)
    tradelog.flush()
    if canceled:
        log.info("orders closed at the end of the replay", count=len(canceled), reason=reason)
    return len(canceled)


def _close_after_failure(broker: ReplayBroker, tradelog: TradeLog, at: dt.datetime) -> None:
    """The replay broke: still close the venue's orders, but never hide the error itself."""
    try:
        _close_pending(broker, tradelog, FAILED, at)
    except Exception as exc:  # noqa: BLE001 - the original error is the one to report
        log.error("orders not closed after the replay failed", error=str(exc))


def _describe(failure: tuple[str, dt.datetime]) -> str:
    name, when = failure
    return f"{name} at {when:%Y-%m-%d %H:%M} UTC"


def describe_failures(result: ReplayResult) -> str:
    """'3 jobs failed (first: close at 2025-02-20 21:20 UTC)', for the summary line."""
    n = result.jobs_failed
    return f"{n} job{'s' if n != 1 else ''} failed (first: {_describe(result.failures[0])})"
