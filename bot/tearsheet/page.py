"""The tearsheet: one self-contained HTML page per report (plotly, its JS inlined).

It opens offline from a file or an e-mail attachment, with no CDN: plotly.js is written
into the page once, every chart is interactive (hover, zoom, series on and off). The
numbers in its tables are the report's own (report.json), so page, terminal and JSON
agree; the charts are drawn from the same equity curves the report was built from.

quantstats was tried first: it runs on this pandas, but takes one benchmark only, has
no way to show the regimes, and mislabels its yearly bars; plotly draws what we need.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bot.errors import cannot_write
from bot.metrics import drawdown_series
from bot.report import PERIOD_COLUMNS, REGIME_COLUMNS, SUMMARY_COLUMNS, RunSeries, _regime_spans
from bot.tearsheet import analytics

STRATEGY_COLOR = "#111827"
BENCHMARK_COLORS = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#a16207")
REGIME_COLORS = {"GROWTH": "#22c55e", "TRANSITION": "#f59e0b", "UNCERTAINTY": "#ef4444"}
ROLLING_SHARPE_DAYS = 126  # about six months
ROLLING_VOL_DAYS = 63  # about three months
WORST_DRAWDOWNS = 10
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d2b3a;color:#fff;padding:16px 24px} header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;color:#c9d3de}
.synthetic{background:#b3261e;color:#fff;padding:8px 24px;font-weight:600}
main{padding:16px 24px;max-width:1240px;margin:0 auto}
section{background:#fff;border-radius:8px;padding:12px 16px;margin-bottom:16px;box-shadow:0 1px 2px #0002}
section h2{font-size:16px;margin:0 0 8px} .note{font-size:12px;color:#5b6775;margin-top:6px}
.scroll{overflow-x:auto} table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{padding:4px 6px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
th:first-child,td:first-child,td.text,th.text{text-align:left} td:first-child{white-space:normal} th{font-weight:600;color:#374151}
tr.strategy td{font-weight:700} .grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:800px){.grid2{grid-template-columns:1fr} main{padding:8px}}
"""


# --------------------------------------------------------------------------- helpers


def _curve(run: RunSeries) -> pd.Series:
    equity = run.equity.astype(float).dropna().sort_index()
    return equity[~equity.index.duplicated(keep="last")]


def _rebased(strategy: RunSeries, benchmarks: list[RunSeries]) -> dict[str, pd.Series]:
    """Every curve on the strategy's dates, as growth of 1 from the strategy's first day."""
    base = _curve(strategy)
    out = {strategy.name: base / base.iloc[0]}
    for bench in benchmarks:
        curve = _curve(bench)
        aligned = (curve.reindex(curve.index.union(base.index)).ffill(limit_area="inside")
                   .reindex(base.index).dropna())
        if not aligned.empty and aligned.iloc[0] > 0:
            out[bench.name] = aligned / aligned.iloc[0]
    return out


def _colors(names: list[str]) -> dict[str, str]:
    return {name: (STRATEGY_COLOR if i == 0 else BENCHMARK_COLORS[(i - 1) % len(BENCHMARK_COLORS)])
            for i, name in enumerate(names)}


def _line(go, name: str, series: pd.Series, color: str, *, strategy: bool, legend: bool = True,
          scale: float = 1.0, fmt: str = ".3f", group: str | None = None):
    return go.Scatter(
        x=series.index, y=series.to_numpy() * scale, name=name, mode="lines",
        line={"color": color, "width": 2.6 if strategy else 1.3},
        opacity=1.0 if strategy else 0.85, showlegend=legend, legendgroup=group or name,
        hovertemplate=f"%{{x|%Y-%m-%d}}  %{{y:{fmt}}}<extra>{escape(name)}</extra>",
    )


def _layout(fig, height: int) -> None:
    fig.update_layout(
        height=height, template="plotly_white", margin={"l": 60, "r": 20, "t": 40, "b": 40},
        hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0.0, "xanchor": "left"},
    )


def log_ticks(low: float, high: float) -> list[float]:
    """The 1-2-5 steps (0.5, 1, 2, 5, 10, 20, ...) inside [low, high]: a log axis labelled
    in round numbers, neither a lone '10' nor a label on every minor line. `low` must be
    above 0 (a log axis has no 0)."""
    if not (0.0 < low <= high < np.inf):
        raise ValueError(f"log ticks need 0 < low <= high, got {low!r}, {high!r}")
    ticks, decade = [], 10.0 ** np.floor(np.log10(low))
    while decade <= high * 10:
        ticks += [m * decade for m in (1.0, 2.0, 5.0)]
        decade *= 10.0
    return [t for t in ticks if low <= t <= high]


def _log_axis(fig, curves: list[pd.Series], row: int) -> None:
    """A log axis in round steps; a linear one if a curve reaches 0 (a run that lost
    everything), which a log axis cannot show."""
    low = min(float(c.min()) for c in curves)
    high = max(float(c.max()) for c in curves)
    if not low > 0:
        fig.update_yaxes(title_text="growth of 1", row=row, col=1)
        return
    ticks = log_ticks(low, high)
    fig.update_yaxes(type="log", title_text="growth of 1 (log)", row=row, col=1)
    if len(ticks) >= 2:  # a narrow range (a short run) keeps plotly's own finer ticks
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], row=row, col=1)


def _panel_title(fig, row: int, text: str) -> None:
    fig.add_annotation(text=escape(text), xref="x domain", yref="y domain", x=0.005, y=0.995,
                       xanchor="left", yanchor="top", showarrow=False, font={"size": 11},
                       bgcolor="rgba(255,255,255,0.8)", row=row, col=1)


def _regime_strip(go, regimes: pd.Series, dates: pd.DatetimeIndex):
    """The regime of every day as a one-row heatmap (its colour, and its name on hover)."""
    known = regimes.sort_index()
    known = known[~known.index.duplicated(keep="last")]
    labels = [None if pd.isna(v) else str(getattr(v, "value", v))
              for v in known.reindex(dates, method="ffill")]
    names = list(REGIME_COLORS)
    codes = [names.index(v) if v in names else None for v in labels]
    n = len(names) - 1
    scale = [[bound, REGIME_COLORS[name]] for i, name in enumerate(names) for bound in (i / (n + 1), (i + 1) / (n + 1))]
    return go.Heatmap(
        x=dates, y=[0], z=[codes], text=[[v or "no regime yet" for v in labels]], zmin=-0.5,
        zmax=n + 0.5, colorscale=scale, showscale=False, hovertemplate="%{x|%Y-%m-%d} %{text}<extra></extra>",
    )


def _regime_shapes(regimes: pd.Series | None, dates: pd.DatetimeIndex, *, row: int,
                   opacity: float) -> tuple[list[dict], set[str]]:
    """One rectangle per run of days in a regime, over the full height of panel `row`.
    Built as plain dicts and set at once: plotly's add_vrect checks the whole figure on
    every call, which took 8 s for the ~150 spans of a 15-year run."""
    shapes: list[dict] = []
    seen: set[str] = set()
    if regimes is None:
        return shapes, seen
    axis = "" if row == 1 else str(row)
    for start, end, label in _regime_spans(regimes, dates):
        shapes.append({
            "type": "rect", "xref": f"x{axis}", "yref": f"y{axis} domain", "x0": start, "x1": end,
            "y0": 0, "y1": 1, "fillcolor": REGIME_COLORS.get(label, "#9ca3af"), "opacity": opacity,
            "line": {"width": 0}, "layer": "below",
        })
        seen.add(label)
    return shapes, seen


# --------------------------------------------------------------------------- figures


def equity_figure(strategy: RunSeries, benchmarks: list[RunSeries]):
    """Growth of 1 on a log axis, strategy drawn last and thickest; benchmarks whose range
    would squash it (TQQQ) get a panel of their own; the regime strip underneath."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    curves = _rebased(strategy, benchmarks)
    colors = _colors(list(curves))
    name = strategy.name
    off = analytics.off_scale(curves[name], {k: v for k, v in curves.items() if k != name})
    rows = [0.70, 0.06] if not off else [0.56, 0.05, 0.39]
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, row_heights=rows,
                        vertical_spacing=0.035)
    for bench, curve in curves.items():
        if bench != name and bench not in off:
            fig.add_trace(_line(go, bench, curve, colors[bench], strategy=False), row=1, col=1)
    fig.add_trace(_line(go, name, curves[name], colors[name], strategy=True), row=1, col=1)
    dates = pd.DatetimeIndex(curves[name].index)
    shading, seen = _regime_shapes(strategy.regimes, dates, row=1, opacity=0.07)
    fig.update_layout(shapes=shading)
    if strategy.regimes is not None:
        fig.add_trace(_regime_strip(go, strategy.regimes, dates), row=2, col=1)
    for label in [r for r in REGIME_COLORS if r in seen]:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker={"symbol": "square", "size": 11, "color": REGIME_COLORS[label]}),
                      row=2, col=1)
    if off:
        for bench in off:
            fig.add_trace(_line(go, bench, curves[bench], colors[bench], strategy=False), row=3, col=1)
        fig.add_trace(_line(go, name, curves[name], colors[name], strategy=True, legend=False),
                      row=3, col=1)
        _log_axis(fig, [curves[b] for b in off] + [curves[name]], 3)
        _panel_title(fig, 3, f"{', '.join(off)}: on its own scale (it would flatten the "
                             "strategy's line above); the strategy again for reference")
    _log_axis(fig, [c for b, c in curves.items() if b not in off], 1)
    fig.update_yaxes(visible=False, fixedrange=True, range=[0, 1], row=2, col=1)
    _layout(fig, 720 if off else 560)
    return fig, off


def drawdown_figure(strategy: RunSeries, benchmarks: list[RunSeries]):
    import plotly.graph_objects as go

    curves = _rebased(strategy, benchmarks)
    colors = _colors(list(curves))
    fig = go.Figure()
    for name, curve in curves.items():
        dd = drawdown_series(curve) * 100.0
        if name == strategy.name:
            continue
        fig.add_trace(_line(go, name, dd, colors[name], strategy=False, fmt=".1f"))
    dd = drawdown_series(curves[strategy.name]) * 100.0
    fig.add_trace(go.Scatter(
        x=dd.index, y=dd.to_numpy(), name=strategy.name, mode="lines", fill="tozeroy",
        line={"color": STRATEGY_COLOR, "width": 1.8}, fillcolor="rgba(17,24,39,0.28)",
        hovertemplate=f"%{{x|%Y-%m-%d}}  %{{y:.1f}}%<extra>{escape(strategy.name)}</extra>",
    ))
    fig.update_yaxes(title_text="below the peak, %", ticksuffix="%")
    _layout(fig, 380)
    return fig


def monthly_figure(strategy: RunSeries):
    import plotly.graph_objects as go

    table = analytics.monthly_returns(_curve(strategy)) * 100.0
    values = table.to_numpy()
    finite = np.abs(values[np.isfinite(values)])
    limit = float(np.percentile(finite, 95)) if finite.size else 1.0
    text = [[("" if not np.isfinite(v) else f"{v:.1f}") for v in row] for row in values]
    fig = go.Figure(go.Heatmap(
        z=values, x=list(table.columns), y=[str(y) for y in table.index], text=text,
        texttemplate="%{text}", textfont={"size": 11}, colorscale="RdYlGn", zmid=0,
        zmin=-limit, zmax=limit, colorbar={"title": "%", "thickness": 12}, xgap=2, ygap=2,
        hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(side="top")
    _layout(fig, max(260, 30 * len(table) + 110))
    fig.update_layout(hovermode="closest")
    return fig


def yearly_figure(strategy: RunSeries, benchmarks: list[RunSeries]):
    import plotly.graph_objects as go

    curves = _rebased(strategy, benchmarks)
    colors = _colors(list(curves))
    fig = go.Figure()
    for name, curve in curves.items():
        years = analytics.yearly_returns(curve) * 100.0
        fig.add_trace(go.Bar(x=[str(y) for y in years.index], y=years.to_numpy(), name=name,
                             marker_color=colors[name],
                             hovertemplate=f"%{{x}}: %{{y:.1f}}%<extra>{escape(name)}</extra>"))
    fig.update_yaxes(ticksuffix="%")
    _layout(fig, 380)
    fig.update_layout(barmode="group", hovermode="closest")
    return fig


def rolling_figure(strategy: RunSeries, benchmarks: list[RunSeries], risk_free: pd.Series | None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    curves = _rebased(strategy, benchmarks)
    colors = _colors(list(curves))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12)
    order = [n for n in curves if n != strategy.name] + [strategy.name]
    vols = {}
    for name in order:
        main = name == strategy.name
        sharpe = analytics.rolling_sharpe(curves[name], ROLLING_SHARPE_DAYS, risk_free)
        vols[name] = analytics.rolling_volatility(curves[name], ROLLING_VOL_DAYS) * 100.0
        fig.add_trace(_line(go, name, sharpe, colors[name], strategy=main, fmt=".2f"), row=1, col=1)
        fig.add_trace(_line(go, name, vols[name], colors[name], strategy=main, legend=False, fmt=".1f"),
                      row=2, col=1)
    fig.add_hline(y=0.0, line_width=1, line_color="#6b7280", row=1, col=1)
    # The strategy's own scale: a 3x ETF's 170% in March 2020 would flatten everything else.
    top = [v.max() for n, v in vols.items() if n == strategy.name or n == order[0]]
    ceiling = 1.4 * max([t for t in top if np.isfinite(t)] or [100.0])
    clipped = [n for n, v in vols.items() if v.max() > ceiling]
    fig.update_yaxes(ticksuffix="%", range=[0, ceiling], row=2, col=1)
    _panel_title(fig, 1, f"Sharpe ratio over the last {ROLLING_SHARPE_DAYS} trading days")
    _panel_title(fig, 2, f"Annualized volatility over the last {ROLLING_VOL_DAYS} trading days"
                 + (f" (axis cut at {ceiling:.0f}%; above it: {', '.join(clipped)})" if clipped else ""))
    _layout(fig, 620)
    return fig


def distribution_figure(strategy: RunSeries, benchmarks: list[RunSeries]):
    """Daily returns of the strategy and the first benchmark (SPY), as densities, with
    each one's 5% quantile (one-day historical VaR) marked."""
    import plotly.graph_objects as go

    curves = _rebased(strategy, benchmarks)
    colors = _colors(list(curves))
    shown = [strategy.name] + [n for n in curves if n != strategy.name][:1]
    returns = {n: curves[n].pct_change().dropna() * 100.0 for n in shown}
    everything = pd.concat(list(returns.values()))
    low, high = np.percentile(everything, [0.2, 99.8]) if len(everything) else (-1.0, 1.0)
    fig = go.Figure()
    for name in reversed(shown):
        r = returns[name]
        fig.add_trace(go.Histogram(
            x=r.clip(low, high), name=name, histnorm="probability density", opacity=0.55,
            marker_color=colors[name], xbins={"start": low, "end": high, "size": (high - low) / 90},
            hovertemplate=f"%{{x:.2f}}%<extra>{escape(name)}</extra>"))
        var = float(np.percentile(r, 5)) if len(r) else 0.0
        fig.add_vline(x=var, line_dash="dash", line_color=colors[name], line_width=1.4,
                      annotation_text=f"5%: {var:.2f}%", annotation_font_color=colors[name],
                      annotation_position="top left" if name == strategy.name else "top right")
    fig.update_xaxes(ticksuffix="%", title_text="daily return (tails clipped to the 0.2-99.8% range)")
    _layout(fig, 380)
    fig.update_layout(barmode="overlay", hovermode="closest")
    return fig


# --------------------------------------------------------------------------- tables


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None,
           text_columns: int = 1) -> str:
    """A plain table; the first `text_columns` columns are left-aligned labels."""

    def cls(j: int) -> str:
        return ' class="text"' if j < text_columns else ""

    head = "".join(f"<th{cls(j)}>{escape(h)}</th>" for j, h in enumerate(headers))
    body = "".join(
        f'<tr class="{escape((classes or [""] * len(rows))[i])}">'
        + "".join(f"<td{cls(j)}>{escape(c)}</td>" for j, c in enumerate(row)) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cells(row: dict[str, Any], columns) -> list[str]:
    if "note" in row:
        return [str(row["note"])] + [""] * (len(columns) - 1)
    return [fmt(row.get(key)) for _, key, fmt in columns]


def summary_table(report: dict[str, Any]) -> str:
    rows = [[str(r["name"]), *_cells(r, SUMMARY_COLUMNS)] for r in report["summary"]]
    classes = ["strategy"] + [""] * (len(rows) - 1)
    return _table(["series", *[h for h, _, _ in SUMMARY_COLUMNS]], rows, classes)


def periods_table(report: dict[str, Any]) -> str:
    rows = []
    for series, period_rows in (report.get("periods") or {}).items():
        for row in period_rows:
            rows.append([str(row["name"]), series, *_cells(row, PERIOD_COLUMNS)])
    order = list(dict.fromkeys(r[0] for r in rows))
    rows.sort(key=lambda r: order.index(r[0]))  # stable: series keep their order per period
    headers = ["period", "series", *[h for h, _, _ in PERIOD_COLUMNS]]
    return _table(headers, rows, text_columns=2) if rows else ""


def regimes_table(report: dict[str, Any]) -> str:
    rows = [[fmt(r.get(key)) for _, key, fmt in REGIME_COLUMNS] for r in report.get("regimes") or []]
    return _table([h for h, _, _ in REGIME_COLUMNS], rows) if rows else ""


def drawdowns_table(strategy: RunSeries) -> str:
    periods = analytics.drawdown_periods(_curve(strategy), WORST_DRAWDOWNS)
    rows = [[str(i), p["peak"], p["trough"], p["recovery"] or "not yet", f"{p['depth'] * 100:.2f}",
             str(p["days_down"]), "-" if p["days_to_recover"] is None else str(p["days_to_recover"])]
            for i, p in enumerate(periods, start=1)]
    headers = ["#", "peak", "trough", "recovered", "depth %", "days down", "days to recover"]
    return _table(headers, rows) if rows else "<p>never below a previous peak</p>"


# --------------------------------------------------------------------------- page


def _figure_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)


def _section(title: str, inner: str, note: str = "") -> str:
    return (f"<section><h2>{escape(title)}</h2>{inner}"
            + (f'<div class="note">{escape(note)}</div>' if note else "") + "</section>")


def render(
    report: dict[str, Any],
    strategy: RunSeries,
    benchmarks: list[RunSeries],
    *,
    risk_free: pd.Series | None = None,
) -> str:
    """The whole page as one HTML string."""
    from plotly.offline import get_plotlyjs

    meta = report["meta"]
    label = str(meta.get("data_label", "unknown"))
    curve = _curve(strategy)
    span = f"{curve.index[0]:%Y-%m-%d} to {curve.index[-1]:%Y-%m-%d}"
    title = f"{strategy.name} — tearsheet"
    run = f"run {meta['run_id']} · " if meta.get("run_id") is not None else ""
    subtitle = f"{run}{span} · data {label} · generated {meta.get('generated_at', '')}"
    banner = ('<div class="synthetic">SYNTHETIC DATA: these numbers are not real market history.</div>'
              if "SYNTHETIC" in label.upper() else "")
    equity, off = equity_figure(strategy, benchmarks)
    benchmark_names = ", ".join(b.name for b in benchmarks) or "none"
    notes = " ".join(str(n) for n in meta.get("notes") or [])
    parts = [
        _section("Summary", summary_table(report), notes),
        _section("Equity", _figure_html(equity),
                 f"Benchmarks: {benchmark_names}. Log scale; the strategy is the thick dark line."
                 + (f" {', '.join(off)} rose too far for the shared scale and has its own panel."
                    if off else "")),
        _section("Drawdown", _figure_html(drawdown_figure(strategy, benchmarks))),
        f'<div class="grid2">{_section("Worst drawdowns", drawdowns_table(strategy))}'
        + (_section("By regime", regimes_table(report),
                    "return t-1 to t counted in the regime of t-1") if report.get("regimes") else "")
        + "</div>",
        _section("Monthly returns", _figure_html(monthly_figure(strategy))),
        _section("Yearly returns", _figure_html(yearly_figure(strategy, benchmarks))),
        _section("Rolling Sharpe and volatility", _figure_html(rolling_figure(strategy, benchmarks, risk_free)),
                 "Sharpe on daily returns over the risk-free rate" + ("" if risk_free is not None
                                                                     else " (none known: 0% assumed)")),
        _section("Return distribution", _figure_html(distribution_figure(strategy, benchmarks))),
    ]
    periods = periods_table(report)
    if periods:
        parts.append(_section("Periods", periods))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>{banner}"
        f"<main>{''.join(parts)}</main></body></html>"
    )


def write_tearsheet(
    report: dict[str, Any],
    strategy: RunSeries,
    benchmarks: list[RunSeries],
    out_dir: Path,
    *,
    risk_free: pd.Series | None = None,
) -> list[Path]:
    """tearsheet.html in `out_dir` (a list, like write_charts, for the same printing)."""
    path = out_dir / "tearsheet.html"
    page = render(report, strategy, benchmarks, risk_free=risk_free)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise cannot_write(path, exc) from None  # a BotError: it crosses the worker's pipe
    return [path]
