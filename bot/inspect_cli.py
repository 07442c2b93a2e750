"""Inspection commands: `bot trades|orders|positions|regimes|equity|risk-events|incidents|runs|report`.

They only read: the trade log is opened read-only, so they are safe to run while the
daemon writes (SQLite in WAL mode lets readers and one writer work at once).
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.arguments import MAX_ID, row_limit, run_id, symbol
from bot.store.locate import add_database_arguments, database_url, report_dir

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Connection

    from bot.store.queries import Filters, Liveness
    from bot.store.rows import Rows

# command -> (help, query function name in bot.store.queries, default: latest run or all runs)
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "trades": ("fills, newest last", "trades", True),
    "orders": ("orders with their latest status", "orders", True),
    "positions": ("holdings at the last snapshot (or every snapshot with --history)", "positions", True),
    "regimes": ("weekly regime decisions with their inputs", "regimes", True),
    "equity": ("daily equity, cash, drawdown and regime", "equity", True),
    "risk-events": ("risk rules that fired, with their inputs", "risk_events", True),
    "incidents": ("what went wrong: failed jobs, stale data, rejected rows", "incidents", False),
    "runs": ("every recorded run", "runs", False),
}

# Commands whose rows belong to a client account (the others take no --account).
ACCOUNT_COMMANDS = frozenset({"trades", "orders", "positions", "equity", "runs"})

# Columns a narrow terminal leaves out first, least important first (CSV and JSON keep them).
TABLE_DROP: dict[str, tuple[str, ...]] = {
    "trades": ("slippage_cost", "commission", "client_order_id"),
    "orders": ("broker_order_id", "reference_price", "notional", "average_price", "client_order_id"),
    "positions": ("price",),
    "regimes": ("vix_date", "spread_date", "uncertainty_date", "warning"),
    "equity": ("positions_value", "cash"),
    "risk-events": ("inputs",),
    "runs": ("config_hash", "code_version", "finished_at", "data_source"),
}

# Long free-text columns that make a terminal table unreadable; CSV and JSON keep them.
TABLE_HIDDEN: dict[str, tuple[str, ...]] = {
    "orders": ("reason", "status_message", "updated_at"),
    "incidents": ("context",),
    "runs": ("holder", "heartbeat_at"),
}


def _day(text: str) -> dt.date:
    """argparse type for --since/--until: the same strict YYYY-MM-DD rule as every date."""
    from bot.config import parse_iso_date

    try:
        return parse_iso_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None


def _run(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return run_id(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a run id (1 to {MAX_ID}, see `bot runs`) or 'all', got {text!r}"
        ) from None


def _add_filters(parser: argparse.ArgumentParser, latest: bool) -> None:
    add_database_arguments(parser)
    default = "the latest run" if latest else "all runs"
    parser.add_argument("--run", type=_run, help=f"run id, or 'all' (default: {default})")
    parser.add_argument("--since", type=_day, help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--until", type=_day, help="last day, YYYY-MM-DD (UTC), inclusive")
    parser.add_argument("--symbol", type=symbol, help="one asset, e.g. TQQQ")
    parser.add_argument(
        "--limit", type=row_limit, help="only the most recent N rows (tables show 100 unless given; 0: all)"
    )
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table",
                        help="table for reading (default), csv or json with every column and digit")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bot.store import queries
    from bot.store.engines import mask_url
    from bot.store.export import TABLE_ROWS, write
    from bot.store.tradelog import TradeLog

    # Built first: a reversed date range is the user's mistake, said before any I/O. A
    # table shows the last TABLE_ROWS rows unless --limit says otherwise: only those are
    # fetched, and the rest counted.
    implicit = args.limit is None and args.format == "table"
    filters = queries.Filters(
        since=args.since, until=args.until, symbol=args.symbol,
        limit=TABLE_ROWS if implicit else args.limit or None, count_all=implicit,
    )
    url = database_url(args.config, args.database)
    log = TradeLog.open_readonly(url)
    account_ref = getattr(args, "account", None)
    try:
        with log.engine.connect() as conn:
            account = None if account_ref is None else queries.resolve_account(conn, account_ref)
            run = _chosen_run(conn, args.run, latest=COMMANDS[args.command][2], account=account)
            filters = replace(filters, run=run if isinstance(run, int) else None, account=account)
            rows = _query(conn, args, filters)
            synthetic = isinstance(run, int) and queries.run_is_synthetic(conn, run)
            if args.format != "table" and args.command != "runs":  # runs has the column
                rows = _with_synthetic_column(conn, rows, synthetic)
    finally:
        log.engine.dispose()
    # A synthetic run's prices, regimes and fills look like history: the title says not
    scope = f"run {run}" if isinstance(run, int) else "all runs"
    if synthetic:
        scope += " (SYNTHETIC market)"
    if account is not None:
        scope += f" — account {account_ref}"
    title = f"{args.command} — {scope} — {mask_url(url)}"
    if args.format == "table":  # the terminal gets the readable columns; exports get all
        hidden = TABLE_HIDDEN.get(args.command, ()) + (("run_id",) if isinstance(run, int) else ())
        if "account_id" in rows.columns and (
            account is not None or all(a is None for a in rows.column("account_id"))
        ):
            hidden += ("account_id",)  # one account, or the single-account daemon's rows
        rows = rows.drop(hidden)
    write(rows, args.format, title=title, truncate=args.limit is None,
          drop=TABLE_DROP.get(args.command, ()))
    if args.command == "positions" and args.format == "table":
        _say_if_flat(rows, args.symbol)
    return 0


def _with_synthetic_column(conn: Connection, rows: Rows, synthetic: bool) -> Rows:
    """An export's rows with `synthetic` beside their run (rows without a run column: the
    one run's flag, `synthetic`): a CSV or JSON file carries no title, and a synthetic
    market's prices and fills read like history once copied out."""
    from bot.store import queries

    if "run_id" in rows.columns:
        run_ids = rows.column("run_id")
        fake = queries.synthetic_runs(conn, {int(r) for r in run_ids if r is not None})
        flags = [r is not None and int(r) in fake for r in run_ids]
        return rows.inserted(rows.columns.index("run_id") + 1, "synthetic", flags)
    return rows.inserted(0, "synthetic", [synthetic] * len(rows))


def _say_if_flat(rows: Rows, symbol: str | None) -> None:
    """Under a table of zero rows only: the book is flat on that day (everything sold),
    which the rows alone leave to be inferred; with --symbol, only that asset is (the
    rest of the book is not in the rows)."""
    from bot.terminal import console as make_console

    if rows.empty or any(q != 0 for q in rows.column("quantity")):
        return
    days = ", ".join(sorted({str(d) for d in rows.column("day")}))
    text = (f"{symbol} is not held on {days} (quantity 0 in that snapshot)" if symbol
            else f"the book is flat on {days}: every holding of that snapshot is 0 (all cash)")
    make_console().print(text, markup=False, highlight=False)


def _chosen_run(
    conn: Connection, run: int | str | None, *, latest: bool, account: int | None = None
) -> int | str | None:
    """The run to show: the one asked for (checked to exist), else the latest (that
    recorded something for `account`, if given) or all."""
    from bot.store import queries

    if run is None and latest:
        run = queries.latest_run(conn, account)
    if isinstance(run, int):
        queries.require_run(conn, run)
    return run


def _query(conn: Connection, args: argparse.Namespace, filters: Filters) -> Rows:
    from bot.store import queries

    query = getattr(queries, COMMANDS[args.command][1])
    if args.command == "orders":
        return query(conn, filters, status=args.status)
    if args.command == "positions":
        return query(conn, filters, history=args.history or args.since is not None)
    if args.command == "runs":
        return query(conn, filters, documents=args.format != "table")
    return query(conn, filters)


def _cmd_report(args: argparse.Namespace) -> int:
    from bot.report import render_table, write_charts, write_json
    from bot.store import queries
    from bot.store.run_report import build_stored_report
    from bot.store.tradelog import TradeLog
    from bot.tearsheet.page import write_tearsheet
    from bot.terminal import console as make_console

    url = database_url(args.config, args.database)
    log = TradeLog.open_readonly(url)
    try:
        run_id = args.run
        if run_id is None:
            with log.engine.connect() as conn:
                account = None if args.account is None else queries.resolve_account(conn, args.account)
                run_id = queries.latest_run(conn, account)
        stored = build_stored_report(log, run_id, config_path=Path(args.config), database=url,
                                     account=args.account)
        with log.engine.connect() as conn:
            alive = queries.liveness(conn, run_id)
    finally:
        log.engine.dispose()
    warning = unfinished_warning(run_id, stored.report["meta"]["status"], stored.strategy.equity,
                                 alive)
    if warning:  # a new list: stored.notes (printed below the table) shares the old one
        stored.report["meta"]["notes"] = [warning, *stored.report["meta"]["notes"]]
    # one folder per account: a second account's report must not overwrite the first's
    stored_dir = "stored" if stored.account is None else f"stored-account-{stored.account}"
    out = Path(args.out) if args.out else report_dir(url, run_id) / stored_dir
    write_json(stored.report, out / "report.json")
    label = stored.report["meta"]["data_label"]
    charts = [] if args.no_charts else [
        *write_charts(stored.strategy, stored.benchmarks, out, data_label=label),
        *write_tearsheet(stored.report, stored.strategy, stored.benchmarks, out,
                         risk_free=stored.risk_free),
    ]
    console = make_console()
    if warning:
        console.print(warning, style="bold red", markup=False, highlight=False, soft_wrap=True)
    render_table(stored.report, console)
    for note in stored.notes:  # notes and paths may hold brackets: never markup
        console.print(note, style="yellow", markup=False)
    console.print(f"report of run {run_id}: {out / 'report.json'}", markup=False)
    for chart in charts:
        console.print(f"chart: {chart}", markup=False)
    return 0


# What a run's status says about its records, for the runs that did not finish.
UNFINISHED: dict[str, str] = {
    "running": "is still marked 'running': it is in progress, or was stopped before it could "
               "record its end (killed, or the machine went down; the next run started on "
               "its machine, or of its strategy for a paper or live one, marks it failed)",
    "failed": "failed: it stopped on an error or was interrupted",
}


#: A 'running' run whose process state is known (bot.store.queries.liveness), as `bot runs`
#: shows it: said instead of "in progress, or was stopped".
RUNNING_PROCESS: dict[str, str] = {
    "gone": "is still marked 'running' but its process is gone (killed, or the machine went "
            "down; the next run started on its machine, or of its strategy for a paper or "
            "live one, marks it failed)",
    "alive": "is still marked 'running' and its process is alive: it is in progress",
}


def unfinished_warning(
    run_id: int, status: str, equity: pd.Series, alive: Liveness | None = None
) -> str | None:
    """A line for a run that did not finish: its figures stop where its records stop, so
    they must not read like those of a complete run. `alive` (the run's process state,
    when known) says whether a 'running' run is in progress or dead."""
    what = UNFINISHED.get(status)
    if what is None:
        return None
    if status == "running" and alive is not None:
        what = RUNNING_PROCESS.get(alive.process or "", what)
        if alive.doubtful and alive.process != "gone":  # not gone, so silent
            what += ", but its heartbeat is stale (stuck or suspended?)"
        if alive.heartbeat_at is not None:
            what += f"; last heartbeat {alive.heartbeat_at:%Y-%m-%d %H:%M} UTC"
    last = f" (last equity point {equity.index[-1]:%Y-%m-%d})" if len(equity) else ""
    return f"WARNING: run {run_id} {what}; the figures cover only what it recorded{last}."


def register(subparsers: argparse._SubParsersAction) -> None:
    from bot.types import OrderStatus

    for name, (help_text, _query, latest) in COMMANDS.items():
        parser = subparsers.add_parser(name, help=help_text)
        _add_filters(parser, latest)
        if name == "orders":
            statuses = ["open", *(s.value for s in OrderStatus)]
            parser.add_argument(
                "--status", choices=statuses, help="one status, or 'open': every non-final one"
            )
        if name == "positions":
            parser.add_argument("--history", action="store_true", help="every snapshot in range")
        if name in ACCOUNT_COMMANDS:
            parser.add_argument(
                "--account", help="one client account: its registry id or broker account id"
            )
        parser.set_defaults(func=_cmd_inspect, logs_lazily=True)  # reads and prints only

    report = subparsers.add_parser(
        "report", help="rebuild the backtest-style report of a stored run, against SPY"
    )
    add_database_arguments(report)
    report.add_argument("--run", type=run_id, help="run id (default: the latest run)")
    report.add_argument(
        "--account", help="one client account of a run of several: its registry id or broker account id"
    )
    report.add_argument(
        "--out", help="directory (default reports/run-ID/stored beside a SQLite trade log)"
    )
    report.add_argument("--no-charts", action="store_true",
                        help="skip the PNG charts and tearsheet.html (report.json and tables only)")
    report.set_defaults(func=_cmd_report)
