"""`bot run` (the daemon: paper, live or replay), `bot once` and `bot data fetch`."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from bot.arguments import directory, positive_seconds
from bot.errors import BotError, DataError, Terminated
from bot.store.locate import REPO_ROOT, default_config, where_recorded

if TYPE_CHECKING:  # heavy modules: imported inside the commands, so `bot --help` stays fast
    from bot.config import Settings
    from bot.daemon.replay import ReplayResult
    from bot.data.alpaca import AlpacaMarketData
    from bot.data.base import MacroSeries, MarketData, PriceHistory
    from bot.store.tradelog import TradeLog



def register(sub: argparse._SubParsersAction) -> None:
    from bot.cli import iso_date_argument
    from bot.store.locate import database_argument

    run = sub.add_parser("run", help="the trading daemon (paper by default; --replay without keys)")
    run.add_argument("--config", default=default_config(), help="TOML file of the strategy")
    run.add_argument("--replay", metavar="START:END", help="replay the daemon over history")
    run.add_argument("--platform", action="store_true",
                     help="the advisory platform's scheduler: publishes the weekly decision, "
                     "polls and closes for `bot worker`s (see `bot worker --help`)")
    run.add_argument("--live", action="store_true", help="real money: also needs BOT_LIVE_CONFIRM=yes")
    run.add_argument(
        "--database", type=database_argument, help="trade-log URL (default BOT_DATABASE_URL, else store.url)"
    )
    source = run.add_mutually_exclusive_group()  # both given, one was silently dropped
    source.add_argument("--data-dir", type=directory, help="history for --replay (default BOT_DATA_DIR, else data.directory)")
    source.add_argument("--synthetic", action="store_true", help="replay on the synthetic market")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="log only warnings and errors (the summary is still printed)")
    run.set_defaults(func=_cmd_run)

    once = sub.add_parser("once", help="make one decision now and print the orders")
    once.add_argument("--config", default=default_config(), help="TOML file of the strategy")
    once.add_argument("--execute", action="store_true", help="send the orders")
    once.add_argument("--live", action="store_true", help="real money: also needs BOT_LIVE_CONFIRM=yes")
    once.add_argument("--database", type=database_argument,
                      help="trade-log URL (default BOT_DATABASE_URL, else store.url)")
    once.set_defaults(func=_cmd_once)

    health = sub.add_parser(
        "health", help="exit 0 if the daemon's heartbeat is fresh",
        description="Exit 0 if the daemon's heartbeat file was touched within --max-age: "
                    "BOT_HEARTBEAT_FILE, else var/heartbeat in the clone (the daemon writes "
                    "the same path).")
    health.add_argument("--max-age", type=positive_seconds, default=300.0, help="seconds (default 300)")
    health.set_defaults(func=_cmd_health)

    data = sub.add_parser("data", help="market data tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download Alpaca bars and FRED series into the data directory")
    fetch.add_argument("--config", default=default_config(), help="TOML file naming the symbols")
    fetch.add_argument("--start", type=iso_date_argument, default="2010-01-01",
                       help="first day to download, YYYY-MM-DD (default 2010-01-01)")
    fetch.add_argument("--data-dir", type=directory, help="where to write prices/ and macro/ (default BOT_DATA_DIR, else data.directory)")
    fetch.add_argument("--replace", action="store_true",
                       help="replace files that hold days before --start (they are dropped)")
    fetch.set_defaults(func=_cmd_fetch)


def _open(args):
    """Settings, trade log and a started run."""
    from bot import runner
    from bot.config import load_settings, resolve_store_url
    from bot.store.tradelog import TradeLog

    config = Path(args.config)
    settings = load_settings(config)
    if getattr(args, "synthetic", False):
        raw = settings.model_dump(mode="json")
        raw["data"]["source"] = "synthetic"
        from bot.config import parse_settings

        settings = parse_settings(raw, str(config))
    url = args.database or resolve_store_url(settings, config)
    tradelog = TradeLog.open(url)
    return config, settings, tradelog, url, runner


def _cmd_run(args: argparse.Namespace) -> int:
    if args.quiet:
        from bot.logs import configure_logging

        configure_logging("WARNING", args.log_format)
    if args.platform:
        if args.replay:
            raise BotError("--platform and --replay cannot be combined")
        from bot.platform_cli import run_scheduler

        return run_scheduler(args)
    if args.replay:
        if args.live:  # a replay trades on a simulated venue: --live would mean nothing
            raise BotError("--replay and --live cannot be combined (a replay sends no order)")
        return _cmd_replay(args)
    unused = "--synthetic" if args.synthetic else "--data-dir" if args.data_dir else None
    if unused:  # the daemon reads Alpaca and FRED: it would be silently ignored
        raise BotError(f"{unused} only applies to a replay: add --replay START:END")
    return _run_daemon(args)


def _cmd_replay(args: argparse.Namespace) -> int:
    """A replay recorded as a run. SIGTERM and Ctrl-C stop it between jobs, as they stop
    the live daemon: the run is then marked failed (its span was not covered) with an
    `interrupted` incident, and the exit code is 128 + the signal's number."""
    import structlog

    from bot.daemon.replay import parse_span, replay
    from bot.daemon.service import StopRequest, stop_on_signals
    from bot.heap import long_lived

    log = structlog.get_logger("bot.run")
    try:
        start, end = parse_span(args.replay)  # fail fast, before any I/O
    except ValueError as exc:  # the user's input: say what was expected, no traceback
        raise BotError(str(exc)) from None
    config, settings, tradelog, url, runner = _open(args)
    if settings.notify.replay:
        from bot.notify.sender import check_urls

        try:
            check_urls()
        except BaseException:
            tradelog.discard()
            raise
    with long_lived():
        market = _replay_market(args, settings, config, tradelog, start, end)
    stop = StopRequest()
    with stop_on_signals(stop):  # from before the run exists, so it never stays `running`
        run_id = runner.start_run(tradelog, settings, "replay", market.label, market.synthetic)
        log.info("replay started", run=run_id, start=str(start), end=str(end), data=market.label)
        try:
            with _replay_progress(f"replay {start}..{end}") as progress:
                result = replay(settings, market, tradelog, run_id, start, end, stop=stop,
                                progress=progress)
        except BrokenPipeError as exc:
            # Its output went to a reader that left (`| head`): the run is cut short, and
            # says why; the exit code is not the success a covered span would give.
            now = dt.datetime.now(dt.UTC)
            tradelog.incident(now, "interrupted", f"replay stopped: its output was closed ({exc})",
                              {"span": args.replay})
            tradelog.finish_run("failed", now)
            raise BotError("replay stopped: its output was closed before the end of the span; "
                           f"run {run_id} is marked failed") from None
        except BaseException:
            tradelog.finish_run("failed", dt.datetime.now(dt.UTC))
            raise
        return _finish_replay(tradelog, result, market.label, stop.signal_name, f"{start}:{end}",
                              where_recorded(run_id, url, args.config, args.database))


@contextmanager
def _replay_progress(label: str) -> Iterator:
    """A progress bar on stderr when it is a terminal (log lines scroll above it), or
    None. The bar follows simulated time, so a quiet month moves it as much as a busy one."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from bot.terminal import console

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                  console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=1.0)
        yield lambda done: bar.update(task, completed=done)


def _replay_market(
    args: argparse.Namespace,
    settings: Settings,
    config: Path,
    tradelog: TradeLog,
    start: dt.date,
    end: dt.date,
) -> MarketData:
    """The replay's history, checked against START:END before any run is recorded."""
    from bot.config import resolve_data_dir
    from bot.daemon.replay import check_span
    from bot.data.history import load_history

    try:
        data_dir = Path(args.data_dir) if args.data_dir else resolve_data_dir(settings, config)
        market = load_history(settings, data_dir, ["SPY"])
        check_span(start, end, market)
    except BaseException:
        tradelog.discard()  # nothing recorded yet: just release the database
        raise
    return market


def _finish_replay(
    tradelog: TradeLog, result: ReplayResult, label: str, signal_name: str | None, span: str,
    where: list[str],
) -> int:
    """Mark the run, print what it did, and return the exit code: 0 only for a replay
    that covered its span with every job succeeding. `where`: the lines saying where it
    was recorded (bot.store.locate.where_recorded)."""
    import structlog

    from bot.daemon.replay import describe_failures

    log = structlog.get_logger("bot.run")
    run_id = result.run_id
    summary = _replay_summary(tradelog, result, label, signal_name, span)
    if result.interrupted:
        message = (f"replay interrupted by {signal_name or 'a stop request'} at simulated "
                   f"{result.stopped_at:%Y-%m-%d %H:%M} UTC after {result.jobs_run} jobs; "
                   f"its span {span} was not finished (a replay cannot resume: run it again)")
        log.warning("replay interrupted", run=run_id, signal=signal_name,
                    simulated=str(result.stopped_at), jobs=result.jobs_run)
        # on the replay's clock, as its job incidents are; the wall-clock time beside it
        tradelog.incident(result.stopped_at, "interrupted", message,
                          {"signal": signal_name, "jobs_run": result.jobs_run, "span": span,
                           "wall_clock": dt.datetime.now(dt.UTC).isoformat()})
    if result.failures:
        log.error("replay jobs failed", run=run_id, detail=describe_failures(result))
    ok = not result.interrupted and not result.failures
    tradelog.finish_run("finished" if ok else "failed", dt.datetime.now(dt.UTC), summary=summary)
    tradelog.close()
    _print_replay(run_id, summary, result, signal_name, where)
    if result.interrupted:
        log.info("stopped")
        return _interrupted_exit_code(signal_name)
    return 1 if result.failures else 0


def _interrupted_exit_code(signal_name: str | None) -> int:
    """128 + the signal's number, as a shell reports a command a signal ended (130 for
    Ctrl-C, the CLI's code for an interrupted command; 143 for SIGTERM)."""
    import signal

    return 128 + int(signal.Signals[signal_name] if signal_name else signal.SIGINT)


def _replay_summary(
    tradelog: TradeLog, result: ReplayResult, label: str, signal_name: str | None, span: str
) -> dict:
    """The run's summary column: what a later reader needs to trust (or not) the run."""
    equity = tradelog.load_equity(result.run_id)
    return {
        "span": span,  # the stored config's backtest dates are not the replay's
        "jobs": result.jobs_run,
        "jobs_failed": result.jobs_failed,
        "interrupted": (signal_name or "stop request") if result.interrupted else None,
        "orders_canceled_at_end": result.orders_canceled,
        "days": len(equity),
        "final_equity": float(equity["equity"].iloc[-1]) if len(equity) else None,
        "orders": len(tradelog.load_orders(result.run_id)),
        "data": label,
    }


def _print_replay(
    run_id: int, summary: dict, result: ReplayResult, signal_name: str | None, where: list[str]
) -> None:
    """What the replay did, and how to read it (`where`: its trade log named, with the
    options that read it, as the run ids of two logs look alike)."""
    from bot.daemon.replay import describe_failures

    final = summary["final_equity"]
    equity = f"final equity {final:,.2f}" if final is not None else "no equity recorded"
    print(f"replay run {run_id}: {summary['jobs']} jobs over {summary['days']} trading days, "
          f"{summary['orders']} orders, {equity} [{summary['data']}]")
    if result.interrupted:
        print(f"INTERRUPTED by {signal_name or 'a stop request'} at simulated "
              f"{result.stopped_at:%Y-%m-%d}: run {run_id} is marked failed; "
              "a replay cannot resume, run it again")
    if result.failures:
        print(f"FAILED: {describe_failures(result)}; run {run_id} is marked failed "
              "(each error is in the log above and stored as an incident)")
    for line in where:
        print(line)


@contextmanager
def _trading_session(args: argparse.Namespace, trades: bool = True) -> Iterator:
    """A paper/live run in the trade log around connected, reconciled jobs; the run ends
    `finished`, or `failed` if anything escapes. Only one process that `trades` runs per
    strategy instance (bot.daemon.instance): a second is refused before it records a run,
    and the first to start after one died marks that one's run failed. A dry run
    (`bot once` without --execute) sends nothing, so it may look while the daemon runs."""
    from bot.config import load_settings
    from bot.daemon.instance import InstanceLock, close_abandoned_runs
    from bot.daemon.live import build_live, instance_name
    from bot.daemon.live_feed import require_fred_key
    from bot.notify.sender import check_urls
    from bot.secrets import SecretsError, load_credentials, load_endpoints, load_fred_key

    endpoints = load_endpoints(live=args.live)  # refuse live without confirmation first
    load_settings(Path(args.config))  # a config error is named first, as every command names it
    try:
        load_credentials()
    except SecretsError as exc:
        raise SecretsError(f"{exc}. Without keys, try: bot run --replay 2023-01-03:2024-12-31") from None
    require_fred_key(endpoints.fred_url, load_fred_key())  # before a run is recorded
    check_urls()  # a typo in BOT_NOTIFY_URLS stops here, before a run is recorded
    _config, settings, tradelog, _url, runner = _open(args)
    mode = "live" if args.live else "paper"
    try:
        lock = InstanceLock.acquire(tradelog, mode, instance_name(settings)) if trades else None
    except BaseException:
        tradelog.discard()
        raise
    with lock or nullcontext():
        jobs = None
        try:
            with _terminated_while_starting():
                run_id = runner.start_run(tradelog, settings, mode, "alpaca+fred", False)
                if lock is not None:  # only the lock's holder knows the others are dead
                    close_abandoned_runs(tradelog, run_id, dt.datetime.now(dt.UTC))
                jobs = build_live(settings, tradelog, run_id, live=args.live)
            yield jobs, lock
        except BaseException as exc:
            if jobs is not None:
                jobs.close()
            if tradelog.run_id is not None:  # a run was started: it ends failed, saying why
                _record_failure(tradelog, exc, started=jobs is not None)
                tradelog.finish_run("failed", dt.datetime.now(dt.UTC))
                tradelog.close()
            else:
                tradelog.discard()
            raise
        jobs.close()  # queued notifications out (`bot once --execute`; the daemon did it already)
        tradelog.finish_run("finished", dt.datetime.now(dt.UTC))
        tradelog.close()


@contextmanager
def _terminated_while_starting() -> Iterator[None]:
    """SIGTERM raises Terminated until the daemon puts its own handlers in place (the
    jobs then finish first): while it connects (retrying an unreachable Alpaca for a
    minute, say) the default action killed it at once and left its run `running`."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(_signum: int, _frame: object) -> None:
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record_failure(tradelog: TradeLog, exc: BaseException, *, started: bool) -> None:
    """Why a paper/live run failed, as an incident beside its `failed` status (the error
    was only the command's one stderr line); secrets masked."""
    from bot.logs import mask_text

    if isinstance(exc, KeyboardInterrupt):
        kind, message = "interrupted", "stopped by Ctrl-C"
    elif isinstance(exc, Terminated):
        kind, message = "interrupted", "stopped by SIGTERM" + ("" if started else " while starting")
    else:
        kind = "run_failed" if started else "start_failed"
        message = mask_text(f"{type(exc).__name__}: {exc}")[:2000]
    try:
        tradelog.incident(dt.datetime.now(dt.UTC), kind, message)
    except Exception as error:  # noqa: BLE001 - the run's own error is the one to raise
        _warn("failure not recorded as an incident", error=mask_text(str(error)))


def _warn(event: str, **fields: object) -> None:
    from bot.logs import get_logger

    get_logger(__name__).warning(event, **fields)


def _run_daemon(args: argparse.Namespace) -> int:
    import threading

    from bot.daemon.instance import InstanceBusy, lock_watch
    from bot.daemon.service import StopRequest, build_schedule, remove_heartbeat, run_live

    heartbeat = writable_heartbeat_path()  # a bad BOT_HEARTBEAT_FILE, before anything runs
    with _trading_session(args) as (jobs, lock):
        with _terminated_while_starting():  # it reads Alpaca's calendar: minutes, when slow
            schedule = build_schedule(jobs, heartbeat=heartbeat)
        stop, lost = StopRequest(), threading.Event()
        schedule.jobs.append(lock_watch(lock, jobs.ctx.tradelog, stop, lost))
        try:
            run_live(schedule, jobs, stop)
        finally:
            if not lost.is_set():  # lost: another daemon trades now, and may beat there
                remove_heartbeat(heartbeat)
        if lost.is_set():  # the run ends failed, and the command with this error
            raise InstanceBusy(f"stopped: another bot holds {lock.key} now (see `bot incidents`)")
    return 0


def heartbeat_path() -> Path:
    """BOT_HEARTBEAT_FILE, else var/heartbeat in the clone (beside the default trade log)
    whatever the working directory, so the daemon writes and `bot health` reads one file
    (relative to the working directory, a daemon started elsewhere beat where `bot
    health` never looked); installed without a clone, the user's state directory."""
    if os.environ.get("BOT_HEARTBEAT_FILE"):
        return Path(os.environ["BOT_HEARTBEAT_FILE"])
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "var" / "heartbeat"
    import platformdirs

    return Path(platformdirs.user_state_dir("leverbot")) / "heartbeat"


def writable_heartbeat_path() -> Path:
    """heartbeat_path(), checked for the daemon that writes it: a file path whose folder
    exists or can be made. BOT_HEARTBEAT_FILE=/tmp (a folder) was taken, and `bot health`
    said "no heartbeat" for ever; a folder that cannot exist failed after the start."""
    path = heartbeat_path()
    named = "BOT_HEARTBEAT_FILE" if os.environ.get("BOT_HEARTBEAT_FILE") else "the heartbeat file"
    if path.is_dir():
        raise BotError(f"{named}: {path} is a directory; expected the path of a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BotError(f"{named}: cannot create its folder {path.parent}: "
                       f"{exc.strerror or exc}") from None
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise BotError(f"{named}: {path} cannot be written by this user")
    return path


def _cmd_health(args: argparse.Namespace) -> int:
    from bot.daemon.service import heartbeat_age, heartbeat_in_future

    path = heartbeat_path()
    age = heartbeat_age(path)
    if age is None:
        print(f"unhealthy: no heartbeat at {path} (the daemon is not running: it removes "
              "the file when it stops)")
        return 1
    if heartbeat_in_future(age):
        print(f"unhealthy: the heartbeat at {path} is {-age:.0f} s in the future (a clock "
              "step or a copied file); expected a time before now")
        return 1
    if age > args.max_age:
        print(f"unhealthy: last heartbeat {age:.0f} s ago (limit {args.max_age:.0f} s)")
        return 1
    print(f"healthy: last heartbeat {max(age, 0.0):.0f} s ago")  # a little skew reads as now
    return 0


def _cmd_once(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bot.broker.sequenced import QUEUED_MESSAGES
    from bot.daemon.once import decide_once

    with _trading_session(args, trades=args.execute) as (jobs, _lock):
        outcome = decide_once(jobs, execute=args.execute)
    # A buy held back (behind the sells, or until the open) is recorded `new` but is not at
    # Alpaca: the table says so, rather than "SENT ... new" for an order nobody sent.
    queued = [o for o in outcome.orders if o.status_message in QUEUED_MESSAGES]
    if args.execute:
        done = (f"SENT {len(outcome.orders) - len(queued)}, QUEUED {len(queued)}" if queued
                else "SENT" if outcome.orders else "nothing to send")
    else:
        done = "dry run: not sent" + (f"; {len(queued)} would be queued" if queued else "")
    table = Table(title=f"decision on {outcome.day} ({done})")
    for col in ("client order id", "side", "symbol", "quantity", "ref price", "status", "reason"):
        table.add_column(col)
    for o in outcome.orders:
        r = o.request
        status = ("queued" if o.status_message in QUEUED_MESSAGES
                  else o.status.value if args.execute else "not sent")
        table.add_row(r.client_order_id, r.side.value, r.symbol, f"{r.quantity:.6g}",
                      f"{r.reference_price:.2f}", status, r.reason)
    from bot.terminal import console as make_console
    from bot.terminal import stack

    console = make_console()
    for part in stack(table, console, keep=1):
        console.print(part)
    console.print(f"equity {outcome.equity:,.2f}; rebalance: {outcome.rebalance or 'not due'}; "
                  f"risk events: {[e.rule for e in outcome.events] or 'none'}")
    for why in dict.fromkeys(o.status_message for o in queued):
        console.print(f"{why}: the daemon (`bot run`) sends {'them' if args.execute else 'such buys'} "
                      "at its first order poll in a session, each cut to the cash left then")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from bot.calendar import last_closed_session
    from bot.config import load_settings, resolve_data_dir
    from bot.data.alpaca import DATA_DELAY, AlpacaMarketData, csv_files
    from bot.data.base import MACRO_SERIES
    from bot.data.file_set import write_file_set
    from bot.data.fred import fetch_macro
    from bot.data.plausibility import PlausibilityRules
    from bot.reference import supporting_symbols, trading_symbols
    from bot.secrets import load_endpoints, load_fred_key

    config = Path(args.config)
    settings = load_settings(config)
    directory = Path(args.data_dir) if args.data_dir else resolve_data_dir(settings, config)
    symbols = trading_symbols(settings)
    start = dt.date.fromisoformat(args.start)
    last = last_closed_session(dt.datetime.now(dt.UTC) - DATA_DELAY)
    if start > last:  # Alpaca would answer no bars, read as "TQQQ: no bars"
        raise BotError(f"--start {start} is after the last closed session, {last}: "
                       "no daily bar to download yet")
    supporting_names = supporting_symbols(settings)
    if not args.replace:
        _refuse_to_shorten(_fetched_paths(directory, [*symbols, *supporting_names], MACRO_SERIES),
                           start)
    rules = PlausibilityRules.from_settings(settings.data)
    data = AlpacaMarketData.from_env(rules=rules, feed=settings.data.alpaca_feed)
    try:
        history = data.daily_history(symbols, start)
    except DataError as exc:
        if exc.field != "symbol":
            raise
        where = (f"the universe of {config}" if exc.source.split(":")[-1] in settings.universe
                 else "a fund of the reference portfolios")
        raise BotError(f"{exc}: Alpaca has no {settings.data.alpaca_feed} bars of it since "
                       f"{start} (a symbol it does not know? it is in {where})") from None
    supporting, skipped = _supporting_histories(data, supporting_names, start)
    endpoints = load_endpoints()
    macro = fetch_macro(MACRO_SERIES, base_url=endpoints.fred_url, api_key=load_fred_key(),
                        api_url=endpoints.fred_api_url, start=start, rules=rules)
    files = csv_files(history, macro, directory)
    for extra in supporting:
        files.update(csv_files(extra, {}, directory))
    notes = [] if args.replace else _refuse_to_shorten_files(files, _answered(directory, macro))
    written = write_file_set(directory, files)  # one set: all of them or, before renaming, none
    print(f"wrote {len(written)} files to {directory} ({len(history.dates)} trading days, "
          f"{history.dates[0]} .. {history.dates[-1]})")
    for note in notes:
        print(note)
    for symbol, error in skipped:
        print(f"skipped {symbol} (read only by the decay table and stress tests): {error}")
    return 0


def _fetched_paths(directory: Path, symbols: list[str], macro: tuple[str, ...]) -> list[Path]:
    """The files a fetch of `symbols` and the `macro` series (bot.data.fred's names)
    rewrites; any other file in the folder it leaves alone, so it is not judged."""
    from bot.data.fred import resolve

    return ([directory / "prices" / f"{s}.csv" for s in symbols]
            + [directory / "macro" / f"{resolve(n)[0]}.csv" for n in macro])


def _refuse_to_shorten(paths: list[Path], start: dt.date) -> None:
    """A fetch rewrites each of its files whole (adjusted prices change after every split
    and dividend, so old and new rows cannot be merged): one holding days before `start`
    would lose them without a word. Refused, naming the earliest such file."""
    earliest: tuple[dt.date, Path] | None = None
    for path in sorted(paths):
        span = _file_span(path)
        if span is None:
            continue  # absent, not a file of ours, or empty: nothing to keep
        first = span[0]
        if first < start and (earliest is None or first < earliest[0]):
            earliest = (first, path)
    if earliest is not None:
        first, path = earliest
        raise BotError(
            f"{path} starts {first}, before --start {start}: a fetch rewrites each file whole, "
            f"so its days before {start} would be dropped; fetch with --start {first}, or pass "
            "--replace to drop them"
        )


def _answered(directory: Path, macro: Mapping[str, MacroSeries]) -> dict[Path, dt.date]:
    """Each macro file's path -> the last day FRED's answer covered, blank days included
    (MacroSeries.observed): up to that day, a day without a value was withdrawn."""
    return {directory / "macro" / f"{name}.csv": series.observed[1]
            for name, series in macro.items() if series.observed is not None}


def _refuse_to_shorten_files(files: dict[Path, str], answered: Mapping[Path, dt.date]) -> list[str]:
    """A fetch must not rewrite a file with less history than it holds: the source may
    start later than --start (Alpaca's bars begin in 2016, a 2010 file would lose six
    years without a word), or end earlier than the file (a fund the feed stopped
    serving, a series FRED stopped publishing). Refused, naming the first such file
    and both days, unless --replace. A macro series whose answer covered the file's
    last day (`answered`) but gave it no value had it withdrawn: that ends earlier, as
    the live store deletes such a day. Returns a note for each."""
    notes = []
    for path, text in sorted(files.items()):
        held, new = _file_span(path), _text_span(text)
        if held is None or new is None:
            continue
        if held[0] < new[0]:
            raise BotError(
                f"{path} starts {held[0]}, but the download of it starts {new[0]} (the source "
                f"has nothing earlier): rewriting it would drop {held[0]} .. {new[0]}; keep the "
                "file, or pass --replace to drop those days"
            )
        if held[1] > new[1]:
            notes.append(_earlier_end(path, held[1], new[1], answered.get(path)))
    return notes


def _earlier_end(path: Path, held: dt.date, new: dt.date, answered: dt.date | None) -> str:
    """The note for a file the download ends before (`new` < `held`, its last day): FRED
    answered up to `held` with no value after `new`, so those days were withdrawn; any
    other source (a price file, a series whose answer stops earlier) is refused."""
    if answered is None or answered < held:
        raise BotError(
            f"{path} ends {held}, but the download of it ends {new} (the source has "
            f"nothing later now): rewriting it would drop its days after {new}; keep "
            "the file, or pass --replace to drop those days"
        )
    dropped = ", ".join(str(d) for d in _days_after(path, new))
    return (f"{path.stem}: FRED withdrew its value of {dropped} (its answer covers "
            f"through {answered} with no value after {new}): dropped from {path}")


def _days_after(path: Path, day: dt.date) -> list[dt.date]:
    """The days of a data file of ours after `day` (rows it cannot read are skipped)."""
    days = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        with suppress(ValueError):
            when = dt.date.fromisoformat(line.split(",", 1)[0].strip())
            if when > day:
                days.append(when)
    return days


def _file_span(path: Path) -> tuple[dt.date, dt.date] | None:
    """The first and last day of a data file of ours; None if there is none (no file,
    no rows, or not ours)."""
    try:
        return _text_span(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _text_span(text: str) -> tuple[dt.date, dt.date] | None:
    """The first and last day of a data file's text (a header, then `date,...` rows)."""
    rows = [line for line in text.splitlines()[1:] if line.strip()]
    if not rows:
        return None
    try:
        first, last = (dt.date.fromisoformat(r.split(",", 1)[0].strip()) for r in (rows[0], rows[-1]))
    except ValueError:
        return None
    return first, last


def _supporting_histories(
    data: AlpacaMarketData, symbols: list[str], start: dt.date
) -> tuple[list[PriceHistory], list[tuple[str, DataError]]]:
    """Each supporting fund on its own: one the feed has no bars for is skipped (and
    named), since the strategy does not need it; any other failure stops the fetch."""
    histories, skipped = [], []
    for symbol in symbols:
        try:
            histories.append(data.daily_history([symbol], start))
        except DataError as exc:
            if exc.field != "symbol":
                raise
            skipped.append((symbol, exc))
    return histories, skipped
