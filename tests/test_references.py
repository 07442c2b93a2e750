"""The report's reference portfolios (bot.reference, run by bot.runner.run_references)."""

from __future__ import annotations

from bot.config import parse_settings
from bot.runner import run_references


def test_a_buy_and_hold_fund_listed_after_the_start_is_bought_when_it_lists(settings, real_market):
    """Started in 2008, "TQQQ only" was cash for the whole run: its one purchase, on the
    first day, found no price (TQQQ listed 2010-02-11) and a buy-and-hold portfolio never
    trades again. It now starts on the fund's first day, and says so in its name."""
    raw = settings.model_dump(mode="json")
    raw["backtest"].update(start="2008-01-02", end="2012-12-31")
    results = {r.name: r for r in run_references(parse_settings(raw, "test"), real_market)}
    tqqq = results["TQQQ only (from 2010-02-11, when it listed)"]
    assert str(tqqq.dates[0])[:10] == "2010-02-11" and len(tqqq.fills) == 1
    assert tqqq.equity[-1] > 2 * tqqq.equity[0]  # it held TQQQ through 2012
    spy = results["SPY buy-and-hold"]  # listed before the start: from the start, as before
    assert str(spy.dates[0])[:10] == "2008-01-02" and len(spy.fills) == 1
