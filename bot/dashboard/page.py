"""The dashboard's one HTML page, self-contained (inline CSS and SVG, no script or CDN).

Every number carries a stable id or data-value attribute holding the unrounded value,
so a test (or a scraper) can compare the page with the database exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from bot.dashboard.svg import REGIME_COLORS, Line, line_chart

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d2b3a;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;font-size:13px;color:#c9d3de}
.synthetic{background:#b3261e;color:#fff;padding:8px 24px;font-weight:600}
main{padding:16px 24px;max-width:1180px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:#fff;border-radius:8px;padding:10px 16px;box-shadow:0 1px 2px #0002;min-width:140px}
.card .label{font-size:12px;color:#5b6775} .card .value{font-size:22px;font-weight:600}
section{background:#fff;border-radius:8px;padding:12px 16px;margin-bottom:16px;box-shadow:0 1px 2px #0002}
section h2{font-size:15px;margin:0 0 8px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #e4e7eb;text-align:left}
td:first-child{white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{max-width:100%;height:auto} .chart-title{font-size:13px;font-weight:600}
.axis{font-size:11px;fill:#5b6775} .legend{font-size:12px} .grid{stroke:#e4e7eb}
.neg{color:#b3261e} .pos{color:#1a7f37} .note{font-size:12px;color:#5b6775}
.regime{padding:1px 6px;border-radius:4px;color:#fff;font-size:12px}
footer{font-size:12px;color:#5b6775;padding:0 24px 24px}
"""


def _money(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.2f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.2f}%"


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{float(value):,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{float(value):,.0f}"


def _time(iso: str) -> str:
    """'2016-06-27T13:30:00+00:00' as '2016-06-27 13:30' (every time on the page is UTC)."""
    return escape(iso[:16].replace("T", " "))


def _attr(value: Any) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _card(element_id: str, label: str, shown: str, value: Any, css: str = "") -> str:
    return (f'<div class="card"><div class="label">{escape(label)}</div>'
            f'<div class="value {css}" id="{element_id}" data-value="{_attr(value)}">'
            f"{escape(shown)}</div></div>")


def _sign(value: float | None) -> str:
    return "" if value is None else "neg" if value < 0 else "pos"


def _regime_badge(regime: str | None) -> str:
    if not regime:
        return "-"
    color = REGIME_COLORS.get(regime, "#777")
    return f'<span class="regime" style="background:{color}">{escape(regime)}</span>'


def _table(table_id: str, headers: Sequence[tuple[str, bool]], rows: Iterable[str], empty: str) -> str:
    head = "".join(f'<th class="{"num" if num else ""}">{escape(h)}</th>' for h, num in headers)
    body = "".join(rows) or f'<tr class="empty"><td colspan="{len(headers)}">{escape(empty)}</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _td(shown: str, value: Any = None, *, num: bool = False, css: str = "") -> str:
    attr = f' data-value="{_attr(value)}"' if value is not None else ""
    classes = " ".join(c for c in ("num" if num else "", css) if c)
    return f'<td class="{classes}"{attr}>{shown}</td>'


def _charts(data: dict[str, Any]) -> str:
    eq, bench = data["equity"], data["benchmark"] or {}
    regimes = [(d, r) for d, r in eq["regime_days"]]
    lines = [Line("strategy", [tuple(p) for p in eq["curve"]], "#1f5fbf", 1.8)]
    dd_lines = [Line("strategy", [tuple(p) for p in eq["drawdown_curve"]], "#b3261e", 1.4, True)]
    if bench.get("curve"):
        lines.append(Line("SPY (rebased)", [tuple(p) for p in bench["curve"]], "#7f7f7f", 1.2))
        dd_lines.append(Line("SPY", [tuple(p) for p in bench["drawdown_curve"]], "#7f7f7f", 1.0))
    note = bench.get("note")
    equity_chart = line_chart("equity-chart", lines, title="Equity vs SPY (SPY rebased to the run's start)",
                              y_format=lambda v: f"{v:,.0f}", regimes=regimes)
    dd_chart = line_chart("drawdown-chart", dd_lines, title="Drawdown from peak",
                          y_format=lambda v: f"{v * 100:.0f}%", height=220)
    legend = " ".join(f"{_regime_badge(r)}" for r in REGIME_COLORS)
    return (f"<section>{equity_chart}<div class=\"note\">regime strip: {legend}"
            + (f' — <span id="benchmark-note">{escape(note)}</span>' if note else "")
            + f"</div></section><section>{dd_chart}</section>")


def _weights(data: dict[str, Any]) -> str:
    w = data["weights"]
    rows = []
    for r in w["rows"]:
        diff = None if r["current"] is None or r["target"] is None else r["current"] - r["target"]
        rows.append(f'<tr data-symbol="{_attr(r["symbol"])}"><td>{escape(r["symbol"])}</td>'
                    + _td(_pct(r["current"]), r["current"], num=True, css="current")
                    + _td(_pct(r["target"]), r["target"], num=True, css="target")
                    + _td(_pct(diff), diff, num=True, css="diff") + "</tr>")
    table = _table("weights", [("symbol", False), ("current", True), ("target", True), ("diff", True)],
                   rows, "no positions yet")
    as_of = f'current: snapshot of {w["as_of"] or "-"}; target: decision of {w["targets_day"] or "-"}'
    return f'<section><h2>Weights: current vs target</h2>{table}<div class="note">{escape(as_of)}</div></section>'


def _regimes(data: dict[str, Any]) -> str:
    rows = [
        f'<tr data-day="{_attr(r["day"])}"><td>{escape(r["day"])}</td><td>{_regime_badge(r["regime"])}</td>'
        + _td(_num(r["vix"], 2), r["vix"], num=True) + _td(_num(r["spread"], 2), r["spread"], num=True)
        + _td(_num(r["uncertainty"], 1), r["uncertainty"], num=True)
        + f'<td>{escape(r["warning"] or "")}</td></tr>'
        for r in reversed(data["regimes"])
    ]
    headers = [("day", False), ("regime", False), ("VIX", True), ("10y-2y", True), ("EPU", True),
               ("warning", False)]
    return f'<section><h2>Regime history (latest first)</h2>{_table("regimes", headers, rows, "no decisions yet")}</section>'


def _orders(data: dict[str, Any]) -> str:
    rows = [
        f'<tr data-client-order-id="{_attr(o["client_order_id"])}"><td data-value="{_attr(o["submitted_at"])}">{_time(o["submitted_at"])}</td>'
        f'<td>{escape(o["client_order_id"])}</td><td>{escape(o["symbol"])}</td><td>{escape(o["side"])}</td>'
        + _td(_num(o["quantity"]), o["quantity"], num=True)
        + _td(_money(o["notional"]) if o["notional"] else "-", o["notional"], num=True)
        + f'<td>{escape(o["status"])}</td>'
        + _td(_num(o["filled_quantity"]), o["filled_quantity"], num=True) + "</tr>"
        for o in data["open_orders"]
    ]
    headers = [("submitted (UTC)", False), ("client order id", False), ("symbol", False), ("side", False),
               ("quantity", True), ("notional", True), ("status", False), ("filled", True)]
    return f'<section><h2>Open orders</h2>{_table("open-orders", headers, rows, "no open orders")}</section>'


def _trades(data: dict[str, Any]) -> str:
    rows = [
        f'<tr data-client-order-id="{_attr(t["client_order_id"])}"><td data-value="{_attr(t["filled_at"])}">{_time(t["filled_at"])}</td>'
        f'<td>{escape(t["symbol"])}</td><td>{escape(t["side"])}</td>'
        + _td(_num(t["quantity"]), t["quantity"], num=True) + _td(_num(t["price"]), t["price"], num=True)
        + _td(_money(t["value"]), t["value"], num=True)
        + _td(_money(float(t["commission"]) + float(t["slippage_cost"])), None, num=True) + "</tr>"
        for t in reversed(data["trades"])
    ]
    headers = [("filled at (UTC)", False), ("symbol", False), ("side", False), ("quantity", True),
               ("price", True), ("value", True), ("costs", True)]
    count = len(data["trades"])
    return (f'<section><h2>Latest trades (<span id="trades-shown" data-value="{count}">{count}</span> '
            f'of {data["trade_count"]})</h2>{_table("trades", headers, rows, "no trades yet")}</section>')


def _rounded(value: Any) -> Any:
    """Risk inputs for reading: floats to 4 decimals (the API keeps them whole)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _risk(data: dict[str, Any]) -> str:
    rows = [
        f'<tr><td>{escape(e["day"])}</td><td>{escape(e["rule"])}</td><td>{escape(e["symbol"] or "")}</td>'
        f'<td>{escape(e["action"])}</td><td class="note">{escape(json.dumps(_rounded(e["inputs"])))}</td></tr>'
        for e in reversed(data["risk_events"])
    ]
    headers = [("day", False), ("rule", False), ("symbol", False), ("action", False), ("inputs", False)]
    return f'<section><h2>Latest risk events</h2>{_table("risk-events", headers, rows, "no risk events")}</section>'


def _cards(data: dict[str, Any]) -> str:
    eq, bench = data["equity"], data["benchmark"] or {}
    cards = []
    if eq is not None:
        cards += [
            _card("latest-equity", f"equity {eq['day']}", _money(eq["latest"]), eq["latest"]),
            _card("cash", "cash", _money(eq["cash"]), eq["cash"]),
            _card("total-return", "total return", _pct(eq["total_return"]), eq["total_return"],
                  _sign(eq["total_return"])),
            _card("spy-return", "SPY same dates", _pct(bench.get("total_return")),
                  bench.get("total_return"), _sign(bench.get("total_return"))),
            _card("drawdown", "drawdown", _pct(eq["drawdown"]), eq["drawdown"], _sign(eq["drawdown"])),
            _card("max-drawdown", "max drawdown", _pct(eq["max_drawdown"]), eq["max_drawdown"], "neg"),
        ]
    cards += [
        _card("trade-count", "trades", str(data["trade_count"]), data["trade_count"]),
        _card("open-order-count", "open orders", str(data["open_order_count"]), data["open_order_count"]),
        _card("regime", "regime", (eq or {}).get("regime") or "-", (eq or {}).get("regime")),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def render(data: dict[str, Any], refresh_seconds: int) -> str:
    run = data["run"]
    title = f"leverbot — run {run['id']} ({run['mode']}, {run['strategy']})"
    if data.get("account") is not None:
        title += f" — account {data['account']}"
    subtitle = (f"status {run['status']} · data {run['data_source']} · started {run['started_at']} · "
                f"code {run['code_version']}")
    banner = ('<div class="synthetic" id="synthetic-banner">SYNTHETIC DATA: these numbers are not '
              "real market history.</div>") if run["synthetic"] else ""
    body = _cards(data)
    body += _charts(data) if data["equity"] is not None else "<section>no equity recorded yet</section>"
    body += f'<div class="grid2">{_weights(data)}{_regimes(data)}</div>'
    body += _orders(data) + _trades(data) + _risk(data)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body data-run-id="{run["id"]}"><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>'
        f"{banner}<main>{body}</main>"
        f'<footer>read-only view of the trade log · generated <span id="generated-at">'
        f'{escape(data["generated_at"])}</span> · refreshes every {int(refresh_seconds)} s · '
        '<a href="/api/summary">/api/summary</a></footer></body></html>'
    )
