"""One live decision, as the daemon takes it each morning: its open job (`TradingJobs.open_job`:
order poll, broker refresh, the day's downloads, the engine's step, orders sent, state
committed) through the real alpaca-py clients against the fake Alpaca and FRED servers
on 127.0.0.1 (tests/soak/venue.py), after `build_live` has connected and reconciled.

The downloads are part of the decision: the live feed fetches the bars (over the model's
look-back) and every FRED series afresh in each job (bot.daemon.live_feed; a series it
has stored from a year before its newest stored day), so nothing a running daemon did
before the morning makes them cheaper but what the trade log keeps. Each morning's job is timed
on a different session; the rest of the day (fills, polls, the close job) runs untimed.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.fakes, tests.soak

#: the daemon's open job runs five minutes after the open (bot.daemon.service)
AFTER_OPEN = dt.timedelta(minutes=5)
FIRST_DAY = dt.date(2024, 11, 4)


def live_decisions(
    settings, mornings: int = 6, market=None
) -> list[tuple[dt.date, float, int, int]]:
    """(session, seconds, orders sent, HTTP requests) of the open job on `mornings`
    consecutive sessions. The venue serves `market` (MarketData: bars and FRED's series
    as long as they are, e.g. ../shared/data) or, without one, the soak's synthetic
    market, whose macro series go back only two years."""
    from bot.clock import SimulatedClock
    from bot.daemon.live import build_live
    from bot.net import RetryPolicy
    from bot.store.tradelog import TradeLog
    from tests.soak.harness import soak_days, synthetic
    from tests.soak.venue import SoakVenue

    days = soak_days(FIRST_DAY, mornings)
    venue = SoakVenue(market or synthetic(days), settings.symbols, days, seed=1)
    sessions = {s.day: s for s in venue.sessions}
    venue.start()
    saved = {k: os.environ.get(k) for k in (*venue.env(), "BOT_LIVE_CONFIRM")}
    os.environ.update(venue.env())
    os.environ.pop("BOT_LIVE_CONFIRM", None)
    out = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            log = TradeLog.open(f"sqlite:///{tmp}/paper.sqlite")
            run_id = log.start_run(mode="paper", strategy=settings.strategy.name, config_hash="-",
                                   config={}, code_version="-", data_source="alpaca",
                                   synthetic=True, started_at=dt.datetime.now(dt.UTC))
            start = sessions[days[0]].open_utc + AFTER_OPEN
            venue.advance(start)
            clock = SimulatedClock(start)
            no_wait = RetryPolicy(attempts=4, sleep=lambda _s: None)
            jobs = build_live(settings, log, run_id, live=False, clock=clock, policy=no_wait,
                              fred_policy=no_wait)
            for i, day in enumerate(days):
                session = sessions[day]
                if i == 0 or day.isocalendar().week != days[i - 1].isocalendar().week:
                    before = session.open_utc - dt.timedelta(hours=2)  # the regime job
                    venue.advance(max(before, venue.alpaca.now))
                    clock.set(max(before, clock.now()))
                    jobs.run("regime", jobs.regime_job)
                at = session.open_utc + AFTER_OPEN
                venue.advance(at)
                clock.set(at)
                sent = venue.alpaca.order_count()
                asked = len(venue.alpaca.requests) + len(venue.fred.requests)
                t0 = time.perf_counter()
                ok = jobs.run("open", lambda day=day: jobs.open_job(day))
                seconds = time.perf_counter() - t0
                assert ok, f"the open job of {day} failed (see the trade log's incidents)"
                requests = len(venue.alpaca.requests) + len(venue.fred.requests) - asked
                out.append((day, seconds, venue.alpaca.order_count() - sent, requests))
                for when in (at + dt.timedelta(hours=2), session.close_utc - dt.timedelta(minutes=10)):
                    venue.advance(when)
                    clock.set(when)
                    jobs.run("poll", jobs.poll_job)
                after = session.close_utc + dt.timedelta(minutes=15)
                venue.advance(after)
                clock.set(after)
                jobs.run("close", lambda day=day: jobs.close_job(day))
            jobs.close()
            log.close()
    finally:
        venue.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return out
