"""A split between a rebalance and the next close, live (paper) against the fake Alpaca.

The daemon downloads split-adjusted history every job (adjustment=all), so after a
2-for-1 split every close, the one its stops were set on included, shows half the price;
the stops are prices of the day they were set. Before: the next close was compared with
a stop twice as high, and the whole position was sold for a fall that never happened."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from tests import test_daemon_live as daemon_tests
from tests.test_daemon_live import daemon
from tests.test_live_stops import DAYS, PREFIX, crash_tqqq, open_at, run_session, trade_at_close_of

venue = daemon_tests.venue  # the fake Alpaca + FRED fixture, the bot pointed at them


def split_tqqq(venue, ratio: float) -> None:
    """A `ratio`-for-1 split of TQQQ at Alpaca (0.25: a 1-for-4 reverse split): every bar
    re-adjusted, the position's quantity multiplied (its cost unchanged), as Alpaca does."""
    venue.daily_bars["TQQQ"] = [
        dataclasses.replace(b, open=b.open / ratio, high=b.high / ratio, low=b.low / ratio,
                            close=b.close / ratio)
        for b in venue.daily_bars["TQQQ"]
    ]
    position = venue.positions["TQQQ"]
    position.qty = (position.qty * Decimal(str(ratio))).quantize(Decimal("1e-9"))  # Alpaca's 9 places


def sessions_with_a_split_after_the_first(tmp_path, venue, ratio: float, sessions: int):
    """The initial allocation decided on DAYS[0]'s close (stops set), a split, then the
    open jobs of DAYS[2 : sessions + 1], each deciding on the close before it."""
    trade_at_close_of(venue, DAYS[0])
    jobs, log, clock = daemon(tmp_path, venue, open_at(DAYS[1]))
    run_session(venue, jobs, clock, DAYS[1])
    held = float(venue.positions["TQQQ"].qty)
    assert held > 0
    split_tqqq(venue, ratio)
    for previous, day in zip(DAYS[1:sessions], DAYS[2 : sessions + 1], strict=True):
        trade_at_close_of(venue, previous)
        run_session(venue, jobs, clock, day)
    return log, held


def stop_orders(venue) -> list[str]:
    return [o.data["client_order_id"] for o in venue.orders if "-stop-" in o.data["client_order_id"]]


@pytest.mark.parametrize("ratio", [2, 3], ids=["2_for_1", "3_for_1"])
def test_a_split_does_not_sell_the_fund_at_its_stop(tmp_path, venue, ratio):
    log, held = sessions_with_a_split_after_the_first(tmp_path, venue, ratio, 3)
    assert stop_orders(venue) == []
    assert float(venue.positions["TQQQ"].qty) >= ratio * held * 0.9  # still held, in new shares
    events = log.load_risk_events(int(log.runs()["id"].iloc[0]))
    assert not (events["rule"] == "stop").any()
    state = log.load_state(PREFIX, "paper")
    assert state["stopped"] == [] and state["stop_basis"]["TQQQ"] > 0
    log.close()


@pytest.mark.parametrize("ratio", [2, 0.25], ids=["2_for_1", "reverse_1_for_4"])
def test_after_a_split_a_real_fall_still_hits_the_stop(tmp_path, venue, ratio):
    """After a reverse split (prices x4) every close stood far above a stop set before
    it: the stop was off for good. TQQQ falls 20% at 11-22, below its stop either way."""
    crash_tqqq(venue)
    log, _held = sessions_with_a_split_after_the_first(tmp_path, venue, ratio, 5)
    assert stop_orders(venue) == [f"{PREFIX}-20241122-stop-TQQQ-sell"]
    events = log.load_risk_events(int(log.runs()["id"].iloc[0]))
    inputs = events[events["rule"] == "stop"].iloc[0]["inputs"]
    assert inputs["stop_as_set"] / inputs["stop"] == pytest.approx(ratio, rel=1e-9)
    assert inputs["price"] < inputs["stop"]
    assert "TQQQ" not in {s for s, p in venue.positions.items() if float(p.qty)}
    log.close()


def test_a_restart_after_a_split_names_it_in_the_position_difference(tmp_path, venue):
    trade_at_close_of(venue, DAYS[0])
    jobs, log, clock = daemon(tmp_path, venue, open_at(DAYS[1]))
    run_session(venue, jobs, clock, DAYS[1])
    trade_at_close_of(venue, DAYS[1])
    after_close = open_at(DAYS[1]) + dt.timedelta(hours=7)
    venue.set_now(after_close)
    clock.set(after_close)
    assert jobs.run("close", jobs.close_job)  # the snapshot a restart compares with
    held = float(venue.positions["TQQQ"].qty)
    log.close()
    split_tqqq(venue, 0.25)  # a 1-for-4 reverse split while the daemon is down
    _jobs, log, _clock = daemon(tmp_path, venue, open_at(DAYS[2]))
    text = " | ".join(log.load_incidents()["message"])
    assert f"position TQQQ: last snapshot {held:g}, broker holds {held / 4:g} (a 1-for-4 reverse split?)" in text
    log.close()


def test_the_split_hint_names_whole_ratios_only():
    from bot.daemon.reconcile import _split_hint

    assert _split_hint(71.205995690, 142.41199138) == " (a 2-for-1 split?)"
    assert _split_hint(30.0, 10.0) == " (a 1-for-3 reverse split?)"
    assert _split_hint(10.0, 12.5) == _split_hint(0.0, 10.0) == _split_hint(10.0, 0.0) == ""
