"""A sweep's results for people: the ranked table, the walk-forward table, the heatmap
of a two-parameter grid, the stitched out-of-sample chart, and the files they go to.

Numbers are formatted by the backtest report's own column formatters, so a sweep's
Sharpe or CAGR reads exactly like `bot backtest`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from bot.report import SUMMARY_COLUMNS
from bot.sweep.grid import Axis, describe, format_value

_COLUMNS = {key: (header, fmt) for header, key, fmt in SUMMARY_COLUMNS}
TABLE_METRICS = ("sharpe", "cagr", "max_drawdown", "turnover", "trades")
_PERCENT = {key for header, key, _ in SUMMARY_COLUMNS if header.endswith("%")}


def metric_header(metric: str) -> str:
    return _COLUMNS[metric][0]


def format_metric(metric: str, value: Any) -> str:
    return _COLUMNS[metric][1](value)


def _money(value: float | None) -> str:
    return _COLUMNS["transaction_costs"][1](value)


# --------------------------------------------------------------------------- tables


def _banner(console: Console, title: str, data_label: str) -> None:
    from bot.terminal import literal

    heading = literal(f"{title} — data: {data_label}")  # the label holds a path
    if "SYNTHETIC" in data_label.upper():
        console.rule(f"[bold white on red] {heading} [/]", style="red")
        console.print("[bold red]SYNTHETIC DATA: these numbers are not real market history.[/]")
    else:
        console.rule(f"[bold]{heading}[/]")


def render_ranking(
    rows: Sequence[dict[str, Any]],
    axes: Sequence[Axis],
    metric: str,
    console: Console,
    *,
    title: str,
    data_label: str,
) -> None:
    """The ranked table: best first by `metric`, then unscored and failed combinations."""
    _banner(console, title, data_label)
    metrics = ([metric] if metric not in TABLE_METRICS else []) + list(TABLE_METRICS)
    table = Table(title=f"Ranked by {metric_header(metric)}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("run", justify="right")
    for axis in axes:
        table.add_column(axis.key, justify="right", style="bold")
    for key in metrics:
        table.add_column(metric_header(key), justify="right")
    table.add_column("final equity", justify="right")
    failed = any(row["error"] for row in rows)
    if failed:
        table.add_column("error", overflow="fold")
    for row in rows:
        summary = row["summary"] or {}
        cells = [
            "-" if row["rank"] is None else str(row["rank"]),
            str(row["run_id"]),
            *(format_value(row["params"][axis.key]) for axis in axes),
            *(format_metric(key, summary.get(key)) for key in metrics),
            _money(row["final_equity"]),
        ]
        if failed:
            cells.append(row["error"] or "")
        table.add_row(*cells, style="red" if row["error"] else None)
    console.print(table)


def render_walk_forward(result: dict[str, Any], console: Console) -> None:
    """Which combination each window picked, and the stitched out-of-sample summary."""
    metric = result["metric"]
    table = Table(
        title=f"Walk-forward {result['spec']}: best {metric_header(metric)} on each training "
        "window, held through the test window after it",
        title_justify="left",
    )
    for header in ("train", "test", "picked", f"train {metric_header(metric)}",
                   "test return % (net of switch)", "switch cost"):
        table.add_column(header, justify="left" if header in ("train", "test", "picked") else "right")
    for w in result["windows"]:
        picked = "no combination scored" if w["run_id"] is None else (
            f"run {w['run_id']}: {describe(w['params'])}"
        )
        table.add_row(
            f"{w['train'][0]}..{w['train'][1]}",
            f"{w['test'][0]}..{w['test'][1]}",
            picked,
            format_metric(metric, w["train_score"]),
            format_metric("total_return", w["test_return"]),
            _money(w.get("switch_cost", 0.0)),
        )
    console.print(table)
    for w in result["windows"]:
        if w["run_id"] is not None and w.get("train_trades") == 0:
            console.print(
                f"warning: walk-forward window {w['train'][0]}..{w['train'][1]}: its pick, run "
                f"{w['run_id']} ({describe(w['params'])}), made no trades in that training "
                f"window: its {metric_header(metric)} there is an idle account's, not a "
                "strategy's", markup=False)
    failed = result.get("failed_combinations", 0)
    if failed:
        candidates = len(result["windows"][0]["scores"]) - failed
        console.print(f"warning: the walk-forward picked among the {candidates} combinations "
                      f"that ran: {failed} failed and were no candidates in any window",
                      markup=False)
    summary = result["summary"]
    line = ", ".join(
        f"{metric_header(key)} {format_metric(key, summary.get(key))}"
        for key in dict.fromkeys([metric, *TABLE_METRICS])
    )
    windows = result["windows"]
    switches = sum(a["position"] != b["position"]
                   for a, b in zip(windows[:-1], windows[1:], strict=True))
    console.print(
        f"out of sample {summary['start']}..{summary['end']}: {line}, "
        f"final equity {_money(result['final_equity'])}, after {switches} switch(es) of pick "
        f"costing {_money(result.get('switch_costs', 0.0))}"
    )


# --------------------------------------------------------------------------- files


def ranking_frame(rows: Sequence[dict[str, Any]], axes: Sequence[Axis]) -> pd.DataFrame:
    """One line per combination with its values and every summary figure, for CSV."""
    records = []
    for row in rows:
        record = {"rank": row["rank"], "run_id": row["run_id"], "position": row["position"]}
        record |= {axis.key: format_value(row["params"][axis.key]) for axis in axes}
        record |= {k: v for k, v in (row["summary"] or {}).items() if k != "name"}
        record |= {"final_equity": row["final_equity"], "error": row["error"]}
        records.append(record)
    return pd.DataFrame.from_records(records)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_heatmap(
    rows: Sequence[dict[str, Any]], axes: Sequence[Axis], metric: str, path: Path, title: str
) -> Path:
    """`metric` over a two-parameter grid: rows are the first --grid's values, columns the
    second's; failed or unscored cells are grey, the best is outlined."""
    first, second = axes
    grid, failed = heatmap_grid(rows, axes, metric)
    plt = _pyplot()
    fig, ax = plt.subplots(
        figsize=(max(5.0, 1.1 * len(second.values) + 3), max(3.5, 0.6 * len(first.values) + 2))
    )
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    fig.colorbar(image, ax=ax, label=metric_header(metric))
    ax.set_xticks(range(len(second.values)), [format_value(v) for v in second.values])
    ax.set_yticks(range(len(first.values)), [format_value(v) for v in first.values])
    ax.set_xlabel(second.key)
    ax.set_ylabel(first.key)
    for (i, j), value in np.ndenumerate(grid):
        text = "failed" if failed[i, j] else _cell_text(metric, value)
        ax.text(j, i, text, ha="center", va="center", fontsize=8)
    if np.isfinite(grid).any():
        i, j = np.unravel_index(np.nanargmax(grid), grid.shape)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2.5))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def heatmap_grid(
    rows: Sequence[dict[str, Any]], axes: Sequence[Axis], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The heatmap's values (NaN where unscored) in the units of its colour bar's label:
    percent for a metric whose header says %, as its cells print it; and which failed."""
    first, second = axes
    grid = np.full((len(first.values), len(second.values)), np.nan)
    failed = np.zeros(grid.shape, dtype=bool)
    for row in rows:
        i, j = divmod(row["position"], len(second.values))
        value = (row["summary"] or {}).get(metric)
        failed[i, j] = row["error"] is not None
        if value is not None:
            grid[i, j] = value
    return (grid * 100.0 if metric in _PERCENT else grid), failed


def _cell_text(metric: str, shown: float) -> str:
    """A cell's text from its value in the colour bar's units."""
    if math.isnan(shown):
        return format_metric(metric, None)
    return format_metric(metric, shown / 100.0 if metric in _PERCENT else shown)


def write_walk_forward_chart(curve: pd.Series, windows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """The stitched out-of-sample equity (log scale), test windows shaded in turn and
    labelled with the run they held."""
    from matplotlib.ticker import StrMethodFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(curve.index, curve.to_numpy(), linewidth=1.4, label=curve.name)
    if (curve > 0).all() and curve.max() > 10 * curve.min():
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.yaxis.set_minor_formatter(StrMethodFormatter(""))
    for k, w in enumerate(windows):
        start, end = pd.Timestamp(w["test"][0]), pd.Timestamp(w["test"][1])
        ax.axvspan(start, end, color="tab:blue" if k % 2 else "tab:orange", alpha=0.08, linewidth=0)
        label = "cash" if w["run_id"] is None else f"run {w['run_id']}"
        ax.annotate(label, (start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -3),
                    textcoords="offset points", fontsize=7, va="top", rotation=90)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("equity")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
