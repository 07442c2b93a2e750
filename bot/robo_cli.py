"""`bot suitability`: backtest each robo profile and its static example allocation, then
report SRRI, PRIIPs MRM, drawdown and Sharpe against the profile's intended SRRI range.

The runs go through the same engine and fill model as `bot backtest` but are not written
to the trade log: this is a report on a config, not a trading run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.arguments import directory

if TYPE_CHECKING:
    from bot.data.base import MarketData


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bot suitability` to the command line (see bot.cli.COMMAND_MODULES)."""
    from bot.cli import iso_date_argument

    p = sub.add_parser(
        "suitability", help="MiFID II suitability of robo profiles: SRRI, PRIIPs MRM, fit"
    )
    p.add_argument("--config", action="append", required=True,
                   help="a robo profile's TOML file (repeat for several profiles)")
    p.add_argument("--out", help="write the report as JSON to this file")
    source = p.add_mutually_exclusive_group()  # both given, one was silently dropped
    source.add_argument("--data-dir", type=directory, help="CSV directory with prices/ and macro/ (or BOT_DATA_DIR)")
    p.add_argument("--start", type=iso_date_argument,
                   help="first day, YYYY-MM-DD (default: each config's backtest.start)")
    p.add_argument("--end", type=iso_date_argument,
                   help="last day, YYYY-MM-DD (default: the data's end)")
    source.add_argument("--synthetic", action="store_true", help="use the seeded synthetic market")
    p.set_defaults(func=_cmd_suitability)


def _cmd_suitability(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bot.report import write_json

    console = Console() if sys.stdout.isatty() else Console(width=200)
    profiles = [profile_report(Path(c), args) for c in args.config]
    report = {
        "meta": {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "srri_method": "CESR/10-673: sqrt(52) x std of weekly returns over the last 5 years",
            "priips_method": "Reg. (EU) 2017/653 Annex II category 2: Cornish-Fisher 97.5% VaR "
                             "of daily log returns over 5 years -> VEV -> MRM class",
        },
        "profiles": profiles,
    }
    render(report, console)
    if args.out:
        write_json(report, Path(args.out))
        console.print(f"report: {args.out}", markup=False)
    return 0


def profile_report(config: Path, args: argparse.Namespace, market: MarketData | None = None
                   ) -> dict[str, Any]:
    """Backtest one robo config and its static allocation; the suitability of both, on
    `market` if given (the data the API serves), else the config's data read now."""
    from bot.backtest import run_backtest, scratch_tradelog
    from bot.config import load_settings, resolve_data_dir
    from bot.data.base import RISK_FREE
    from bot.data.history import load_history
    from bot.errors import ConfigError
    from bot.metrics import performance
    from bot.reference import reference_settings
    from bot.runner import BacktestOptions, apply_overrides, code_version, macro_series
    from bot.suitability import suitability

    # (no benchmarks=False: run_backtest runs none anyway, and the override changed the
    # config's fingerprint, so the API's suitability and allocation named two configs)
    options = BacktestOptions(config=config, start=args.start, end=args.end,
                              synthetic=args.synthetic)
    settings = apply_overrides(load_settings(config), options, str(config))
    if settings.strategy.kind != "factor":
        raise ConfigError(str(config), ["strategy.kind: `bot suitability` needs a factor (robo) config"])
    if market is None:
        data_dir = Path(args.data_dir) if args.data_dir else resolve_data_dir(settings, config)
        market = load_history(settings, data_dir)
    risk_free = macro_series(market, RISK_FREE)
    f = settings.factor
    static_name, static = next(
        (n, s) for n, s in reference_settings(settings).items() if n.startswith("Whitepaper")
    )
    rows = []
    for name, cfg in ((settings.strategy.name, settings), (static_name, static)):
        log = scratch_tradelog(name)
        result = run_backtest(cfg, market, log, name=name, order_prefix="su")
        log.discard()
        equity = result.equity_series()
        perf = performance(equity, risk_free=risk_free, fills=result.fills_frame())
        rows.append(suitability(name, equity, f.intended_srri, f.priips_rhp_years, perf))
    return {
        "profile": f.profile,
        "config": str(config),
        "config_hash": settings.fingerprint(),
        "code_version": code_version(),
        "data_label": market.label,
        "strategy": rows[0],
        "static_allocation": rows[1],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def fits_cell(row: dict[str, Any]) -> str:
    """The table's fits column: a fit measured on a short history (fewer than 5 years of
    weekly returns for the SRRI or of daily prices for the PRIIPs measure) is a fit on
    less than the rules ask for, and says so."""
    short = row["srri"]["short_history"] or row["priips"]["short_history"]
    verdict = "yes" if row["fits"] else "[bold red]NO[/]"
    return f"{verdict} (short history)" if short else verdict


def _short(text: str, short_history: bool, under_minimum: bool = False) -> str:
    if under_minimum:
        return text + " (under 2 years)"
    return text + (" (short)" if short_history else "")


def short_history_note(row: dict[str, Any]) -> str | None:
    """Which measure of a row rests on less than the 5 years its rules ask for."""
    s, p = row["srri"], row["priips"]
    parts = ([f"SRRI on {s['weeks']} weeks (260 wanted)"] if s["short_history"] else []) + (
        [f"PRIIPs VEV/MRM on {p['observations']} daily returns (5 years wanted)"]
        if p["short_history"] else []
    )
    if p.get("under_category_2_minimum"):
        parts.append("under the 2 years of daily prices PRIIPs category 2 needs (Annex II "
                     "point 5): its MRM must come from a benchmark or proxy")
    return "short history: " + ", ".join(parts) if parts else None


def render(report: dict[str, Any], console) -> None:
    """One table: per profile the strategy, then its static allocation."""
    from rich.table import Table

    from bot.terminal import literal

    labels = {p["data_label"] for p in report["profiles"]}
    table = Table(title=literal(f"MiFID II suitability — data: {', '.join(sorted(labels))}"),
                  title_justify="left")
    for header in ("profile", "series", "span", "weeks", "vol 5y %", "SRRI", "rolling",
                   "intended", "fits", "VEV %", "MRM", "max DD %", "max DD 5y %", "Sharpe",
                   "CAGR %"):
        table.add_column(header, justify="left" if header in ("profile", "series", "span") else "right")
    for prof in report["profiles"]:
        for key in ("strategy", "static_allocation"):
            row = prof[key]
            s, p = row["srri"], row["priips"]
            rolling = row["srri_rolling_range"]
            table.add_row(
                prof["profile"] if key == "strategy" else "",
                row["name"],
                f"{row['span'][0]}..{row['span'][1]}",
                _short(f"{s['weeks']}", s["short_history"]),
                _pct(row["expected_volatility"]),
                "-" if s["risk_class"] is None else str(s["risk_class"]),
                "-" if rolling is None else f"{rolling[0]}-{rolling[1]}",
                "{}-{}".format(*row["intended_srri"]),
                fits_cell(row),
                _short(_pct(p["vev"]), p["short_history"], p.get("under_category_2_minimum", False)),
                "-" if p["mrm_class"] is None else str(p["mrm_class"]),
                _pct(row["max_drawdown"]),
                _pct(row["max_drawdown_5y"]),
                "-" if row["sharpe"] is None else f"{row['sharpe']:.2f}",
                _pct(row["cagr"]),
            )
        table.add_section()
    console.print(table)
    for prof in report["profiles"]:
        mismatch = prof["strategy"]["mismatch"]
        if mismatch:
            console.print(f"{prof['profile']}: {mismatch}", style="bold red", markup=False)
        note = short_history_note(prof["strategy"])
        if note:
            console.print(f"{prof['profile']}: {note}", style="yellow", markup=False)
    if any("SYNTHETIC" in label.upper() for label in labels):
        console.print("[bold red]SYNTHETIC DATA: these numbers are not real market history.[/]")
