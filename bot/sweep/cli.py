"""`bot sweep`: the command's options; the work is in bot.sweep.runner."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.arguments import directory, positive_count

#: the largest grid run without raising --max-combinations
DEFAULT_MAX_COMBINATIONS = 1000


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bot.sweep.runner import SweepOptions, run_sweep_command

    options = SweepOptions(
        config=Path(args.config),
        grid=tuple(args.grid),
        walk_forward=args.walk_forward,
        metric=args.metric,
        workers=args.workers,
        cluster=args.cluster,
        record=args.record,
        start=args.start,
        end=args.end,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        synthetic=args.synthetic,
        database=args.database,
        out=Path(args.out) if args.out else None,
        charts=not args.no_charts,
        max_combinations=args.max_combinations,
    )
    return run_sweep_command(options)




def register(subparsers: argparse._SubParsersAction) -> None:
    from bot.cli import iso_date_argument
    from bot.store.locate import DEFAULT_CONFIG, database_argument, default_config

    # Names only (no heavy imports): `bot --help` builds this parser.
    metrics = ("sharpe", "sortino", "cagr", "calmar", "total_return", "max_drawdown")
    sweep = subparsers.add_parser(
        "sweep",
        help="backtest every combination of a parameter grid in parallel; rank, walk-forward",
        description="Run every combination of the --grid values through the backtest engine "
        "(data loaded once, combinations in parallel), record each as a run tagged with the "
        "sweep, and print them ranked by --metric.",
    )
    sweep.add_argument("--config", default=default_config(),
                       help=f"TOML file (default {DEFAULT_CONFIG}, here or in the repository)")
    sweep.add_argument(
        "--grid", action="append", required=True, metavar="KEY=V1,V2,...",
        help="a config field and its values, e.g. risk.vol_high=1.25,1.5,2 (repeat per field)",
    )
    sweep.add_argument(
        "--walk-forward", metavar="TRAIN:TEST",
        help="pick the best combination on each training window and report the stitched "
        "test windows: 3y:1y, 18m:6m or trading days 756:252",
    )
    sweep.add_argument("--metric", choices=metrics, default="sharpe",
                       help="what ranks and picks combinations (default sharpe)")
    sweep.add_argument("--workers", type=positive_count,
                       help="processes of the local pool (default: this machine's cores)")
    sweep.add_argument("--cluster", metavar="ADDRESS",
                       help="run on a Dask distributed scheduler, e.g. tcp://host:8786")
    sweep.add_argument(
        "--record", choices=("summary", "full"), default="summary",
        help="summary (default): each run's config and metrics; full: every order, fill, "
        "target and equity point, as `bot backtest` records (slower)",
    )
    sweep.add_argument("--start", type=iso_date_argument, help="first day, YYYY-MM-DD")
    sweep.add_argument("--end", type=iso_date_argument, help="last day, YYYY-MM-DD")
    source = sweep.add_mutually_exclusive_group()  # both given, one was silently dropped
    source.add_argument("--data-dir", type=directory, help="CSV directory with prices/ and macro/ (or BOT_DATA_DIR)")
    source.add_argument("--synthetic", action="store_true", help="use the seeded synthetic market")
    sweep.add_argument("--database", type=database_argument,
                       help="trade-log URL (default BOT_DATABASE_URL, else the config's store.url)")
    sweep.add_argument("--out", help="directory for the files (default reports/sweep-ID beside "
                       "a SQLite trade log)")
    sweep.add_argument("--no-charts", action="store_true", help="no heatmap or walk-forward chart")
    sweep.add_argument("--max-combinations", type=positive_count, default=DEFAULT_MAX_COMBINATIONS,
                       help=f"refuse a larger grid (default {DEFAULT_MAX_COMBINATIONS}): each "
                       "combination is a run in the trade log")
    sweep.set_defaults(func=_cmd_sweep)
