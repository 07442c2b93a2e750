"""Backtest reports: one JSON-safe dict, rendered as terminal tables, markdown, and charts.

The dict is the single source: tables, markdown and the JSON file all read it, so what
the terminal shows is exactly what gets saved. Every report carries its data label, and
synthetic data is called out wherever the numbers appear.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from bot.decay import decay_table
from bot.errors import cannot_write
from bot.metrics import drawdown_series, performance, period_table, regime_table, slice_fills
from bot.research import cost_section, cost_table

REGIME_COLORS = {"GROWTH": "tab:green", "TRANSITION": "orange", "UNCERTAINTY": "tab:red"}
STRATEGY_COLOR = "#111827"
_BENCHMARK_COLORS = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#a16207")
_OTHER_REGIME_COLOR = "tab:gray"


@dataclass
class RunSeries:
    """One equity curve to report on: the strategy or a benchmark, with optional detail."""

    name: str
    equity: pd.Series
    fills: pd.DataFrame | None = None
    weights: pd.DataFrame | None = None  # daily actual weights; symbols plus maybe "CASH"
    regimes: pd.Series | None = None


# --------------------------------------------------------------------------- building


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (no numpy scalars, NaN or inf), so json.dumps never fails."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dt.date | pd.Timestamp):
        return value.isoformat()
    return str(value)


def _align_to(run: RunSeries, dates: pd.DatetimeIndex) -> RunSeries:
    """A benchmark restricted to the strategy's dates, so every row covers the same days.

    Each strategy date takes the benchmark's last value on or before it (a holiday the
    benchmark skipped repeats its previous close); dates before its first value or after
    its last are dropped (a benchmark whose data ends early is not carried on flat).
    """
    equity = run.equity.dropna().sort_index()
    equity = equity[~equity.index.duplicated(keep="last")]
    aligned = (equity.reindex(equity.index.union(dates)).ffill(limit_area="inside")
               .reindex(dates).dropna())
    fills = slice_fills(run.fills, dates[0], dates[-1])
    return RunSeries(run.name, aligned, fills, run.weights, run.regimes)


def _series_rows(
    run: RunSeries,
    *,
    risk_free: pd.Series | None,
    market: pd.Series | None,
    periods: list[tuple[str, str, str]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Summary row and period rows of one series."""
    kwargs = {"risk_free": risk_free, "market": market, "fills": run.fills}
    summary = {"name": run.name, **performance(run.equity, **kwargs)}
    return summary, period_table(run.equity, list(periods), **kwargs)


def build_report(
    strategy: RunSeries,
    benchmarks: list[RunSeries],
    *,
    risk_free: pd.Series | None,
    market: pd.Series | None,
    periods: list[tuple[str, str, str]],
    data_label: str,
    meta: dict[str, Any],
    sections: dict[str, Any] | None = None,
    strategy_kind: str = "leverage",
    synthetic: bool = False,
) -> dict[str, Any]:
    """Everything a report shows, as a JSON-serializable dict (strategy row first).

    Benchmarks are cut to the strategy's dates so every summary row covers the same days.
    On a `synthetic` market the periods keep their dates but not their names' claim:
    "Financial crisis 2008-2009" becomes "dates of Financial crisis 2008-2009 (synthetic
    prices)", since no crisis is in those prices.
    `sections` adds named parts computed elsewhere (the volatility-decay table); a None
    section is left out. `strategy_kind` picks the research claims shown beside the
    results (the leverage paper's cost claim is not the robo paper's).
    """
    dates = pd.DatetimeIndex(strategy.equity.dropna().sort_index().index)
    if dates.empty:
        raise ValueError(f"strategy {strategy.name!r} has no equity values")
    runs = [strategy] + [_align_to(b, dates) for b in benchmarks]
    if synthetic:
        periods = [(f"dates of {name} (synthetic prices)", start, end) for name, start, end in periods]
    summary: list[dict[str, Any]] = []
    by_period: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.equity.empty:
            summary.append({"name": run.name, "note": "no data"})
            continue
        row, period_rows = _series_rows(run, risk_free=risk_free, market=market, periods=periods)
        summary.append(row)
        by_period[run.name] = period_rows
    regimes = (
        regime_table(strategy.equity, strategy.regimes) if strategy.regimes is not None else []
    )
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report = {
        "meta": {**meta, "data_label": data_label, "generated_at": generated},
        "summary": summary,
        "periods": by_period,
        "regimes": regimes,
        "implementation_cost": cost_section(summary, strategy_kind),
    }
    report.update((name, part) for name, part in (sections or {}).items() if part is not None)
    return _jsonable(report)


def make_dir(path: Path) -> Path:
    """The report folder, created if needed; a path that cannot be one is a one-line error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(path, exc) from exc
    return path


def write_json(report: dict[str, Any], path: Path) -> None:
    """Save the report; allow_nan=False makes any stray NaN an error instead of bad JSON."""
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise cannot_write(path, exc) from exc


# --------------------------------------------------------------------------- text output

Formatter = Callable[[Any], str]


def _fmt(spec: str, scale: float = 1.0) -> Formatter:
    """Number formatter that shows missing values as '-'."""

    def format_value(value: Any) -> str:
        if value is None:
            return "-"
        return format(value if scale == 1.0 else value * scale, spec)

    return format_value


_PCT = _fmt(".2f", 100.0)
_NUM = _fmt(".2f")
_INT = _fmt("d")
_MONEY = _fmt(",.2f")

SUMMARY_COLUMNS: list[tuple[str, str, Formatter]] = [
    ("total return %", "total_return", _PCT),
    ("CAGR %", "cagr", _PCT),
    ("vol %", "annual_volatility", _PCT),
    ("Sharpe", "sharpe", _NUM),
    ("Sortino", "sortino", _NUM),
    ("max DD %", "max_drawdown", _PCT),
    ("Calmar", "calmar", _NUM),
    ("win rate %", "win_rate", _PCT),
    ("P/L ratio", "profit_loss_ratio", _NUM),
    ("alpha %", "alpha", _PCT),
    ("beta", "beta", _NUM),
    ("trades", "trades", _INT),
    ("costs", "transaction_costs", _MONEY),
    ("turnover", "turnover", _NUM),
]

PERIOD_COLUMNS: list[tuple[str, str, Formatter]] = [
    ("start", "start", str),
    ("end", "end", str),
    ("total return %", "total_return", _PCT),
    ("CAGR %", "cagr", _PCT),
    ("vol %", "annual_volatility", _PCT),
    ("Sharpe", "sharpe", _NUM),
    ("max DD %", "max_drawdown", _PCT),
    ("trades", "trades", _INT),
]

REGIME_COLUMNS: list[tuple[str, str, Formatter]] = [
    ("regime", "regime", str),
    ("days", "days", _INT),
    ("share %", "share", _PCT),
    ("return %", "total_return", _PCT),
    ("annualized %", "annual_return", _PCT),
    ("vol %", "annual_volatility", _PCT),
]


def _cells(row: dict[str, Any], columns: list[tuple[str, str, Formatter]]) -> list[str]:
    """Formatted cells of one row; a 'no data' row shows its note in place of numbers."""
    if "note" in row:
        return [str(row["note"])] + ["-"] * (len(columns) - 1)
    return [fmt(row.get(key)) for _, key, fmt in columns]


def _title(report: dict[str, Any]) -> str:
    return f"Backtest report — data: {report['meta'].get('data_label', 'unknown')}"


def _table(title: str, first: list[str], columns: list[tuple[str, str, Formatter]]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in first:
        table.add_column(header, style="bold")
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    return table


def _summary_table(report: dict[str, Any]) -> Table:
    table = _table("Summary", ["series"], SUMMARY_COLUMNS)
    for row in report["summary"]:
        table.add_row(row["name"], *_cells(row, SUMMARY_COLUMNS))
    return table


def short_span_note(report: dict[str, Any]) -> str | None:
    """A warning under the summary when the run spans less than a year: its annualised
    figures then stretch a few weeks to a year (+2% in three weeks reads as a CAGR over
    40%), which is why the GIPS standards never annualise returns of such periods."""
    row = report["summary"][0] if report["summary"] else {}
    if not _under_a_year(row):
        return None
    start, end = row["start"], row["end"]
    return (
        f"The run spans {row.get('days')} trading days ({start} to {end}), less than a year: "
        "its CAGR, annual volatility, Sharpe, Sortino, Calmar, alpha, turnover and cost a "
        "year extrapolate them to a year and say little (one rebalance in a few days reads "
        "as a turnover of hundreds a year); the total return and the drawdown are what it "
        "measured."
    )


def _under_a_year(row: dict[str, Any]) -> bool:
    """Whether a row (the run, a period) spans less than a year. 50 weeks: a calendar
    year's first and last sessions can fall days inside it (a backtest of 2023 runs from
    January 3 to December 29, 360 days)."""
    if not row.get("start") or not row.get("end"):
        return False
    start, end = dt.date.fromisoformat(row["start"]), dt.date.fromisoformat(row["end"])
    return (end - start).days < 350


def _period_table(report: dict[str, Any]) -> Table | None:
    """Periods grouped by name, one row per series, so series compare within a period."""
    by_series: dict[str, list[dict[str, Any]]] = report.get("periods") or {}
    names = list(dict.fromkeys(r["name"] for rows in by_series.values() for r in rows))
    if not names:
        return None
    short = list(dict.fromkeys(r["name"] for rows in by_series.values() for r in rows
                               if _under_a_year(r)))
    table = _table("Periods (each from the close before its first day)", ["period", "series"],
                   PERIOD_COLUMNS)
    if short:  # the summary's short-span warning, for the periods it does not cover
        table.caption = (f"{', '.join(short)}: under a year, so its CAGR, volatility and ratios "
                         "extrapolate it to a year; its total return and drawdown are what it measured")
    for name in names:
        for series, rows in by_series.items():
            for row in (r for r in rows if r["name"] == name):
                table.add_row(name, series, *_cells(row, PERIOD_COLUMNS))
        table.add_section()
    return table


def _regime_table(report: dict[str, Any]) -> Table | None:
    rows = report.get("regimes") or []
    if not rows:
        return None
    table = Table(
        title="Strategy by regime (return t-1→t counted in the regime of t-1)", title_justify="left"
    )
    for header, _, _ in REGIME_COLUMNS:
        table.add_column(header, justify="left" if header == "regime" else "right")
    for row in rows:
        table.add_row(*[fmt(row.get(key)) for _, key, fmt in REGIME_COLUMNS])
    return table


def render_table(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the report as terminal tables, headed by the data label (loudly if synthetic)."""
    console = console or Console()
    from bot.terminal import literal, stack

    label = str(report["meta"].get("data_label", "unknown"))
    if "SYNTHETIC" in label.upper():
        console.rule(f"[bold white on red] {literal(_title(report))} [/]", style="red")
        console.print("[bold red]SYNTHETIC DATA: these numbers are not real market history.[/]")
    else:
        console.rule(f"[bold]{literal(_title(report))}[/]")

    for part in stack(_summary_table(report), console, keep=1):
        console.print(part)
    note = short_span_note(report)
    if note:
        console.print(note, style="yellow", markup=False)
    tables = (
        (_period_table(report), 2), (_regime_table(report), 1), (cost_table(report), 1),
        (decay_table(report), 1),
    )
    for table, labels in tables:
        for part in stack(table, console, keep=labels) if table is not None else ():
            console.print(part)


def report_to_markdown(report: dict[str, Any]) -> str:
    """The summary as a GitHub markdown table, preceded by a line naming the data."""
    headers = ["series"] + [h for h, _, _ in SUMMARY_COLUMNS]
    lines = [
        f"*Data: {report['meta'].get('data_label', 'unknown')}*",
        "",
        "| " + " | ".join(headers) + " |",
        "| --- |" + " ---: |" * len(SUMMARY_COLUMNS),
    ]
    for row in report["summary"]:
        cells = [str(row["name"]).replace("|", "\\|"), *_cells(row, SUMMARY_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    note = short_span_note(report)
    return "\n".join(lines + ([f"\n*{note}*"] if note else [])) + "\n"


# --------------------------------------------------------------------------- charts


def _regime_spans(
    regimes: pd.Series, dates: pd.DatetimeIndex
) -> list[tuple[pd.Timestamp, pd.Timestamp, str]]:
    """Consecutive days of one regime merged into (start, end, label) spans.

    A span ends where the next one starts, so the shading has no gaps over weekends.
    """
    known = regimes.sort_index()
    known = known[~known.index.duplicated(keep="last")]
    labels = known.reindex(dates, method="ffill")
    values = [None if pd.isna(v) else str(getattr(v, "value", v)) for v in labels]
    spans: list[tuple[pd.Timestamp, pd.Timestamp, str]] = []
    start = 0
    for i in range(1, len(values) + 1):
        if i < len(values) and values[i] == values[start]:
            continue
        if values[start] is not None:
            spans.append((dates[start], dates[min(i, len(values) - 1)], values[start]))
        start = i
    return spans


def _pyplot():
    """pyplot on the non-interactive Agg backend, so charts render on servers and in CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shade_regimes(ax, regimes: pd.Series, dates: pd.DatetimeIndex) -> list:
    """One translucent axvspan per regime span; returns legend handles for the labels seen."""
    from matplotlib.patches import Patch

    seen: dict[str, str] = {}
    for start, end, label in _regime_spans(regimes, dates):
        color = REGIME_COLORS.get(label, _OTHER_REGIME_COLOR)
        ax.axvspan(start, end, color=color, alpha=0.12, linewidth=0)
        seen.setdefault(label, color)
    order = list(REGIME_COLORS)
    labels = sorted(seen, key=lambda x: (order.index(x) if x in order else len(order), x))
    return [Patch(color=seen[label], alpha=0.3, label=label) for label in labels]


def _chart_runs(strategy: RunSeries, benchmarks: list[RunSeries]) -> list[RunSeries]:
    """Benchmarks on the strategy's dates, rebased to its first equity so lines overlay."""
    equity = strategy.equity.dropna().sort_index()
    dates = pd.DatetimeIndex(equity.index)
    runs = [strategy]
    for bench in (_align_to(b, dates) for b in benchmarks):
        if bench.equity.empty or bench.equity.iloc[0] == 0:
            continue
        scale = float(equity.iloc[0]) / float(bench.equity.iloc[0])
        runs.append(RunSeries(bench.name, bench.equity * scale))
    return runs


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise cannot_write(path, exc) from None  # a BotError: it crosses the chart worker's pipe
    finally:
        _pyplot().close(fig)
    return path


def _log_scale(ax) -> None:
    """Log y-axis labelled in plain numbers (1,000 rather than 10^3); minor labels only at
    2x and 5x each power of ten, so a range of several decades stays legible."""
    from matplotlib.ticker import LogLocator, StrMethodFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.yaxis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(StrMethodFormatter("{x:,.0f}"))


def _plot_equity(ax, runs: list[RunSeries], strategy: RunSeries, colors: dict[str, str]) -> None:
    """Benchmarks thin and first, the strategy thick, dark and on top, so it stays visible."""
    for run in runs:
        equity = run.equity.dropna().sort_index()
        ax.plot(equity.index, equity.to_numpy(), linewidth=1.0, alpha=0.9, label=run.name,
                color=colors[run.name])
    equity = strategy.equity.dropna().sort_index()
    ax.plot(equity.index, equity.to_numpy(), linewidth=2.2, color=STRATEGY_COLOR, label=strategy.name,
            zorder=3)
    if all((r.equity.dropna() > 0).all() for r in [*runs, strategy]):
        _log_scale(ax)
    ax.grid(True, alpha=0.3)
    ax.set_ylabel("equity")


def _equity_chart(runs: list[RunSeries], out_dir: Path, title: str) -> Path:
    """Equity on a log scale. A benchmark whose range would squash the strategy's line
    (TQQQ: 168-fold against 7-fold) is drawn in a panel of its own below."""
    from bot.tearsheet.analytics import off_scale

    plt = _pyplot()
    strategy, benchmarks = runs[0], runs[1:]
    off = set(off_scale(strategy.equity.dropna(), {b.name: b.equity.dropna() for b in benchmarks}))
    shared = [b for b in benchmarks if b.name not in off]
    colors = {b.name: _BENCHMARK_COLORS[i % len(_BENCHMARK_COLORS)] for i, b in enumerate(benchmarks)}
    if off:
        fig, (ax, ax_off) = plt.subplots(2, 1, figsize=(11, 8), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1.7]})
    else:
        fig, ax = plt.subplots(figsize=(11, 5.5))
    _plot_equity(ax, shared, strategy, colors)
    handles, _ = ax.get_legend_handles_labels()
    if strategy.regimes is not None:
        dates = pd.DatetimeIndex(strategy.equity.dropna().sort_index().index)
        handles += _shade_regimes(ax, strategy.regimes, dates)
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.set_title(f"Equity (log scale; benchmarks rebased to the strategy's start) — {title}")
    if off:
        _plot_equity(ax_off, [b for b in benchmarks if b.name in off], strategy, colors)
        ax_off.legend(loc="upper left", fontsize=8)
        ax_off.set_title(f"{', '.join(sorted(off))}: own panel, its range would flatten the "
                         "strategy's line above", fontsize=9, loc="left")
    return _save(fig, out_dir / "equity.png")


def _drawdown_chart(runs: list[RunSeries], out_dir: Path, title: str) -> Path:
    """Benchmarks as thin lines, the strategy filled and on top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    for i, run in enumerate(runs[1:]):
        dd = drawdown_series(run.equity.dropna().sort_index()) * 100.0
        ax.plot(dd.index, dd.to_numpy(), linewidth=0.9, alpha=0.85, label=run.name,
                color=_BENCHMARK_COLORS[i % len(_BENCHMARK_COLORS)])
    dd = drawdown_series(runs[0].equity.dropna().sort_index()) * 100.0
    ax.fill_between(dd.index, dd.to_numpy(), 0.0, color=STRATEGY_COLOR, alpha=0.3, linewidth=0, zorder=3)
    ax.plot(dd.index, dd.to_numpy(), linewidth=1.3, color=STRATEGY_COLOR, label=runs[0].name, zorder=4)
    ax.set_title(f"Drawdown — {title}")
    ax.set_ylabel("drawdown %")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, out_dir / "drawdown.png")


def _weights_chart(weights: pd.DataFrame, out_dir: Path, title: str) -> Path:
    """Stacked weights; negative parts (e.g. borrowed cash) stack below zero."""
    plt = _pyplot()
    frame = weights.sort_index().fillna(0.0).astype(float)
    columns = [c for c in frame.columns if c != "CASH"] + [c for c in frame.columns if c == "CASH"]
    frame = frame[columns]
    colors = [plt.get_cmap("tab20")(i % 20) for i in range(len(columns))]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    x = frame.index
    ax.stackplot(x, frame.clip(lower=0.0).to_numpy().T, labels=columns, colors=colors, alpha=0.85)
    negative = frame.clip(upper=0.0)
    if (negative < 0).any().any():
        ax.stackplot(x, negative.to_numpy().T, colors=colors, alpha=0.85)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(f"Strategy weights — {title}")
    ax.set_ylabel("weight")
    ax.legend(loc="upper left", fontsize=8, ncol=min(len(columns), 6))
    ax.grid(True, alpha=0.3)
    return _save(fig, out_dir / "weights.png")


def write_charts(
    strategy: RunSeries, benchmarks: list[RunSeries], out_dir: Path, *, data_label: str
) -> list[Path]:
    """equity.png, drawdown.png and (if weights are given) weights.png in `out_dir`."""
    make_dir(out_dir)
    runs = _chart_runs(strategy, benchmarks)
    paths = [
        _equity_chart(runs, out_dir, data_label),
        _drawdown_chart(runs, out_dir, data_label),
    ]
    if strategy.weights is not None and not strategy.weights.empty:
        paths.append(_weights_chart(strategy.weights, out_dir, data_label))
    return paths
