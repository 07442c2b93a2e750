"""Jobs fire on the right trading days and hours across holidays, half days and
daylight-saving changes: asked of the triggers with a controllable `now`, no sleeping."""

import datetime as dt

from bot.daemon.sessions import SessionCalendar
from bot.daemon.triggers import SessionTrigger, WeekStartTrigger

UTC = dt.UTC


def fire_times(trigger, start, n):
    out, previous = [], None
    for _ in range(n):
        nxt = trigger.get_next_fire_time(previous, start)
        out.append(nxt)
        previous = nxt
    return out


def test_daily_job_skips_thanksgiving_and_follows_the_half_day():
    cal = SessionCalendar()
    after_open = SessionTrigger(cal, "open", dt.timedelta(minutes=5))
    after_close = SessionTrigger(cal, "close", dt.timedelta(minutes=15))
    start = dt.datetime(2024, 11, 25, 0, 0, tzinfo=UTC)  # Monday of Thanksgiving week
    opens = fire_times(after_open, start, 5)
    assert [t.date() for t in opens] == [
        dt.date(2024, 11, 25), dt.date(2024, 11, 26), dt.date(2024, 11, 27),
        dt.date(2024, 11, 29), dt.date(2024, 12, 2),
    ]
    assert all(t.time() == dt.time(14, 35) for t in opens)  # 09:35 EST
    closes = fire_times(after_close, start, 4)
    # Friday after Thanksgiving closes at 13:00 EST = 18:00 UTC.
    assert closes[3] == dt.datetime(2024, 11, 29, 18, 15, tzinfo=UTC)
    assert closes[0] == dt.datetime(2024, 11, 25, 21, 15, tzinfo=UTC)


def test_daily_job_moves_with_daylight_saving():
    trigger = SessionTrigger(SessionCalendar(), "open", dt.timedelta(minutes=5))
    times = fire_times(trigger, dt.datetime(2024, 3, 7, 0, 0, tzinfo=UTC), 3)
    # Thu 7 and Fri 8 March: 09:35 EST = 14:35 UTC; Mon 11 March (after the switch on
    # Sunday the 10th): 09:35 EDT = 13:35 UTC.
    assert times == [
        dt.datetime(2024, 3, 7, 14, 35, tzinfo=UTC),
        dt.datetime(2024, 3, 8, 14, 35, tzinfo=UTC),
        dt.datetime(2024, 3, 11, 13, 35, tzinfo=UTC),
    ]


def test_weekly_job_runs_before_the_first_session_of_each_week():
    trigger = WeekStartTrigger(SessionCalendar(), dt.timedelta(hours=2))
    times = fire_times(trigger, dt.datetime(2024, 1, 10, tzinfo=UTC), 3)
    # Week of MLK day (Mon 15 Jan closed): Tuesday 16th, 09:30 EST - 2 h = 12:30 UTC.
    assert times == [
        dt.datetime(2024, 1, 16, 12, 30, tzinfo=UTC),
        dt.datetime(2024, 1, 22, 12, 30, tzinfo=UTC),
        dt.datetime(2024, 1, 29, 12, 30, tzinfo=UTC),
    ]


def test_first_fire_time_is_not_in_the_past():
    trigger = SessionTrigger(SessionCalendar(), "open", dt.timedelta(minutes=5))
    now = dt.datetime(2024, 11, 26, 15, 0, tzinfo=UTC)  # after Tuesday's job time
    assert trigger.get_next_fire_time(None, now) == dt.datetime(2024, 11, 27, 14, 35, tzinfo=UTC)


def test_broker_calendar_failure_falls_back_to_the_exchange():
    def broken(start, end):
        raise ConnectionError("calendar endpoint down")

    trigger = SessionTrigger(SessionCalendar(broken), "open", dt.timedelta(minutes=5))
    nxt = trigger.get_next_fire_time(None, dt.datetime(2024, 7, 3, 20, 0, tzinfo=UTC))
    assert nxt == dt.datetime(2024, 7, 5, 13, 35, tzinfo=UTC)  # July 4th skipped


def test_scheduler_jobs_never_overlap_coalesce_and_have_a_grace_time():
    from bot.daemon.service import JobSpec, Schedule, make_scheduler

    cal = SessionCalendar()
    schedule = Schedule([
        JobSpec("open", SessionTrigger(cal, "open", dt.timedelta(minutes=5)), lambda: None),
        JobSpec("regime", WeekStartTrigger(cal, dt.timedelta(hours=2)), lambda: None),
    ])
    scheduler = make_scheduler(schedule)
    scheduler.start(paused=True)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"open", "regime"}
        for job in jobs.values():
            assert job.coalesce and job.max_instances == 1  # JobSpec's default
            assert job.misfire_grace_time == 7200
        assert scheduler._executors["default"]._pool._max_workers == 1
    finally:
        scheduler.shutdown(wait=False)


def test_a_restart_within_the_grace_time_runs_the_job_it_missed():
    """Killed during the 09:35 decision and restarted at 09:37 (or restarted at 16:22
    after the 16:20 close job), the daemon skipped the job until the next session:
    APScheduler asks the trigger for the next fire time from the start on."""
    from bot.daemon.service import JobSpec, Schedule, make_scheduler

    cal = SessionCalendar()
    schedule = Schedule([
        JobSpec("open", SessionTrigger(cal, "open", dt.timedelta(minutes=5)), lambda: None,
                catch_up=True),
        JobSpec("close", SessionTrigger(cal, "close", dt.timedelta(minutes=20)), lambda: None,
                catch_up=True),
        JobSpec("other", SessionTrigger(cal, "open", dt.timedelta(minutes=5)), lambda: None),
    ])

    def first_runs(now):
        scheduler = make_scheduler(schedule, now=now)
        scheduler.start(paused=True)
        try:
            return {job.id: job.next_run_time for job in scheduler.get_jobs()}
        finally:
            scheduler.shutdown(wait=False)

    tuesday_open = dt.datetime(2024, 11, 26, 14, 35, tzinfo=UTC)
    runs = first_runs(tuesday_open + dt.timedelta(minutes=2))
    assert runs["open"] == tuesday_open  # missed: runs at once
    assert runs["close"] == dt.datetime(2024, 11, 26, 21, 20, tzinfo=UTC)
    assert runs["other"] == dt.datetime(2024, 11, 27, 14, 35, tzinfo=UTC)  # not opted in
    runs = first_runs(dt.datetime(2024, 11, 26, 21, 22, tzinfo=UTC))
    assert runs["close"] == dt.datetime(2024, 11, 26, 21, 20, tzinfo=UTC)
    # beyond the grace time the missed job is left to its next session
    runs = first_runs(tuesday_open + dt.timedelta(hours=2, minutes=1))
    assert runs["open"] == dt.datetime(2024, 11, 27, 14, 35, tzinfo=UTC)


def test_a_restart_in_the_evening_still_runs_the_close_job():
    """The close job may run until its plan's last safe time (8 hours after the close,
    long before the next open): a daemon restarted at 19:30 New York (00:30 UTC the next
    day) records the day's close; it left it unrecorded beyond the 2-hour grace."""
    from bot.daemon.retries import CLOSE_PLAN
    from bot.daemon.service import JobSpec, Schedule, make_scheduler

    cal = SessionCalendar()
    spec = JobSpec("close", SessionTrigger(cal, "close", CLOSE_PLAN.offset), lambda: None,
                   catch_up=True, grace=CLOSE_PLAN.catch_up_grace)
    tuesday_close_job = dt.datetime(2024, 11, 26, 21, 20, tzinfo=UTC)
    assert spec.first_run(dt.datetime(2024, 11, 27, 0, 30, tzinfo=UTC)) == tuesday_close_job
    assert spec.first_run(dt.datetime(2024, 11, 27, 5, 1, tzinfo=UTC)) == dt.datetime(
        2024, 11, 27, 21, 20, tzinfo=UTC)  # past the last safe time: the next session's
    scheduler = make_scheduler(Schedule([spec]), now=tuesday_close_job)  # not started
    assert scheduler.get_job("close").misfire_grace_time == 7 * 3600 + 40 * 60


def test_a_job_the_scheduler_could_not_run_in_time_is_reported():
    """A job whose time passed beyond its grace while the scheduler could not run it
    (the machine slept) is reported to the schedule's on_missed, which the daemon
    records as an incident; it was only a line in APScheduler's log."""
    import threading

    from apscheduler.triggers.base import BaseTrigger

    from bot.daemon.service import JobSpec, Schedule, make_scheduler

    now = dt.datetime.now(UTC)

    class LongAgo(BaseTrigger):  # due three hours ago, never again
        def get_next_fire_time(self, previous, now_):
            return None if previous else now - dt.timedelta(hours=3)

    missed: list[tuple[str, dt.datetime]] = []
    told = threading.Event()
    ran = threading.Event()

    def on_missed(name, when):
        missed.append((name, when))
        told.set()

    schedule = Schedule([JobSpec("close", LongAgo(), ran.set)], on_missed=on_missed)
    scheduler = make_scheduler(schedule, now=now)
    scheduler.start()
    try:
        assert told.wait(10)
        assert missed == [("close", now - dt.timedelta(hours=3))] and not ran.is_set()
    finally:
        scheduler.shutdown(wait=False)


def test_the_scheduler_runs_a_missed_job_as_soon_as_it_starts():
    import threading

    from bot.daemon.service import JobSpec, Schedule, make_scheduler
    from bot.daemon.triggers import _CalendarTrigger

    now = dt.datetime.now(UTC)

    class Daily(_CalendarTrigger):  # fired a minute ago, next tomorrow
        def _times(self, around):
            return [now - dt.timedelta(minutes=1), now + dt.timedelta(days=1)]

    ran = threading.Event()
    scheduler = make_scheduler(Schedule([JobSpec("open", Daily(), ran.set, catch_up=True)]))
    scheduler.start()
    try:
        assert ran.wait(10), "the job missed a minute before the start did not run"
        assert scheduler.get_job("open").next_run_time == now + dt.timedelta(days=1)
    finally:
        scheduler.shutdown(wait=False)


def test_fire_times_kept_per_week_are_the_ones_listed_afresh():
    """Triggers keep each week's fire times; a fresh trigger per question (nothing kept)
    must give the same times over two years of holidays, half days and DST changes."""
    from bot.daemon.retries import CLOSE_PLAN, OPEN_PLAN, RetrySlotTrigger

    cal = SessionCalendar()
    makers = [
        lambda: SessionTrigger(cal, "open", dt.timedelta(minutes=5)),
        lambda: WeekStartTrigger(cal, dt.timedelta(hours=2)),
        lambda: RetrySlotTrigger(cal, OPEN_PLAN),
        lambda: RetrySlotTrigger(cal, CLOSE_PLAN),
    ]
    start, end = dt.datetime(2023, 1, 1, tzinfo=UTC), dt.datetime(2024, 12, 31, tzinfo=UTC)
    for make in makers:
        kept, previous, cached, fresh = make(), None, [], []
        while not cached or cached[-1] < end:
            cached.append(kept.get_next_fire_time(previous, start))
            fresh.append(make().get_next_fire_time(previous, start))
            previous = cached[-1]
        assert cached == fresh and len(cached) > 100


def test_a_closure_announced_during_the_week_reaches_the_running_daemon():
    """Alpaca's calendar drops a day on Tuesday (as NYSE closed for Hurricane Sandy, and
    for a national day of mourning): once the window is older than the calendar's max
    age, the next decision skips the closed day and it is no session any more."""
    from bot.daemon.sessions import exchange_sessions

    closed = dt.date(2025, 12, 4)
    announced = []
    clock = [0.0]

    def source(start, end):
        return [s for s in exchange_sessions(start, end) if not (announced and s.day == closed)]

    cal = SessionCalendar(source, max_age=3600.0, monotonic=lambda: clock[0])
    decision = SessionTrigger(cal, "open", dt.timedelta(minutes=5))
    wednesday = dt.datetime(2025, 12, 3, 14, 35, tzinfo=UTC)
    assert decision.get_next_fire_time(wednesday, wednesday).date() == closed
    announced.append(True)
    clock[0] += 1800.0  # within the max age: the window read on Monday still holds
    assert cal.session_on(closed) is not None
    clock[0] += 3600.0
    assert cal.session_on(closed) is None and cal.version == 1
    assert decision.get_next_fire_time(wednesday, wednesday).date() == dt.date(2025, 12, 5)
    assert cal.previous_session(dt.date(2025, 12, 5)).day == dt.date(2025, 12, 3)


def test_a_failed_calendar_refresh_keeps_what_the_broker_said():
    from bot.daemon.sessions import exchange_sessions

    answers = []
    clock = [0.0]

    def source(start, end):
        if answers:
            raise ConnectionError("calendar: HTTP 503")
        answers.append(True)
        return [s for s in exchange_sessions(start, end) if s.day != dt.date(2025, 12, 4)]

    cal = SessionCalendar(source, max_age=60.0, monotonic=lambda: clock[0])
    assert cal.session_on(dt.date(2025, 12, 4)) is None
    clock[0] += 120.0
    assert cal.session_on(dt.date(2025, 12, 4)) is None  # not the exchange calendar's answer


def test_an_empty_calendar_answer_is_a_failed_one():
    """Alpaca answering [] for weeks of calendar left `bot once` with a LookupError
    traceback: no two weeks pass without a session, so it is treated as a failed answer
    and the exchange calendar is used."""
    cal = SessionCalendar(lambda start, end: [])
    assert cal.session_on(dt.date(2025, 12, 4)) is not None
    assert cal.previous_session(dt.date(2025, 12, 4)).day == dt.date(2025, 12, 3)


def test_a_job_scheduled_for_a_session_closed_since_does_nothing():
    """The open and close jobs' next fire times (Monday 09:35 and 16:20) were computed
    on Friday; over the weekend Monday is closed (as for Hurricane Sandy). Each fires
    anyway and used to redo the last session before it: decide again on Thursday's
    close while the market is shut, and record Friday's close a second time."""
    from bot.daemon.retries import CLOSE_PLAN, OPEN_PLAN, RetryingJob
    from bot.daemon.sessions import exchange_sessions

    monday = dt.date(2025, 10, 27)
    closed: set[dt.date] = set()
    cal = SessionCalendar(lambda a, b: [s for s in exchange_sessions(a, b) if s.day not in closed],
                          max_age=0.0)
    now = [dt.datetime(2025, 10, 24, 13, 35, tzinfo=UTC)]
    done: list[tuple[str, dt.date | None]] = []

    def runner(name, job, details):
        job()
        return True

    def job_of(name):
        return RetryingJob(name, lambda day=None: done.append((name, day)),
                           OPEN_PLAN if name == "open" else CLOSE_PLAN, cal, lambda: now[0], runner)

    decision, close = job_of("open"), job_of("close")
    open_at = SessionTrigger(cal, "open", OPEN_PLAN.offset).get_next_fire_time(now[0], now[0])
    friday_close = dt.datetime(2025, 10, 24, 20, 20, tzinfo=UTC)
    close_at = SessionTrigger(cal, "close", CLOSE_PLAN.offset).get_next_fire_time(
        friday_close, friday_close)
    assert open_at.date() == close_at.date() == monday
    closed.add(monday)
    now[0] = open_at
    assert decision.regular()
    now[0] = close_at
    assert close.regular()
    assert done == []
    tuesday_open = dt.datetime(2025, 10, 28, 13, 35, tzinfo=UTC)
    now[0] = tuesday_open  # the next session's job is its own, as before
    assert decision.regular() and done == [("open", dt.date(2025, 10, 28))]
    now[0] = tuesday_open + dt.timedelta(hours=1)  # a restart within the grace still runs it
    assert decision.regular() and done[-1] == ("open", dt.date(2025, 10, 28))


def test_a_machine_that_slept_through_sessions_reports_each_one_it_missed():
    """Asleep from Tuesday afternoon to Thursday evening: APScheduler coalesced the three
    closes due meanwhile into Thursday's and reported none of Tuesday's or Wednesday's as
    missed; a session job now reports each time beyond its grace and runs the one
    within it, once."""
    import threading

    from apscheduler.triggers.base import BaseTrigger

    from bot.daemon.service import JobSpec, Schedule, make_scheduler

    now = dt.datetime.now(UTC)
    times = [now - dt.timedelta(hours=h) for h in (50, 26)] + [now - dt.timedelta(minutes=1)]

    class Slept(BaseTrigger):
        def get_next_fire_time(self, previous, now_):
            later = [t for t in times if previous is None or t > previous]
            return later[0] if later else None

    missed: list[dt.datetime] = []
    ran: list[int] = []
    done = threading.Event()

    def run():
        ran.append(1)
        done.set()

    schedule = Schedule([JobSpec("close", Slept(), run, coalesce=False)],
                        on_missed=lambda name, when: missed.append(when))
    scheduler = make_scheduler(schedule, now=now)
    scheduler.start()
    try:
        assert done.wait(10)
        deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=5)
        while len(missed) < 2 and dt.datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        assert sorted(missed) == times[:2] and ran == [1]
    finally:
        scheduler.shutdown(wait=False)


def test_session_jobs_do_not_coalesce_and_an_idle_retry_slot_is_not_a_missed_job():
    from types import SimpleNamespace

    from bot.clock import SimulatedClock
    from bot.daemon.service import build_schedule

    noted: list[str] = []
    jobs = SimpleNamespace(
        ctx=SimpleNamespace(calendar=SessionCalendar(),
                            clock=SimulatedClock(dt.datetime(2025, 12, 9, 20, 0, tzinfo=UTC))),
        run=lambda name, fn, details=None: fn() or True, regime_job=lambda: None,
        open_job=lambda day=None: None, close_job=lambda day=None: None, poll_job=lambda: None,
        decision_retry_refusal=lambda day: None, note_missed=lambda name, when: noted.append(name),
        watch=None,
    )
    schedule = build_schedule(jobs)
    coalescing = {spec.name: spec.coalesce for spec in schedule.jobs}
    assert coalescing == {"regime": False, "open": False, "open-retry": True, "poll": True,
                          "close": False, "close-retry": True}
    when = dt.datetime(2025, 12, 10, 16, 30, tzinfo=UTC)
    schedule.on_missed("open-retry", when)  # nothing had failed: nothing to retry
    schedule.on_missed("close", when)
    assert noted == ["close"]


def test_the_triggers_never_wait_on_a_broker_calendar_that_may_hang():
    """The triggers run on APScheduler's own thread: a broker calendar in its 5 minutes
    of retries there held back every job and the heartbeat. With `source_may_hang` they
    plan on what the calendar job read ahead (the exchange's until then), and a closure
    the broker announces reaches them through that job, never through a trigger."""
    import threading

    from bot.daemon.sessions import REFRESH_WEEKS, exchange_sessions

    closed = dt.date(2025, 12, 4)
    calls: list[str] = []
    clock = [0.0]

    def source(start, end):
        calls.append(threading.current_thread().name)
        return [s for s in exchange_sessions(start, end) if s.day != closed]

    cal = SessionCalendar(source, max_age=3600.0, monotonic=lambda: clock[0], source_may_hang=True)
    decision = SessionTrigger(cal, "open", dt.timedelta(minutes=5))
    wednesday = dt.datetime(2025, 12, 3, 14, 35, tzinfo=UTC)
    assert decision.get_next_fire_time(wednesday, wednesday).date() == closed  # the exchange's
    assert calls == []
    cal.refresh_ahead(wednesday)
    assert len(calls) == REFRESH_WEEKS + 1
    assert decision.get_next_fire_time(wednesday, wednesday).date() == dt.date(2025, 12, 5)
    clock[0] += 7200.0  # stale: the trigger keeps what was read, the job asks again
    assert decision.get_next_fire_time(wednesday, wednesday).date() == dt.date(2025, 12, 5)
    assert len(calls) == REFRESH_WEEKS + 1
    cal.refresh_ahead(wednesday)
    assert len(calls) == 2 * (REFRESH_WEEKS + 1)
    # The jobs themselves still ask the source (on their own thread) when theirs is stale.
    clock[0] += 7200.0
    assert cal.session_on(closed) is None and len(calls) == 2 * (REFRESH_WEEKS + 1) + 1


def test_a_daemon_on_a_broker_calendar_reads_it_on_a_thread_of_its_own():
    """A hanging calendar job stalls neither the heartbeat nor the trading jobs: it has
    its own executor, and it read the calendar once before the scheduler started."""
    import tempfile
    import threading
    import time
    from pathlib import Path

    from bot.daemon.service import (
        CALENDAR_EXECUTOR,
        JobSpec,
        Schedule,
        add_calendar_refresh,
        add_heartbeat,
        make_scheduler,
    )
    from bot.daemon.sessions import exchange_sessions

    hang = threading.Event()
    asked: list[str] = []

    def source(start, end):
        asked.append(threading.current_thread().name)
        if len(asked) > 5:
            hang.wait(10)  # the broker's retries
        return exchange_sessions(start, end)

    cal = SessionCalendar(source, max_age=0.0, source_may_hang=True)
    ran: list[str] = []
    schedule = Schedule([JobSpec("open", SessionTrigger(cal, "open", dt.timedelta(minutes=5)),
                                 lambda: ran.append("open"))])
    add_calendar_refresh(schedule, cal, lambda: dt.datetime.now(UTC))
    assert len(asked) == 5  # read ahead at once, before any trigger plans
    (job,) = [s for s in schedule.jobs if s.name == "calendar"]
    assert job.executor == CALENDAR_EXECUTOR
    with tempfile.TemporaryDirectory() as tmp:
        beat = Path(tmp) / "heartbeat"
        add_heartbeat(schedule, beat, every=0.2)
        scheduler = make_scheduler(schedule)
        scheduler.start()
        try:
            scheduler.modify_job("calendar", next_run_time=dt.datetime.now(UTC))
            scheduler.modify_job("open", next_run_time=dt.datetime.now(UTC))
            deadline = time.monotonic() + 5
            while (len(asked) < 6 or not ran) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(asked) >= 6 and ran == ["open"]  # the calendar job hangs; open ran
            first = beat.stat().st_mtime_ns
            time.sleep(0.8)
            assert beat.stat().st_mtime_ns > first  # and the heartbeat goes on
            # only the calendar job asked, never the scheduler's thread or the main one
            assert not {"MainThread", "APScheduler"} & set(asked[5:])
        finally:
            hang.set()
            scheduler.shutdown(wait=True)
