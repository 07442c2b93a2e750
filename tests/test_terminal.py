"""Terminal output: no number is ever cut, at 80, 100 or 200 columns; `bot --help` lists
each command once and every option says what it does."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bot.cli import build_parser
from bot.report import SUMMARY_COLUMNS, RunSeries, build_report, render_table
from bot.store.export import render_table as render_frame
from bot.terminal import console
from tests.conftest import REPO

WIDTHS = (80, 100, 200)


def _report() -> dict:
    index = pd.bdate_range("2010-03-01", periods=1500)
    rng = np.random.default_rng(2)
    runs = [
        RunSeries(name, pd.Series(1e5 * np.cumprod(1 + rng.normal(mu, sd, len(index))), index=index))
        for name, mu, sd in (("diversified_leverage (run 12, backtest)", 0.0006, 0.012),
                             ("SPY buy-and-hold", 0.0005, 0.011), ("TQQQ only", 0.0035, 0.035))
    ]
    return build_report(runs[0], runs[1:], risk_free=None, market=runs[1].equity,
                        periods=[("Pre-pandemic growth 2017-2021", "2011-01-01", "2013-12-31")],
                        data_label="csv:/data", meta={})


@pytest.mark.parametrize("width", WIDTHS)
def test_report_tables_keep_every_number_whole(width: int, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    report = _report()
    out = io.StringIO()
    con = console(out)
    assert con.width == width
    render_table(report, con)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    cells = set(re.findall(r"(?<=│ )\s*(\S+)\s*(?= │)", text))
    for row in report["summary"]:
        for _, key, fmt in SUMMARY_COLUMNS:
            assert fmt(row.get(key)).strip() in cells, (key, row["name"])  # whole, in one cell
    assert any(float(c.replace(",", "")) > 10_000 for c in cells if re.fullmatch(r"[\d,.]+", c))
    if width == 200:
        assert "(1/" not in text  # wide enough: one table each
    else:
        assert "Summary (1/" in text  # stacked, the series names repeated in each part
        assert text.count("SPY buy-and-hold") >= 3


def test_trade_log_tables_drop_the_least_important_columns_first() -> None:
    at = pd.Timestamp("2024-03-04 14:35", tz="UTC").to_pydatetime()
    frame = pd.DataFrame([{
        "filled_at": at, "symbol": "TQQQ", "side": "buy", "quantity": 1234.567891, "price": 61.2345,
        "value": 75_598.12, "commission": 1.25, "slippage_cost": 37.8,
        "client_order_id": "bt12-20240304-rb-TQQQ-buy",
    }])
    order = ("slippage_cost", "commission", "client_order_id")
    for width in WIDTHS:
        out = io.StringIO()
        render_frame(frame, "trades", Console(file=out, width=width), drop=order)
        text = out.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        for kept in ("1,234.567891", "61.2345", "75,598.12", "2024-03-04 14:35:00", "TQQQ"):
            assert kept in text, (width, kept)  # whole, never wrapped or ellipsized
        note = re.search(r"not shown at \d+ columns: ([\w, ]+) \(", " ".join(text.split()))
        dropped = note.group(1).split(", ") if note else []
        assert dropped == list(order[: len(dropped)])  # least important first
        assert bool(dropped) == (width < 200)
        table = text.split("not shown")[0]
        assert all(name not in table for name in dropped)


def test_each_part_of_a_stacked_table_names_its_rows_symbols() -> None:
    """Too wide for 60 columns, a table is printed in parts; each part repeated only the
    time, which every row of a rebalance shares, so part 2's numbers could be matched to
    their rows only by counting. The symbol is repeated too."""
    at = pd.Timestamp("2024-03-04 21:00", tz="UTC").to_pydatetime()
    frame = pd.DataFrame([
        {"submitted_at": at, "symbol": sym, "side": "buy", "quantity": q, "status": "filled",
         "filled_quantity": q, "average_price": 61.2345, "reason": "period: 4 trading days"}
        for sym, q in (("TQQQ", 1234.567891), ("UPRO", 98.765432))
    ])
    out = io.StringIO()
    render_frame(frame, "orders", Console(file=out, width=60))
    parts = out.getvalue().split("orders (")[1:]
    assert len(parts) > 1
    for part in parts:
        assert "TQQQ" in part and "UPRO" in part


@pytest.mark.parametrize("width", [34, 45, 50])
def test_a_terminal_too_narrow_for_one_column_gets_one_field_a_line(width) -> None:
    """At 45 columns the time and symbol repeated in each part left no room for one
    number: rich cut the quantity to "73.12…" and the time to "... UT"."""
    at = pd.Timestamp("2024-12-30 14:35", tz="UTC").to_pydatetime()
    frame = pd.DataFrame([{"submitted_at": at, "symbol": "TQQQ", "side": "buy",
                           "quantity": 73.123506, "status": "filled", "filled_quantity": 73.123506,
                           "average_price": 61.2345, "reason": "period: 4 trading days"}])
    out = io.StringIO()
    render_frame(frame, "orders", Console(file=out, width=width))
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    if width >= 45:
        assert "│ 73.123506 " in text and "│ 2024-12-30 14:35:00 UTC │" in text
    else:  # narrower than a timestamp: on two lines, never cut
        assert "│ 73.123506 " in text and "2024-12-30" in text and "14:35:00 UTC" in text


def test_the_inspection_commands_fit_columns_80(tmp_path) -> None:
    from tests.test_inspect_cli import fill_by_replay

    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    fill_by_replay(url, tmp_path / "out")
    for command in ("trades", "orders", "regimes", "runs", "equity"):
        proc = subprocess.run([sys.executable, "-m", "bot", command, "--database", url, "--limit", "5"],
                              cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr
        assert max(len(line) for line in proc.stdout.splitlines()) <= 80, command
        assert "…" not in proc.stdout, command  # nothing ellipsized


def _actions(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_of_every_command_has_help() -> None:
    missing = [(path, action.option_strings or action.dest) for path, action in _actions(build_parser(), "bot")
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


def test_bot_help_lists_each_command_once() -> None:
    text = build_parser().format_help()
    commands = [name for action in build_parser()._actions
                if isinstance(action, argparse._SubParsersAction) for name in action.choices]
    assert len(commands) > 15
    for name in commands:
        listed = re.findall(rf"^\s+{re.escape(name)}\s", text, re.M)
        assert len(listed) == 1, name
    assert "{" not in text.split("commands:")[1]  # no brace list of every name again


@pytest.mark.parametrize("as_text", [False, True])
def test_a_stacked_tables_title_is_printed_as_it_is(as_text: bool) -> None:
    """A title naming a path with brackets: stacking made a Text title a str again, read
    as markup (`col[red]` lost its tag, `we[/ird]` raised MarkupError)."""
    from rich.table import Table
    from rich.text import Text

    from bot.terminal import stack

    title = "trades — sqlite:///col[red]/we[/ird].sqlite"
    out = io.StringIO()
    con = Console(file=out, width=60)
    if as_text:
        table = Table(title=Text(title), title_justify="left")
        for name in ("symbol", *(f"value {i}" for i in range(8))):
            table.add_column(name)
        table.add_row("TQQQ", *(f"{1000.5 * i:,.2f}" for i in range(8)))
        parts = stack(table, con)
        for part in parts:
            con.print(part)
    else:
        frame = pd.DataFrame({"symbol": ["TQQQ"], **{f"value {i}": [1000.5 * i] for i in range(8)}})
        render_frame(frame, title, con)
    text = "".join(out.getvalue().split())
    assert "".join(f"{title} (1/".split()) in text and "".join(f"{title} (2/".split()) in text
