"""Server-side SVG line charts: the dashboard runs offline, so no charting library in the browser."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

REGIME_COLORS = {"GROWTH": "#2ca02c", "TRANSITION": "#ff9f1c", "UNCERTAINTY": "#d62728"}
MAX_POINTS = 1200  # longer series are thinned to each bucket's extremes (_thin)


@dataclass(frozen=True)
class Line:
    name: str
    points: Sequence[tuple[str, float]]  # (ISO date, value)
    color: str
    width: float = 1.6
    fill_to_zero: bool = False


def _thin(points: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """At most about MAX_POINTS points, keeping each bucket's lowest and highest in time
    order (and the first and last point): every k-th point alone could skip the deepest
    drawdown day, and the chart would then disagree with the max drawdown card."""
    if len(points) <= MAX_POINTS:
        return list(points)
    size = -(-len(points) // (MAX_POINTS // 2))  # two points a bucket at most
    kept = [points[0]]
    for start in range(0, len(points), size):
        kept.extend(_extremes(points[start:start + size]))
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return [point for i, point in enumerate(kept) if i == 0 or point != kept[i - 1]]


def _extremes(bucket: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """A bucket's lowest and highest point, the earlier first (one point if they are one)."""
    low = min(range(len(bucket)), key=lambda i: bucket[i][1])
    high = max(range(len(bucket)), key=lambda i: bucket[i][1])
    return [bucket[i] for i in sorted({low, high})]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (steps of 1, 2, 2.5 or 5 times a power of ten) spanning [low, high],
    about `count` of them: 90,000 / 100,000 / 110,000 rather than 91,234 / 97,873."""
    if not high > low:
        return [low]
    power = 10.0 ** math.floor(math.log10((high - low) / max(count - 1, 1)))
    steps = [m * p for p in (power / 10, power, power * 10) for m in (1.0, 2.0, 2.5, 5.0)]

    def how_many(step: float) -> int:
        return math.floor(high / step + 1e-9) - math.ceil(low / step - 1e-9) + 1

    step = min(steps, key=lambda st: (abs(how_many(st) - count), -st))
    first = math.ceil(low / step - 1e-9)
    return [round((first + i) * step, 12) for i in range(how_many(step))]


_MONTH_STEPS = (1, 2, 3, 6, 12, 24, 60, 120)


def date_ticks(first: dt.date, last: dt.date, count: int = 6) -> list[tuple[dt.date, str]]:
    """Ticks on month or year boundaries (every 1, 2, 3, 6 months or 1, 2, 5, 10 years),
    at most about `count`, labelled '2024' on a year and 'Mar 2024' on a month. A span
    shorter than two months gets weekly ticks on Mondays."""
    months = (last.year - first.year) * 12 + last.month - first.month
    if months < 2:
        day = first + dt.timedelta(days=(7 - first.weekday()) % 7)
        ticks = []
        while day <= last:
            ticks.append((day, day.isoformat()))
            day += dt.timedelta(days=7)
        return ticks or [(first, first.isoformat())]
    step = next((m for m in _MONTH_STEPS if months / m <= count + 1), _MONTH_STEPS[-1])
    ticks = []
    index = first.year * 12 + first.month - 1 + (0 if first.day == 1 else 1)  # next month start
    index = -(-index // step) * step  # a multiple of the step: Jan/Apr/Jul/Oct, or Jan
    while True:
        day = dt.date(index // 12, index % 12 + 1, 1)
        if day > last:
            break
        ticks.append((day, str(day.year) if day.month == 1 else day.strftime("%b %Y")))
        index += step
    return ticks


def line_chart(
    chart_id: str,
    lines: Sequence[Line],
    *,
    title: str,
    y_format: Callable[[float], str],
    regimes: Sequence[tuple[str, str | None]] = (),
    width: int = 1100,
    height: int = 300,
) -> str:
    """An SVG with one polyline per line on a shared date axis, and an optional regime strip."""
    drawn = [(line, _thin(line.points)) for line in lines if line.points]
    if not drawn:
        return f'<svg id="{chart_id}" width="{width}" height="40"><text x="10" y="25">no data yet</text></svg>'
    days = sorted({d for _, pts in drawn for d, _ in pts} | {d for d, _ in regimes})
    first, last = dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
    span = max((last - first).days, 1)
    values = [v for _, pts in drawn for _, v in pts]
    low, high = min(values), max(values)
    if any(line.fill_to_zero for line, _ in drawn):
        high = max(high, 0.0)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    left, right, top = 80, 16, 28
    strip = 14 if regimes else 0
    bottom = 26 + strip
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(day: str) -> float:
        return left + plot_w * (dt.date.fromisoformat(day) - first).days / span

    def y(value: float) -> float:
        return top + plot_h * (high - value) / (high - low)

    parts = [
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for tick in nice_ticks(low + pad, high - pad, 5 if height > 200 else 4):
        ty = y(tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" class="axis" text-anchor="end">'
                     f"{escape(y_format(tick))}</text>")
    for day, label in date_ticks(first, last, max(2, plot_w // 110)):
        tx = x(day.isoformat())
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{top + plot_h}" class="grid"/>')
        parts.append(f'<text x="{tx:.1f}" y="{height - 6}" class="axis" text-anchor="middle">'
                     f"{escape(label)}</text>")
    parts.extend(_regime_strip(regimes, x, top + plot_h + 4, strip - 4, width - right))
    # Legend in the title row, right-aligned, so it never covers the lines.
    legend_x = width - right - sum(24 + 7 * len(line.name) for line, _ in drawn)
    for line, pts in drawn:
        coords = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in pts)
        if line.fill_to_zero:
            zero = y(0.0)
            area = f"{x(pts[0][0]):.1f},{zero:.1f} {coords} {x(pts[-1][0]):.1f},{zero:.1f}"
            parts.append(f'<polygon points="{area}" fill="{line.color}" fill-opacity="0.18" stroke="none"/>')
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{line.color}" '
                     f'stroke-width="{line.width}" data-series="{escape(line.name)}"/>')
        parts.append(f'<rect x="{legend_x}" y="9" width="12" height="3" fill="{line.color}"/>')
        parts.append(f'<text x="{legend_x + 16}" y="15" class="legend">{escape(line.name)}</text>')
        legend_x += 24 + 7 * len(line.name)
    parts.append("</svg>")
    return "".join(parts)


def _regime_strip(
    regimes: Sequence[tuple[str, str | None]], x: Callable[[str], float], y0: float, h: float,
    x_end: float,
) -> list[str]:
    """One coloured rectangle per run of days in the same regime, reaching the next run."""
    parts: list[str] = []
    start = 0
    for i in range(1, len(regimes) + 1):
        if i < len(regimes) and regimes[i][1] == regimes[start][1]:
            continue
        label = regimes[start][1]
        if isinstance(label, str):  # days before the first decision have no regime (NULL/NaN)
            x0 = x(regimes[start][0])
            x1 = x(regimes[i][0]) if i < len(regimes) else x_end
            color = REGIME_COLORS.get(label, "#999999")
            parts.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 1):.1f}" height="{h}" '
                         f'fill="{color}" data-regime="{escape(label)}"><title>{escape(label)} from '
                         f"{regimes[start][0]}</title></rect>")
        start = i
    return parts
