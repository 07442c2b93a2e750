"""`bot worker` (a platform worker: Celery's worker with our config and logging),
`bot run --platform` (the scheduler, which only publishes) and `bot platform ...`
(publish a decision or round by hand; batch summaries)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket

from bot.arguments import positive_count, row_limit, run_id
from bot.store.locate import add_database_arguments, database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    worker = subparsers.add_parser(
        "worker", help="a platform worker: runs the client accounts' tasks from RabbitMQ"
    )
    worker.add_argument("--concurrency", type=positive_count, default=4,
                        help="tasks at once in this process (default 4)")
    worker.add_argument("--pool", choices=["threads", "prefork", "solo"], default="threads",
                        help="threads (default: one process, the work waits on the network), "
                        "prefork (one process per task) or solo")
    worker.add_argument("--name", default=None,
                        help="the worker's name in Celery (default worker-HOST-PID)")
    worker.add_argument("--live", action="store_true",
                        help="the live Broker API (needs BOT_LIVE_CONFIRM=yes); default: the sandbox")
    add_database_arguments(worker)
    worker.set_defaults(func=_cmd_worker)

    platform = subparsers.add_parser("platform", help="the advisory platform's batches")
    sub = platform.add_subparsers(dest="platform_command", required=True)
    status = sub.add_parser("status", help="batches: accounts done, retried, dead-lettered")
    status.add_argument("--run", type=run_id, help="one batch (its run id); default: the latest")
    status.add_argument("--limit", type=row_limit, default=10,
                        help="batches listed, the newest first (default 10; 0 for all)")
    status.add_argument("--format", choices=["table", "json"], default="table",
                        help="output format (default table)")
    add_database_arguments(status)
    status.set_defaults(func=_cmd_status)

    decide = sub.add_parser("decide", help="publish the weekly decision now")
    decide.add_argument("--day", help="the close to decide on, YYYY-MM-DD (default: the last "
                        "session before this week's first)")
    decide.add_argument("--live", action="store_true", help="for the live workers")
    add_database_arguments(decide)  # where it waits, as `bot platform status` shows
    decide.set_defaults(func=_cmd_decide)
    revive = sub.add_parser(
        "retry-dead", help="publish a batch's dead-lettered accounts again (after an outage)")
    revive.add_argument("--run", type=run_id, required=True, help="the batch (its run id)")
    revive.add_argument("--live", action="store_true", help="for the live workers")
    add_database_arguments(revive)
    revive.set_defaults(func=_cmd_retry_dead)
    rounds = sub.add_parser("poll", help="publish a poll round now")
    rounds.add_argument("--live", action="store_true", help="for the live workers")
    rounds.set_defaults(func=lambda args: _publish(args, "poll"))
    close = sub.add_parser("close", help="publish the close round of a day now")
    close.add_argument("--day", required=True, help="the session, YYYY-MM-DD")
    close.add_argument("--live", action="store_true", help="for the live workers")
    close.set_defaults(func=lambda args: _publish(args, "close"))




def _day(option: str, text: str) -> dt.date:
    from bot.config import parse_iso_date
    from bot.errors import BotError

    try:
        return parse_iso_date(text)
    except ValueError as exc:
        raise BotError(f"{option}: {exc}, got {text!r}") from None


# -- worker --------------------------------------------------------------------------------


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from celery import signals

    from bot.platform import tasks
    from bot.platform.settings import PlatformSettings
    from bot.secrets import load_broker_credentials, load_broker_endpoint
    from bot.store.tradelog import TradeLog

    settings = PlatformSettings.from_env(live=args.live)
    load_broker_endpoint(live=args.live)  # live needs its confirmation before anything else
    load_broker_credentials()
    url = database_url(args.config, args.database)
    TradeLog.open(url).close()  # a schema to upgrade is named now, not at the first task
    app = tasks.configure(settings, url, live=args.live)

    @signals.setup_logging.connect
    def _stdlib_logging(**_kwargs: object) -> None:
        # Celery's own lines (connection lost, task retried) at WARNING; ours are structlog's.
        logging.basicConfig(level=logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    name = args.name or f"worker-{socket.gethostname()}-{os.getpid()}"
    level = "WARNING" if args.log_level not in ("DEBUG", "INFO") else "INFO"
    app.worker_main([
        "--quiet", "worker", f"--pool={args.pool}", f"--concurrency={args.concurrency}",
        f"--hostname={name}@%h", f"--loglevel={level}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])
    return 0


# -- scheduler -----------------------------------------------------------------------------


def run_scheduler(args: argparse.Namespace) -> int:
    """`bot run --platform`: publish the platform's jobs on the session timetable."""
    import structlog

    from bot.daemon.service import remove_heartbeat
    from bot.daemon.sessions import CALENDAR_MAX_AGE_S, SessionCalendar
    from bot.daemon_cli import writable_heartbeat_path
    from bot.platform import tasks
    from bot.platform.scheduler import Publisher, build_platform_schedule, run_scheduler
    from bot.platform.settings import PlatformSettings
    from bot.secrets import SecretsError, load_broker_endpoint

    settings = PlatformSettings.from_env(live=args.live)
    load_broker_endpoint(live=args.live)
    tasks.configure(settings)
    mode = "live" if args.live else "paper"
    broker_calendar = _broker_calendar(args.live, SecretsError)
    calendar = SessionCalendar(broker_calendar, max_age=CALENDAR_MAX_AGE_S,
                               source_may_hang=broker_calendar is not None)
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    log = structlog.get_logger("bot.platform")
    heartbeat = writable_heartbeat_path()  # a bad BOT_HEARTBEAT_FILE, before anything opens
    tradelog = _waiting_record(args, log)
    try:
        publisher = Publisher(mode, engine=tradelog.engine if tradelog else None, clock=clock)
        schedule = build_platform_schedule(calendar, publisher, clock, heartbeat=heartbeat)
        log.info("platform scheduler started", mode=mode, queue=settings.queue_name)
        run_scheduler(schedule)
    finally:
        remove_heartbeat(heartbeat)  # stopped: `bot health` says so at once
        if tradelog is not None:
            tradelog.engine.dispose()
    return 0


def _waiting_record(args: argparse.Namespace, log):
    """The trade log the scheduler records its published decisions in as waiting (the
    workers'), or None with a warning: the scheduler publishes without it."""
    import sqlalchemy as sa

    from bot.errors import BotError
    from bot.store.tradelog import TradeLog

    try:
        return TradeLog.open(database_url(args.config, args.database))
    except (BotError, sa.exc.SQLAlchemyError, OSError) as exc:
        log.warning("no trade log: published decisions are not shown as waiting by "
                    "`bot platform status`", error=str(exc))
        return None


def _broker_calendar(live: bool, missing_keys: type[Exception]):
    """The Broker API's calendar when keys are set, else None (the exchange calendar)."""
    from bot.broker.broker_api import BrokerPlatform

    try:
        platform = BrokerPlatform.from_env(live=live)
    except missing_keys:
        return None
    return platform.account_broker("").calendar


# -- publishing by hand --------------------------------------------------------------------


def _cmd_decide(args: argparse.Namespace) -> int:
    from bot.daemon.sessions import SessionCalendar
    from bot.errors import BotError
    from bot.platform import store
    from bot.platform.scheduler import Publisher
    from bot.secrets import load_broker_endpoint
    from bot.store.tradelog import TradeLog

    load_broker_endpoint(live=args.live)
    if args.day:
        day = _day("--day", args.day)
        _check_decision_day(day)
    else:
        calendar = SessionCalendar()
        today = dt.datetime.now(dt.UTC).date()
        monday = today - dt.timedelta(days=today.weekday())
        week = [s for s in calendar.between(monday, monday + dt.timedelta(days=6))]
        if not week:
            raise BotError("no trading session this week: give the day with --day")
        day = calendar.previous_session(week[0].day).day
    mode = "live" if args.live else "paper"
    # Opened before anything is published: a trade log out of reach stops the command.
    log = TradeLog.open(database_url(args.config, args.database))
    try:
        Publisher(mode, send=lambda name, task_args: _send(name, list(task_args), args.live),
                  engine=log.engine).decide(day)
        batch = store.batch_of_day(log.engine, day, mode)
    finally:
        log.engine.dispose()
    print(f"weekly decision on the close of {day} published ({mode})")
    if batch is None:
        print("it waits for a worker (`bot worker`); `bot platform status` shows it until "
              "one takes it")
    else:
        print(f"the batch of that day exists (run {batch}): a worker publishes its "
              "unfinished tasks again")
    return 0


def _check_decision_day(day: dt.date) -> None:
    """A decision is made on a session's final close: a weekend, a holiday or a day not
    closed yet is refused before it is recorded (its waiting row would make the running
    batch's tasks stand down for a decision that cannot be made)."""
    from bot.calendar import last_closed_session
    from bot.daemon.sessions import SessionCalendar
    from bot.data.alpaca import DATA_DELAY
    from bot.errors import BotError

    last = last_closed_session(dt.datetime.now(dt.UTC) - DATA_DELAY)
    if day > last:
        raise BotError(f"--day {day}: not closed yet (the last closed session is {last})")
    if SessionCalendar().session_on(day) is None:
        raise BotError(f"--day {day}: not an exchange session (a weekend or a holiday)")


def _cmd_retry_dead(args: argparse.Namespace) -> int:
    """Revive the batch's dead-lettered accounts and publish their tasks: after a broker
    outage longer than the retries, nothing else would trade them this week."""
    import sqlalchemy as sa
    from kombu.exceptions import OperationalError

    from bot.errors import BotError
    from bot.platform import store, tasks
    from bot.platform.settings import PlatformSettings, masked_url
    from bot.store.tradelog import TradeLog

    log = TradeLog.open(database_url(args.config, args.database))
    try:
        store.summarize(log.engine, args.run)  # a run that is no batch is named now
        with log.engine.connect() as conn:
            mode = conn.execute(sa.select(store.RUNS.c.mode).where(store.RUNS.c.id == args.run)).scalar()
        if (mode == "live") != args.live:  # its tasks go to that mode's queue and workers
            raise BotError(f"run {args.run} is a {mode} batch: "
                           + ("add --live" if mode == "live" else "drop --live"))
        revived, left = store.revive_dead(log.engine, args.run, dt.datetime.now(dt.UTC))
    finally:
        log.engine.dispose()
    if revived:
        settings = PlatformSettings.from_env(live=args.live)
        tasks.configure(settings)
        try:
            tasks.publish_each(tasks.rebalance, [(r.id, r.account_id) for r in revived],
                               lambda r: f"rebalance-{args.run}-{r[0]}-again")
        except OperationalError as exc:
            raise BotError(f"{len(revived)} account(s) revived, but RabbitMQ at "
                           f"{masked_url(settings.queue_url)} refused their tasks ({exc}): the "
                           "poll round publishes them within 15 minutes") from None
    print(f"batch {args.run}: {len(revived)} dead-lettered account(s) published again"
          + (f"; {left} left dead (a profile not decided, or a plan closed unsent since: "
             "the next decision trades them)" if left else ""))
    return 0


def _publish(args: argparse.Namespace, what: str) -> int:
    if what == "poll":
        _send("leverbot.platform.poll_round", [], args.live)
        print("poll round published")
    else:
        day = _day("--day", args.day)
        _send("leverbot.platform.close_round", [day.isoformat()], args.live)
        print(f"close round of {day} published")
    return 0


def _send(name: str, task_args: list, live: bool) -> None:
    """Publish one task; RabbitMQ out of reach is a one-line error naming it."""
    from kombu.exceptions import OperationalError

    from bot.errors import BotError
    from bot.platform import tasks
    from bot.platform.settings import PlatformSettings, masked_url

    settings = PlatformSettings.from_env(live=live)
    tasks.configure(settings)
    try:
        tasks.app.send_task(name, args=task_args)
    except OperationalError as exc:
        raise BotError(f"cannot publish to RabbitMQ at {masked_url(settings.queue_url)} "
                       f"(BOT_QUEUE_URL): {exc}") from None


# -- status --------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    import sqlalchemy as sa

    from bot.errors import BotError
    from bot.platform import store
    from bot.store.tradelog import TradeLog

    log = TradeLog.open_readonly(database_url(args.config, args.database))
    try:
        # Decisions published and not yet taken by a worker come first (not with --run).
        queued = [] if args.run else store.waiting_decisions(log.engine)
        if args.run:
            runs = [args.run]
        else:
            with log.engine.connect() as conn:
                runs = list(conn.execute(
                    sa.select(store.RUNS.c.id).where(store.RUNS.c.strategy == store.PLATFORM_STRATEGY)
                    .order_by(store.RUNS.c.id.desc()).limit(args.limit or None)
                ).scalars())
        if not runs and not queued:
            raise BotError("no platform batch in this trade log yet (see `bot run --platform`)")
        summaries = [store.summarize(log.engine, int(r)) for r in runs]
        headline = _headline(summaries)
        dead = store.dead_letters(log.engine, headline.run_id) if headline else []
    finally:
        log.engine.dispose()
    if args.format == "json":
        waiting = [{"run": None, "status": "waiting", "decision_day": w.day.isoformat(),
                    "mode": w.mode, "published_at": w.published_at.isoformat()} for w in queued]
        print(json.dumps(waiting
                         + [{"run": s.run_id, "status": s.status, **s.as_dict()} for s in summaries]
                         + ([{"dead_letters": dead}] if dead else []), indent=2))
        return 0
    _print_status(summaries, headline, dead, queued)
    return 0


def _headline(summaries):
    """The batch the summary line describes: the newest that is not a superseded decide
    (whose run holds no accounts: the batch it gave way to is the one to report)."""
    return next((s for s in summaries if s.superseded_by is None), summaries[0] if summaries else None)


def _print_status(summaries, first, dead, queued) -> None:
    from rich.table import Table

    from bot.terminal import console as make_console

    table = Table(title="platform batches")
    for column in ("run", "decided on", "status", "accounts", "done", "skipped", "retried",
                   "dead", "waiting", "orders", "seconds"):
        table.add_column(column, justify="left" if column in ("decided on", "status") else "right")
    for w in queued:
        table.add_row("-", str(w.day), "waiting for a worker", *["-"] * 8)
    for s in summaries:
        seconds = f"{s.seconds:.1f}" if s.seconds is not None else "-"
        table.add_row(str(s.run_id), str(s.day or "-"), s.shown_status, str(s.accounts), str(s.done),
                      str(sum(s.skipped.values())), str(s.retried), str(s.dead), str(s.waiting),
                      str(s.orders), seconds)
    console = make_console()
    console.print(table)
    for w in queued:
        print(f"decision on the close of {w.day} ({w.mode}): published at "
              f"{w.published_at:%Y-%m-%d %H:%M:%S} UTC, not yet taken by a worker "
              "(is a `bot worker` running?)")
    if first is None:
        return
    skipped = sum(first.skipped.values())
    print(f"batch {first.run_id}: {first.done} of {first.accounts} accounts done"
          + (f" ({skipped} of them skipped: nothing traded)" if skipped else "")
          + f", {first.retried} retried, {first.dead} failed (dead-lettered), {first.waiting} waiting")
    for why, accounts in first.skipped.items():
        print(f"  skipped: {accounts} account{'s' if accounts != 1 else ''}: {why}")
    for item in dead:
        print(f"  dead letter: account {item['account_id']} ({item['broker_account_id']}): "
              f"{item['error']}")
