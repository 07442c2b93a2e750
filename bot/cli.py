"""leverbot: a regime-aware leveraged-ETF trading daemon with a SQL trade log.

Run `bot COMMAND --help` for a command's options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import sys
from pathlib import Path

from bot import __version__
from bot.arguments import LOG_LEVELS, directory, log_level
from bot.errors import BotError, ConfigError, Terminated

# Modules that add their own subcommands: each defines `register(subparsers)` and keeps
# heavy imports inside its command functions so `bot --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "bot.daemon_cli",
    "bot.inspect_cli",
    "bot.dashboard.cli",
    "bot.store.db_cli",
    "bot.robo_cli",
    "bot.accounts_cli",
    "bot.rebalancing_cli",
    "bot.stress_cli",
    "bot.sweep.cli",
    "bot.api.cli",
    "bot.platform_cli",
)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from bot.config import load_settings

    failed = 0
    for path in args.files:
        try:
            settings = load_settings(path)
        except ConfigError as exc:
            failed += 1
            print(f"{path}: INVALID ({len(exc.problems)} problem(s))")
            for problem in exc.problems:
                print(f"  - {problem}")
        else:
            print(f"{path}: OK ({len(settings.universe)} assets, fingerprint {settings.fingerprint()})")
    return 1 if failed else 0


def iso_date_argument(text: str) -> str:
    """argparse type for --start/--end: a real date YYYY-MM-DD, kept as text; a typo is a
    usage error before any data is loaded, not a traceback from numpy."""
    from bot.config import parse_iso_date

    try:
        parse_iso_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None
    return text


def _cmd_backtest(args: argparse.Namespace) -> int:
    from bot.heap import long_lived

    with long_lived():  # pandas, SQLAlchemy...: kept to the end, never worth a scan
        from bot.runner import BacktestOptions, run_backtest_command

    options = BacktestOptions(
        config=Path(args.config),
        start=args.start,
        end=args.end,
        weighting=args.weighting,
        fill=args.fill,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        synthetic=args.synthetic,
        out=Path(args.out) if args.out else None,
        charts=not args.no_charts,
        benchmarks=not args.no_benchmarks,
        database=args.database,
        overrides=tuple(args.set),
    )
    return run_backtest_command(options)


def build_parser() -> argparse.ArgumentParser:
    from bot.store.locate import DEFAULT_CONFIG, database_argument, default_config

    parser = argparse.ArgumentParser(
        prog="bot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--log-level", type=log_level, default="INFO", help=", ".join(LOG_LEVELS)
    )
    parser.add_argument("--log-format", choices=["console", "json"], default=None,
                        help="log lines for a terminal or as JSON (default: console on a "
                             "terminal, JSON when piped; BOT_LOG_FORMAT)")
    # One list of commands, each with its help; metavar keeps argparse from printing
    # every name again in a {a,b,c,...} brace line above it.
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    bt = sub.add_parser("backtest", help="simulate the strategy over history and report")
    bt.add_argument("--config", default=default_config(),
                    help=f"TOML file (default {DEFAULT_CONFIG}, here or in the repository)")
    bt.add_argument("--start", type=iso_date_argument,
                    help="first day, YYYY-MM-DD (default: backtest.start)")
    bt.add_argument("--end", type=iso_date_argument,
                    help="last day, YYYY-MM-DD (default: backtest.end or the data's end)")
    bt.add_argument("--weighting", choices=["inverse_vol", "erc", "mean_variance", "strategic"],
                    help="how the leverage strategy weighs its assets (default: strategy.weighting)")
    bt.add_argument("--fill", choices=["next_open", "next_close", "same_close"],
                    help="when orders fill (default: backtest.fill, next_open)")
    source = bt.add_mutually_exclusive_group()  # both given, one was silently dropped
    source.add_argument("--data-dir", type=directory, help="CSV directory with prices/ and macro/ (or BOT_DATA_DIR)")
    source.add_argument("--synthetic", action="store_true", help="use the seeded synthetic market")
    bt.add_argument("--out", help="directory for report.json and charts (default reports/run-ID beside a SQLite trade log)")
    bt.add_argument(
        "--database", type=database_argument, help="trade-log URL (default BOT_DATABASE_URL, else store.url)"
    )
    bt.add_argument("--no-charts", action="store_true",
                    help="skip the PNG charts and tearsheet.html (faster)")
    bt.add_argument("--no-benchmarks", action="store_true",
                    help="skip the comparison portfolios (SPY, 60/40, TQQQ, fixed weights)")
    bt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. risk.vol_high=2 (repeatable; "
                    "as one combination of `bot sweep --grid`)")
    bt.set_defaults(func=_cmd_backtest)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser(
        "check", help="validate config files; lists every bad field",
        description="Validate config files and list every bad field of each.",
        epilog="Exit status, as linters give it: 0 when every file is valid, 1 when any is "
               "not. (Other commands exit 2 on a bad config: they could not run.)")
    check.add_argument("files", nargs="+", metavar="FILE", help="TOML config files to check")
    check.set_defaults(func=_cmd_config_check)

    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=lambda _args: print(__version__) or 0)

    return parser


def main(argv: list[str] | None = None) -> int:
    from bot.logs import configure_logging, defer_logging, mask_crashes, mask_text

    if argv is None:  # the `bot` process: a crash's traceback is masked like the log lines
        mask_crashes()
    args = build_parser().parse_args(argv)
    # Commands that only read and print set logs_lazily: structlog loads if they log.
    setup = defer_logging if getattr(args, "logs_lazily", False) else configure_logging
    try:
        setup(args.log_level, args.log_format)
        return int(args.func(args))
    except BotError as exc:  # a broker's message may quote what it was sent: masked
        print(f"error: {mask_text(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # a socket or another pipe broke: not ours to hide
        _discard_stdout()
        return 0
    except OSError as exc:  # a path the system refused (full disk, permissions): say which
        if exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from bot.logs import get_logger

        get_logger(__name__).warning("interrupted", at=dt.datetime.now(dt.UTC).isoformat())
        return 130
    except Terminated:
        from bot.logs import get_logger

        get_logger(__name__).warning("terminated", at=dt.datetime.now(dt.UTC).isoformat())
        return 143
    finally:
        if argv is not None:  # called in-process (tests, a notebook), not as `bot`
            from bot.heap import thaw

            thaw()  # what the command froze at its start (bot.heap) goes back to the collector


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (`bot trades | head -1`): the
    reader has what it wanted, so like other unix tools the command ends quietly."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() or no real stdout
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so Python's final flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
