"""`bot run --platform`: the scheduler only publishes, on the daemon's session triggers
(exchange calendar here): the weekly decision after the week's first open on the close
before it, a poll round every 2 minutes, the close round after each close."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.daemon.sessions import SessionCalendar
from bot.platform.scheduler import Publisher, build_platform_schedule

UTC = dt.UTC


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple]] = []
        self.fail = False

    def __call__(self, name: str, args: tuple) -> None:
        if self.fail:
            raise ConnectionError("RabbitMQ is down")
        self.sent.append((name.rsplit(".", 1)[-1], args))


def fire(schedule, name: str, after: dt.datetime, now: list[dt.datetime]) -> dt.datetime:
    """Run job `name` at its first fire time after `after`; returns that time."""
    (spec,) = [s for s in schedule.jobs if s.name == name]
    when = spec.trigger.get_next_fire_time(None, after)
    now[0] = when
    assert spec.run() is True
    return when


@pytest.fixture
def platform():
    recorder, now = Recorder(), [dt.datetime(2024, 11, 20, tzinfo=UTC)]
    schedule = build_platform_schedule(SessionCalendar(), Publisher("paper", recorder), lambda: now[0])
    return schedule, recorder, now


def test_the_weekly_decision_is_published_after_the_weeks_first_open(platform):
    schedule, recorder, now = platform
    when = fire(schedule, "decision", dt.datetime(2024, 11, 23, tzinfo=UTC), now)
    assert when == dt.datetime(2024, 11, 25, 14, 35, tzinfo=UTC)  # Monday 09:35 New York
    assert recorder.sent == [("decide", ("2024-11-22", "paper"))]  # on Friday's close
    # A Monday holiday (Martin Luther King day): Tuesday's open, still Friday's close.
    when = fire(schedule, "decision", dt.datetime(2025, 1, 18, tzinfo=UTC), now)
    assert when == dt.datetime(2025, 1, 21, 14, 35, tzinfo=UTC)
    assert recorder.sent[-1] == ("decide", ("2025-01-17", "paper"))


def test_polls_and_closes_are_published_on_the_session_timetable(platform):
    schedule, recorder, now = platform
    when = fire(schedule, "close", dt.datetime(2024, 11, 29, tzinfo=UTC), now)
    assert when == dt.datetime(2024, 11, 29, 18, 20, tzinfo=UTC)  # the 13:00 early close
    assert recorder.sent == [("close_round", ("2024-11-29",))]
    (poll,) = [s for s in schedule.jobs if s.name == "poll"]
    assert poll.trigger.interval == dt.timedelta(minutes=2)
    assert poll.run() is True and recorder.sent[-1] == ("poll_round", ())


def test_a_failed_publish_is_logged_and_the_scheduler_goes_on(platform, capsys):
    schedule, recorder, now = platform
    recorder.fail = True
    (poll,) = [s for s in schedule.jobs if s.name == "poll"]
    assert poll.run() is False
    assert "publish failed" in "".join(capsys.readouterr())  # stdout or stderr, as configured
    recorder.fail = False
    assert poll.run() is True


def test_a_decision_or_close_that_could_not_be_published_goes_out_with_a_later_poll(platform):
    """RabbitMQ down at 09:35 on Monday: the week's decision used to be logged and lost
    (and the day's close too). It is owed and sent before the first poll round that can
    publish, once."""
    schedule, recorder, now = platform
    recorder.fail = True
    (decision,) = [s for s in schedule.jobs if s.name == "decision"]
    (poll,) = [s for s in schedule.jobs if s.name == "poll"]
    (close,) = [s for s in schedule.jobs if s.name == "close"]
    now[0] = decision.trigger.get_next_fire_time(None, dt.datetime(2024, 11, 23, tzinfo=UTC))
    assert decision.run() is False
    now[0] = close.trigger.get_next_fire_time(None, now[0])
    assert close.run() is False
    assert poll.run() is False and recorder.sent == []  # still down: still owed
    recorder.fail = False
    assert poll.run() is True
    assert recorder.sent == [("decide", ("2024-11-22", "paper")), ("close_round", ("2024-11-25",)),
                             ("poll_round", ())]
    assert poll.run() is True and recorder.sent[-1] == ("poll_round", ())  # paid once
    assert len(recorder.sent) == 4


def test_an_owed_close_is_dropped_at_the_next_open_and_an_owed_decision_by_a_newer_one(platform):
    """A close sent after the next session opened would value that morning's holdings at
    the old close; a week's decision sent after the next week's is due would trade last
    week's targets over this week's. Both are dropped (and logged) instead."""
    schedule, recorder, now = platform
    (decision,) = [s for s in schedule.jobs if s.name == "decision"]
    (poll,) = [s for s in schedule.jobs if s.name == "poll"]
    (close,) = [s for s in schedule.jobs if s.name == "close"]
    recorder.fail = True
    now[0] = close.trigger.get_next_fire_time(None, dt.datetime(2024, 11, 26, tzinfo=UTC))
    assert close.run() is False  # Tuesday's close, owed
    now[0] = dt.datetime(2024, 11, 27, 14, 31, tzinfo=UTC)  # Wednesday 09:31 New York
    recorder.fail = False
    assert poll.run() is True
    assert recorder.sent == [("poll_round", ())]  # the close was not sent
    recorder.fail = True
    now[0] = decision.trigger.get_next_fire_time(None, dt.datetime(2024, 11, 23, tzinfo=UTC))
    assert decision.run() is False  # the decision on Nov 22's close, owed
    now[0] = decision.trigger.get_next_fire_time(None, now[0] + dt.timedelta(minutes=1))  # a week on
    assert decision.run() is False
    recorder.fail = False
    assert poll.run() is True
    assert recorder.sent[-2:] == [("decide", ("2024-11-29", "paper")), ("poll_round", ())]
    assert ("decide", ("2024-11-22", "paper")) not in recorder.sent


def test_a_restarted_scheduler_publishes_the_decision_and_close_it_missed(platform):
    """Started at 10:40 New York on Monday (the decision was at 09:35), and at 00:30 UTC
    after a close (the next date in UTC): both are published for the right days."""
    schedule, recorder, now = platform
    (decision,) = [s for s in schedule.jobs if s.name == "decision"]
    (close,) = [s for s in schedule.jobs if s.name == "close"]
    assert decision.catch_up and close.catch_up
    restart = dt.datetime(2024, 11, 25, 15, 40, tzinfo=UTC)
    assert decision.first_run(restart) <= restart
    now[0] = restart
    assert decision.run() is True and recorder.sent == [("decide", ("2024-11-22", "paper"))]
    evening = dt.datetime(2024, 11, 27, 0, 30, tzinfo=UTC)  # Tuesday 19:30 New York
    assert close.first_run(evening) <= evening
    now[0] = evening
    assert close.run() is True and recorder.sent[-1] == ("close_round", ("2024-11-26",))


def test_the_platform_flag_refuses_replay(capsys):
    from bot.cli import main

    assert main(["run", "--platform", "--replay", "2024-01-02:2024-02-01"]) == 2
    assert "--platform and --replay cannot be combined" in capsys.readouterr().err


def test_publishing_without_rabbitmq_is_a_one_line_error_without_the_password(
    monkeypatch, capsys, tmp_path
):
    from bot.cli import main
    from bot.platform import store
    from bot.store.tradelog import TradeLog

    monkeypatch.setenv("BOT_QUEUE_URL", "amqp://leverbot:s3cret-Pw@127.0.0.1:9//")
    monkeypatch.setenv("BOT_QUEUE_NAME", "leverbot-test-unreachable")
    db = f"sqlite:///{tmp_path / 'platform.sqlite'}"
    assert main(["platform", "decide", "--day", "2024-11-22", "--database", db]) == 2
    err = capsys.readouterr().err
    assert "cannot publish to RabbitMQ at amqp://leverbot:***@127.0.0.1:9// (BOT_QUEUE_URL)" in err
    assert "s3cret" not in err and "Traceback" not in err
    log = TradeLog.open(db)
    assert store.waiting_decisions(log.engine) == []  # not published: nothing waits
    log.close()
    # A day that is no session, or not closed yet, is refused before anything is recorded.
    for day, expected in (("2024-11-23", "not an exchange session"), ("2099-01-02", "not closed yet")):
        assert main(["platform", "decide", "--day", day, "--database", db]) == 2
        assert f"--day {day}: {expected}" in capsys.readouterr().err


def test_the_scheduler_records_its_decision_as_waiting_and_withdraws_a_failed_one(tmp_path):
    """With the trade log, the weekly decision is recorded as waiting before it is
    published (`bot platform status` shows it until a worker takes it); a publish that
    fails leaves nothing waiting, and a trade log that fails never stops the publish."""
    from bot.platform import store
    from bot.store.tradelog import TradeLog

    log = TradeLog.open(f"sqlite:///{tmp_path / 'platform.sqlite'}")
    recorder, now = Recorder(), [dt.datetime(2024, 11, 20, tzinfo=UTC)]
    publisher = Publisher("paper", recorder, engine=log.engine, clock=lambda: now[0])
    schedule = build_platform_schedule(SessionCalendar(), publisher, lambda: now[0])
    fire(schedule, "decision", dt.datetime(2024, 11, 23, tzinfo=UTC), now)
    assert recorder.sent == [("decide", ("2024-11-22", "paper"))]
    assert [(w.day, w.mode, w.published_at) for w in store.waiting_decisions(log.engine)] == [
        (dt.date(2024, 11, 22), "paper", dt.datetime(2024, 11, 25, 14, 35, tzinfo=UTC))]

    recorder.fail = True
    (decision,) = [s for s in schedule.jobs if s.name == "decision"]
    now[0] = dt.datetime(2024, 12, 2, 14, 35, tzinfo=UTC)
    assert decision.run() is False  # logged as a failed publish
    assert [w.day for w in store.waiting_decisions(log.engine)] == [dt.date(2024, 11, 22)]

    recorder.fail = False
    log.engine.dispose()
    (tmp_path / "platform.sqlite").unlink()  # the trade log gone: published all the same
    (tmp_path / "platform.sqlite").mkdir()
    assert decision.run() is True
    assert recorder.sent[-1] == ("decide", ("2024-11-29", "paper"))
