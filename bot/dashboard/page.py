"""The dashboard's one HTML page: inline CSS and server-drawn SVG, one small script of
its own (no CDN), usable down to a 390 px phone screen.

The script swaps in `/fragment` (this module's `render_live`, the same HTML the first
page load has) every `--refresh` seconds and when another run is chosen, so the page
updates in place without a reload. Without JavaScript it falls back to a meta refresh.
Every number carries a stable id or data-value attribute holding the unrounded value,
so a test (or a scraper) can compare the page with the database exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from bot.dashboard.svg import REGIME_COLORS, Line, line_chart
from bot.metrics import drawdowns_differ

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d2b3a;color:#fff;padding:10px 24px;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
header label{font-size:13px;color:#c9d3de} header select{font-size:13px;max-width:100%}
#updated{font-size:12px;color:#c9d3de;margin-left:auto}
#run-head{background:#24364a;color:#fff;padding:10px 24px}
#run-head h1{margin:0;font-size:20px} #run-head p{margin:4px 0 0;font-size:13px;color:#c9d3de;overflow-wrap:anywhere}
.synthetic{background:#b3261e;color:#fff;padding:8px 24px;font-weight:600}
main{padding:16px 24px;max-width:1180px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:#fff;border-radius:8px;padding:10px 16px;box-shadow:0 1px 2px #0002;min-width:140px}
.card .label{font-size:12px;color:#5b6775} .card .value{font-size:22px;font-weight:600}
section{background:#fff;border-radius:8px;padding:12px 16px;margin-bottom:16px;box-shadow:0 1px 2px #0002}
section h2{font-size:15px;margin:0 0 8px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px} .grid2>section{min-width:0}
.scroll{overflow-x:auto} .narrow{display:none} .chart{width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #e4e7eb;text-align:left}
td:first-child{white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{max-width:100%;height:auto} .chart-title{font-size:13px;font-weight:600}
.axis{font-size:11px;fill:#5b6775} .legend{font-size:12px} .grid{stroke:#e4e7eb}
.neg{color:#b3261e} .pos{color:#1a7f37} .note{font-size:12px;color:#5b6775}
.regime{padding:1px 6px;border-radius:4px;color:#fff;font-size:12px}
footer{font-size:12px;color:#5b6775;padding:0 24px 24px}
@media (max-width:700px){
 main{padding:10px} header,#run-head{padding:8px 10px} .grid2{grid-template-columns:1fr}
 .card{min-width:0;flex:1 1 40%;padding:8px 10px} .card .value{font-size:18px}
 section{padding:10px} .wide{display:none} .narrow{display:block} #run-head h1{font-size:17px}
 footer{padding:0 10px 16px}
}
"""

# The page's one script, served at /dashboard.js (same origin, so a strict CSP can allow it).
SCRIPT = """(function () {
  var root = document.documentElement;
  var select = document.getElementById("run-select");
  var stamp = document.getElementById("updated");
  var every = Number(document.body.getAttribute("data-refresh") || 30) * 1000;
  function measure() {  // what a layout check reads: the page must not be wider than the window
    root.setAttribute("data-scroll-width", String(root.scrollWidth));
    root.setAttribute("data-window-width", String(window.innerWidth));
  }
  // "latest" is sent too: under `bot dashboard --run N` no ?run means run N, not the latest
  function query() { return select ? "?run=" + encodeURIComponent(select.value) : ""; }
  function update() {
    return fetch("/fragment" + query(), {cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        document.getElementById("live").innerHTML = html;
        stamp.textContent = "updated " + new Date().toLocaleTimeString();
        measure();
      })
      .catch(function (e) { stamp.textContent = "update failed (" + e.message + "), retrying"; });
  }
  if (select) {
    select.addEventListener("change", function () {
      history.replaceState(null, "", query());
      ["api-summary", "api-runs"].forEach(function (id) {  // the footer's links follow too
        var link = document.getElementById(id);
        if (link) { link.setAttribute("href", link.getAttribute("href").split("?")[0] + query()); }
      });
      update();
    });
  }
  // One request at a time: on a slow trade log an update can take longer than the
  // interval, and timed requests would pile up on the server.
  var busy = false;
  setInterval(function () {
    if (busy) { return; }
    busy = true;
    update().then(function () { busy = false; });
  }, every);
  measure();
})();
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
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _td(shown: str, value: Any = None, *, num: bool = False, css: str = "") -> str:
    attr = f' data-value="{_attr(value)}"' if value is not None else ""
    classes = " ".join(c for c in ("num" if num else "", css) if c)
    return f'<td class="{classes}"{attr}>{shown}</td>'


def _differs(eq: dict[str, Any]) -> bool:
    """Whether the run's drawdown and the one from the all-time peak ever differ
    (bot.metrics.drawdowns_differ, which `bot report` asks too)."""
    return drawdowns_differ((v for _, v in eq["drawdown_curve"]),
                            (v for _, v in eq["drawdown_all_time_curve"]))


def _drawdown_lines(eq: dict[str, Any]) -> list[Line]:
    """The run's drawdown, and the one from the all-time peak beside it when they differ."""
    run = [tuple(p) for p in eq["drawdown_curve"]]
    if not _differs(eq):
        return [Line("strategy", run, "#b3261e", 1.4, True)]
    all_time = [tuple(p) for p in eq["drawdown_all_time_curve"]]
    return [Line("from all-time peak", all_time, "#7a1712", 1.4, True),
            Line("from this run's peak", run, "#e8735f", 1.4)]


def _charts(data: dict[str, Any]) -> str:
    eq, bench = data["equity"], data["benchmark"] or {}
    regimes = [(d, r) for d, r in eq["regime_days"]]
    lines = [Line("strategy", [tuple(p) for p in eq["curve"]], "#1f5fbf", 1.8)]
    dd_lines = _drawdown_lines(eq)
    if bench.get("curve"):
        lines.append(Line("SPY (rebased)", [tuple(p) for p in bench["curve"]], "#7f7f7f", 1.2))
        dd_lines.append(Line("SPY", [tuple(p) for p in bench["drawdown_curve"]], "#7f7f7f", 1.0))
    note = bench.get("note")

    def both(chart_id: str, title: str, chart_lines: list[Line], y_format, height: int, **kw) -> str:
        """The chart drawn for a wide screen and again for a phone (fewer, larger ticks)."""
        wide = line_chart(chart_id, chart_lines, title=title, y_format=y_format, height=height, **kw)
        narrow = line_chart(f"{chart_id}-narrow", chart_lines, title=title.split(" (")[0], y_format=y_format,
                            width=400, height=int(height * 0.9), **kw)
        return f'<div class="wide">{wide}</div><div class="narrow">{narrow}</div>'

    equity_chart = both("equity-chart", "Equity vs SPY (SPY rebased)", lines,
                        lambda v: f"{v:,.0f}", 300, regimes=regimes)
    dd_chart = both("drawdown-chart", "Drawdown from peak", dd_lines, lambda v: f"{v * 100:.0f}%", 220)
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
            _card("drawdown-all-time", "drawdown (risk guard, all-time peak)",
                  _pct(eq["drawdown_all_time"]), eq["drawdown_all_time"], _sign(eq["drawdown_all_time"])),
            _card("drawdown", "drawdown (this run)", _pct(eq["drawdown"]), eq["drawdown"],
                  _sign(eq["drawdown"])),
            _card("max-drawdown", "max drawdown (this run)", _pct(eq["max_drawdown"]),
                  eq["max_drawdown"], "neg"),
        ]
    cards += [
        _card("trade-count", "trades", str(data["trade_count"]), data["trade_count"]),
        _card("open-order-count", "open orders", str(data["open_order_count"]), data["open_order_count"]),
        _card("regime", "regime", (eq or {}).get("regime") or "-", (eq or {}).get("regime")),
    ]
    return f'<div class="cards">{"".join(cards)}</div>' + (_drawdown_note(eq) if eq else "")


def _drawdown_note(eq: dict[str, Any]) -> str:
    """Why the two drawdowns differ, when they do: a user the risk guard holds in
    defensive mode must not be shown a small drawdown unexplained."""
    if not _differs(eq):
        return ""
    return ('<p class="note" id="drawdown-note">"this run" is measured from the highest equity '
            "this run recorded; \"all-time peak\" from the strategy's highest equity across its "
            "runs, the peak its drawdown defence measures from (until a defensive time-out "
            f"re-bases the defence's own): {_pct(eq['drawdown_all_time'])} now, "
            f"{_pct(eq['max_drawdown_all_time'])} at worst in this run, as `bot equity` shows "
            "it.</p>")


def render_live(data: dict[str, Any]) -> str:
    """Everything that changes: the run's heading, the synthetic banner and <main>. The
    page's script swaps this in place (served at /fragment)."""
    run = data["run"]
    title = f"leverbot — run {run['id']} ({run['mode']}, {run['strategy']})"
    if data.get("account") is not None:
        title += f" — account {data['account']}"
    process = f" ({run['process']})" if run.get("process") else ""
    subtitle = (f"status {run['status']}{process} · data {run['data_source']} · started {run['started_at']} · "
                f"code {run['code_version']} · generated {data['generated_at']}")
    banner = ('<div class="synthetic" id="synthetic-banner">SYNTHETIC DATA: these numbers are not '
              "real market history.</div>") if run["synthetic"] else ""
    banner += _process_banner(run)
    body = _cards(data)
    body += _charts(data) if data["equity"] is not None else "<section>no equity recorded yet</section>"
    body += f'<div class="grid2">{_weights(data)}{_regimes(data)}</div>'
    body += _orders(data) + _trades(data) + _risk(data)
    return (f'<div id="run-head" data-run-id="{run["id"]}"><h1>{escape(title)}</h1>'
            f'<p>{escape(subtitle)}</p></div>{banner}<main>{body}</main>')


render_main = render_live  # /fragment


def _process_banner(run: dict[str, Any]) -> str:
    """A warning over a 'running' run whose process is gone or silent: its status and the
    ticking "updated" stamp would otherwise read as a run in progress. Whether it is one is
    decided once, by Liveness.doubtful, which /api/summary's run carries."""
    if not run.get("doubtful"):
        return ""
    beat = run.get("heartbeat_at")
    last = f"last heartbeat {_time(beat)} UTC" if beat else "no heartbeat recorded"
    what = ("its process is gone" if run.get("process") == "gone"
            else "its process has stopped sending heartbeats (stuck or suspended?)")
    return (f'<div class="synthetic" id="process-banner" data-process="{_attr(run.get("process"))}">'
            f"Run {run['id']} is marked running but {what}, {last}: the figures stop at "
            "its last record.</div>")


def _run_selector(runs: list[dict[str, Any]], shown: int, followed: bool) -> str:
    options = [f'<option value="latest"{" selected" if followed else ""}>latest run (follow new runs)</option>']
    for r in runs:
        selected = " selected" if not followed and r["id"] == shown else ""
        status = f"{r['status']} ({r['process']})" if r.get("process") == "gone" else r["status"]
        label = f"run {r['id']} · {r['mode']} · {r['strategy']} · {status} · {str(r['started_at'])[:10]}"
        if r.get("synthetic"):
            label += " · SYNTHETIC"
        options.append(f'<option value="{r["id"]}"{selected}>{escape(label)}</option>')
    return ('<label for="run-select">run</label>'
            f'<select id="run-select">{"".join(options)}</select>')


def _api_links(run_id: int, followed: bool) -> str:
    """The footer's JSON links, of the run the page shows: without ?run= they answered
    for the server's default run, another one once a run was chosen (or under --run)."""
    query = f"?run={'latest' if followed else run_id}"
    return (f'<a id="api-summary" href="/api/summary{query}">/api/summary</a> · '
            f'<a id="api-runs" href="/api/runs{query}">/api/runs</a>')


def render(
    data: dict[str, Any], refresh_seconds: int, *, runs: list[dict[str, Any]] | None = None,
    followed: bool = True,
) -> str:
    run = data["run"]
    title = f"leverbot — run {run['id']} ({run['mode']}, {run['strategy']})"
    selector = _run_selector(runs or [], run["id"], followed)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<noscript><meta http-equiv="refresh" content="{int(refresh_seconds)}"></noscript>'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body data-run-id="{run["id"]}" data-refresh="{int(refresh_seconds)}">'
        f'<header><strong>leverbot</strong>{selector}<span id="updated"></span></header>'
        f'<div id="live">{render_live(data)}</div>'
        f'<footer>read-only view of the trade log · updates in place every {int(refresh_seconds)} s · '
        f'{_api_links(run["id"], followed)}</footer>'
        '<script src="/dashboard.js"></script></body></html>'
    )
