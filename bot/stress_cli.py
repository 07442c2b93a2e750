"""`bot stress`: the research's factor shocks and replays of real crises, applied to the
config's current portfolio or to a stored run's holdings (model: bot/stress.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.arguments import directory, run_id
from bot.store.locate import database_argument, default_config

if TYPE_CHECKING:
    from rich.console import Console

    from bot.config import Settings
    from bot.stress import Portfolio


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stress", help="factor shocks and crisis replays of the current or a stored run's portfolio"
    )
    parser.add_argument("--config", default=default_config(),
                        help="TOML file: universe, strategy and [stress] model (default: the repository's)")
    parser.add_argument("--run", type=run_id,
                        help="stress this run's last holdings (default: where a backtest of the config ends)")
    parser.add_argument("--account",
                        help="with --run, one client account of a run of several: its registry id or broker account id")
    parser.add_argument("--database", type=database_argument,
                        help="trade-log URL for --run (default BOT_DATABASE_URL or store.url)")
    parser.add_argument("--data-dir", type=directory, help="CSV directory with prices/ and macro/ (or BOT_DATA_DIR)")
    parser.add_argument("--format", choices=["table", "json"], default="table",
                        help="terminal tables (default) or the whole result as JSON")
    parser.set_defaults(func=_cmd_stress)


def _cmd_stress(args: argparse.Namespace) -> int:
    from bot.config import load_settings, resolve_data_dir
    from bot.data.history import load_history
    from bot.reference import stress_symbols
    from bot.report import _jsonable
    from bot.stress import strategy_portfolio, stress_report

    config = Path(args.config)
    if args.account is not None and args.run is None:
        from bot.errors import BotError

        raise BotError("--account needs --run: it picks one client account of a stored run")
    settings = load_settings(config)
    recorded = None
    notes: list[str] = []
    if args.run is not None:
        settings, portfolio, recorded, notes = _stored_run(args, settings)
    data_dir = Path(args.data_dir) if args.data_dir else recorded or resolve_data_dir(settings, config)
    market = load_history(settings, data_dir, sorted(stress_symbols(settings)))
    if args.run is None:
        portfolio = strategy_portfolio(settings, market, str(config))
    report = stress_report(settings, market, portfolio, {"config": str(config), "run_id": args.run})
    report["notes"] = notes + report["notes"]
    report = _jsonable(report)
    if args.format == "json":
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        from rich.console import Console

        render(report, Console() if sys.stdout.isatty() else Console(width=120))
    return 0


def _stored_run(
    args: argparse.Namespace, settings: Settings
) -> tuple[Settings, Portfolio, Path | None, list[str]]:
    """The run's holdings (of its one client account, or of --account in a run of
    several), its own config (when it still validates) and data directory."""
    from bot.config import parse_settings
    from bot.errors import BotError
    from bot.store.benchmark import recorded_data_dir
    from bot.store.locate import database_url
    from bot.store.run_report import run_account, run_row
    from bot.store.tradelog import TradeLog
    from bot.stress import run_portfolio

    log = TradeLog.open_readonly(database_url(args.config, args.database))
    try:
        run = run_row(log, args.run)
        account = run_account(log, args.run, args.account)
        positions, equity = log.load_positions(args.run, account), log.load_equity(args.run, account)
        portfolio = run_portfolio(positions, equity, args.run, account)
    finally:
        log.engine.dispose()
    notes = []
    try:
        settings = parse_settings(run["config"] or {}, f"run {args.run}'s stored config")
    except BotError as exc:
        notes.append(f"run {args.run}'s stored config no longer validates ({exc}); {args.config} used")
    return settings, portfolio, recorded_data_dir(run["data_source"]), notes


# --------------------------------------------------------------------------- tables


def _pct(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:+.{digits}f}"


def render(report: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    from bot.terminal import literal

    meta = report["meta"]
    label = str(meta["data_label"])
    style = "bold white on red" if "SYNTHETIC" in label.upper() else "bold"
    console.rule(f"[{style}] Stress tests — data: {literal(label)} [/]")
    held = meta["portfolio"]
    parts = [f"{s} {w:.1%}" for s, w in held["weights"].items()] + [f"cash {held['cash']:.1%}"]
    console.print(f"Portfolio: {held['source']}, {held['as_of']}: " + ", ".join(parts),
                  highlight=False, markup=False)  # the source names a config path

    model = meta["model"]
    factors = Table(
        title=f"Factor shocks, instantaneous; a window day by day (sensitivities on daily returns "
        f"{model['calibration']['start']}..{model['calibration']['end']})",
        title_justify="left",
    )
    factors.add_column("scenario", style="bold")
    headers = (f"{model['market']} %", "yield bp", f"{model['rates']} %", "portfolio %", "research (000)")
    for header in headers:
        factors.add_column(header, justify="right")
    for row in report["factor_scenarios"]:
        if not row["covered"]:
            factors.add_row(row["name"], "-", "-", "-", "not in the data", row["research"] or "-")
            continue
        ours = _pct(row["portfolio_move"])
        if row.get("tracking_error") is not None:
            ours += f" (TE {row['tracking_error'] * 100:.1f})"
        factors.add_row(
            row["name"], _pct(row["market_move"]), f"{row['yield_change_bp']:+.0f}",
            _pct(row["rates_fund_move"]), ours, row["research"] or "-",
        )
    console.print(factors)

    funds = Table(title="Per fund: move in each scenario (leverage x index move, floor -100%; "
                  "a window's daily moves compounded)",
                  title_justify="left")
    funds.add_column("fund", style="bold")
    funds.add_column("weight %", justify="right")
    funds.add_column("index: how it moves")
    covered = [r for r in report["factor_scenarios"] if r["covered"]]
    for row in covered:
        funds.add_column(row["key"].replace("_", " "), justify="right")
    for i, s in enumerate(report["sensitivities"]):
        how = _how(s, model)
        moves = [_pct(r["assets"][i]["fund_move"]) for r in covered]
        weight = held["weights"].get(s["symbol"], 0.0)
        funds.add_row(f"{s['symbol']} {s['leverage']:g}x", f"{weight * 100:.1f}", how, *moves)
    console.print(funds)

    replays = Table(title="Historical replays (the backtest engine from this portfolio: held, and "
                    "managed by the strategy)", title_justify="left")
    replays.add_column("episode", style="bold")
    headers = ("days", "held %", "held max DD %", "strategy %", "strategy max DD %", f"{model['market']} %")
    for header in headers:
        replays.add_column(header, justify="right")
    for row in report["replays"]:
        if not row["covered"]:
            replays.add_row(row["name"], "-", "not in the data", "-", "-", "-", "-")
            continue
        replays.add_row(
            row["name"], str(row["days"]), _pct(row["hold"]["return"]),
            _pct(row["hold"]["max_drawdown"]), _pct(row["strategy"]["return"]),
            _pct(row["strategy"]["max_drawdown"]), _pct(row["market_return"]),
        )
    console.print(replays)

    lines = [f"{r['name']}: {r['basis']}" for r in report["factor_scenarios"]]
    lines += [f"{r['name']}: {r['note']}" for r in report["replays"] if r.get("note")]
    lines += report["notes"]
    for line in lines:
        console.print(f"- {line}", highlight=False, soft_wrap=False, markup=False)


def _how(s: dict[str, Any], model: dict[str, Any]) -> str:
    """One line on a fund's index sensitivity, for the per-fund table."""
    if s["path"] == "market":
        return f"{s['index']} = {model['market']}"
    if s["path"] == "duration":
        duration = model["durations"][model["rates"]] * s["b_rate"]
        return f"{s['index']}: -{duration:g}y x dy"
    if s["path"] == "index beta":
        return f"{s['index']}: beta {s['b_market']:.2f}"
    if s["path"] == "co-move":
        return f"{s['index']}: {s['b_market']:.2f} M {s['b_rate']:+.2f} R"
    return f"{s['index']}: no data"
