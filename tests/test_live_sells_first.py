"""Buys queued behind a sell that expired part-filled, released at the next open with
less cash than the rebalance planned: the daemon's jobs against the fake Alpaca on
127.0.0.1 through alpaca-py."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import test_daemon_live as daemon_tests
from tests.fakes import Fault
from tests.test_daemon_live import bought_before, daemon

venue = daemon_tests.venue  # the fake Alpaca and FRED, set up for the daemon

UTC = dt.UTC
CLOSE_JOB = dt.datetime(2024, 11, 26, 21, 20, tzinfo=UTC)  # 16:20 New York
NEXT_OPEN = dt.datetime(2024, 11, 27, 14, 31, tzinfo=UTC)  # the first poll of Wednesday
INSUFFICIENT = 40310000  # Alpaca's code for insufficient buying power


def at(jobs, clock, venue, when: dt.datetime, name: str, job) -> None:
    clock.set(when)
    venue.set_now(when)
    assert jobs.run(name, job)


def sell_expired_part_filled(tmp_path, venue):
    """Tuesday: the rebalance's sell fills 30% and expires at the close; its four buys
    wait in the queue overnight, planned on cash the sell never brought."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    venue.fill(sell, qty=round(float(venue.order(sell)["qty"]) * 0.3, 6))
    at(jobs, clock, venue, CLOSE_JOB, "close", jobs.close_job)
    assert venue.order(sell)["status"] == "expired"
    assert [o.data["side"] for o in venue.orders] == ["sell"]  # no buy sent after the close
    return jobs, log, clock


def buys_posted(venue) -> list[dict]:
    return [r.body for r in venue.calls("POST", "/v2/orders") if r.body["side"] == "buy"]


def test_a_wrong_low_print_never_lets_the_released_buys_spend_the_cash_twice(tmp_path, venue):
    """Before: UPRO's latest trade printed at 1/50 of its price; its buy went out at the
    planned quantity and was counted at that price (nearly free), so the buys after it
    spent the same cash again: $67.6k of buys on $53.6k of cash (UGL refused for buying
    power here; all sent, on margin, at Alpaca's margin accounts)."""
    jobs, log, clock = sell_expired_part_filled(tmp_path, venue)
    venue.latest_trades = dict(venue.prices)
    venue.latest_trades["UPRO"] = venue.prices["UPRO"] / 50
    cash = float(venue.cash)
    at(jobs, clock, venue, NEXT_OPEN, "poll", jobs.poll_job)

    buys = buys_posted(venue)
    assert buys and buys[0]["symbol"] == "UPRO"
    cost = sum(float(b["qty"]) * venue.prices[b["symbol"]] for b in buys)
    assert cost <= cash
    orders = log.load_orders()
    assert not orders["status_message"].fillna("").str.contains("insufficient").any()
    log.close()


def test_a_released_buy_the_venue_refuses_leaves_its_cash_to_the_others(tmp_path, venue):
    """Before: UPRO refused (403 insufficient buying power, say, or an asset halted) was
    counted as spent: the last buy went out cut by UPRO's planned value, or not at all,
    and that cash stayed idle until the next rebalance."""
    jobs, log, clock = sell_expired_part_filled(tmp_path, venue)
    venue.inject("POST", "/v2/orders",
                 Fault.error(403, INSUFFICIENT, "insufficient buying power"))
    cash = float(venue.cash)
    at(jobs, clock, venue, NEXT_OPEN, "poll", jobs.poll_job)

    rows = log.load_orders().set_index("symbol")
    assert rows.loc["UPRO", "status"] == "rejected"
    sent = [b for b in buys_posted(venue) if b["symbol"] != "UPRO"]
    assert [b["symbol"] for b in sent] == ["UDOW", "UGL", "DIG"]  # DIG gets UPRO's cash
    cost = sum(float(b["qty"]) * venue.prices[b["symbol"]] for b in sent)
    assert 0.99 * cash <= cost <= cash
    log.close()


def test_a_buy_cut_to_the_cash_left_says_so_on_its_order_row(tmp_path, venue):
    """The order row keeps the decision's planned quantity; a released buy cut to the
    cash the part-filled sell left says, in its message, how many shares were sent. It
    used to read only "sent after the sells filled", so its fill looked short of the
    order for no reason."""
    jobs, log, clock = sell_expired_part_filled(tmp_path, venue)
    at(jobs, clock, venue, NEXT_OPEN, "poll", jobs.poll_job)
    sent = {b["symbol"]: float(b["qty"]) for b in buys_posted(venue)}
    rows = log.load_orders().set_index("symbol")
    cut = [s for s, qty in sent.items() if qty < rows.loc[s, "quantity"] - 1e-9]
    assert cut, "the scenario must cut at least one buy"
    for symbol in cut:
        message = rows.loc[symbol, "status_message"]
        assert f"cut to {sent[symbol]:.6g} of {rows.loc[symbol, 'quantity']:.6g} shares to fit the cash" in message
        assert message.startswith("sent after the sells filled")
    for symbol in set(sent) - set(cut):
        assert "cut to" not in (rows.loc[symbol, "status_message"] or "")

    for order in list(venue.orders):  # the cut buys fill: the explanation stays
        if order.data["side"] == "buy":
            venue.fill(order.data["client_order_id"])
    at(jobs, clock, venue, NEXT_OPEN + dt.timedelta(minutes=1), "poll", jobs.poll_job)
    rows = log.load_orders().set_index("symbol")
    for symbol in cut:
        assert rows.loc[symbol, "status"] == "filled"
        assert rows.loc[symbol, "filled_quantity"] == pytest.approx(sent[symbol])
        assert "cut to" in rows.loc[symbol, "status_message"]
    log.close()


def users_own_sell(venue) -> None:
    """The user's GTC sell of a stock the bot does not trade, open at the venue."""
    venue.prices["AAPL"] = 200.0
    venue.hold("AAPL", 10, 150.0)
    with venue.lock:
        answer = venue.ledger.post_order({
            "symbol": "AAPL", "side": "sell", "type": "market", "time_in_force": "gtc",
            "qty": "10", "client_order_id": "my-own-sell",
        })
    assert answer.status == 200


def test_a_users_own_open_sell_does_not_hold_the_bots_buys(tmp_path, venue):
    """A sell the user placed in the same account (a GTC order on a stock the bot does
    not trade) funds none of the bot's buys, so they go out at once. Before, any sell
    order the venue listed held them queued for as long as it stayed open: for a GTC limit
    order, days or weeks."""
    users_own_sell(venue)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)

    assert len(buys_posted(venue)) == 5  # the first allocation, sent without waiting
    assert venue.order("my-own-sell")["status"] == "new"  # still open, and not touched
    messages = log.load_orders()["status_message"].fillna("")
    assert not messages.str.contains("queued").any()
    log.close()


def test_the_dry_run_ignores_a_users_own_sell_as_the_daemon_does(tmp_path, venue):
    """`bot once` without --execute shows the buys the daemon would send: at once, not
    queued behind the user's own sell (the dry run's venue keeps the bot's prefix)."""
    from bot.daemon.once import DRY_RUN, decide_once

    users_own_sell(venue)
    jobs, log, _ = daemon(tmp_path, venue)
    dry = decide_once(jobs, execute=False)
    buys = [o for o in dry.orders if o.request.side.value == "buy"]
    assert len(buys) == 5
    assert all(o.status_message.startswith(DRY_RUN) for o in buys)
    assert venue.order_count() == 1  # the user's order only: the dry run sent nothing
    log.close()


def test_a_released_buy_after_a_price_jump_buys_its_planned_value_not_its_shares(tmp_path, venue):
    """Overnight UPRO's price went to ten times the decision's (a 1-for-10 reverse split,
    or a wrong high print). Before: its queued buy went out for the planned shares at ten
    times the price, counted against the cash, and the buys after it got none; now it
    buys the value the decision planned, and says so on its row."""
    jobs, log, clock = sell_expired_part_filled(tmp_path, venue)
    planned = log.load_orders().set_index("symbol")
    venue.latest_trades = dict(venue.prices)
    venue.latest_trades["UPRO"] = venue.prices["UPRO"] * 10
    cash = float(venue.cash)
    at(jobs, clock, venue, NEXT_OPEN, "poll", jobs.poll_job)

    buys = {b["symbol"]: float(b["qty"]) for b in buys_posted(venue)}
    assert list(buys) == ["UPRO", "UDOW", "UGL"]  # UGL cut to the cash left, as without the jump
    assert buys["UPRO"] == pytest.approx(planned.loc["UPRO", "quantity"] / 10, rel=1e-6)
    committed = buys["UPRO"] * venue.latest_trades["UPRO"] + sum(
        buys[s] * venue.prices[s] for s in ("UDOW", "UGL"))
    assert committed <= cash
    rows = log.load_orders().set_index("symbol")
    assert "shares to its planned value: the price rose from" in rows.loc["UPRO", "status_message"]
    assert rows.loc["UGL", "status_message"].endswith("shares to fit the cash")
    log.close()


LATE = dt.datetime(2024, 11, 26, 20, 53, tzinfo=UTC)  # 15:53, the close at 16:00


def slow_daemon(tmp_path, venue):
    """The daemon with a retry budget longer than the buy cutoff (as a request's lookups
    and timeouts add up) whose waits pass on its simulated clock."""
    from bot.clock import SimulatedClock
    from bot.daemon.live import build_live
    from bot.net import RetryPolicy
    from tests.test_daemon_live import FAST, OPEN_JOB, SETTINGS, open_log

    clock = SimulatedClock(OPEN_JOB)
    venue.set_now(OPEN_JOB)

    def waited(seconds: float) -> None:
        clock.set(clock.now() + dt.timedelta(seconds=seconds))

    slow = RetryPolicy(attempts=10, budget=900.0, jitter=0.0, sleep=waited)
    log, run_id = open_log(tmp_path)
    jobs = build_live(SETTINGS, log, run_id, live=False, clock=clock, policy=slow, fred_policy=FAST)
    return jobs, log, clock


def rate_limited_until_after_the_close(venue) -> None:
    """Six 429s of 100 s from 15:53: the seventh try, at 16:03, would be placed."""
    venue.inject("POST", "/v2/orders",
                 *[Fault.error(429, message="too many requests", retry_after=100)] * 6)


def test_a_buy_retrying_through_the_close_is_not_sent_after_it(tmp_path, venue):
    """The release starts minutes before its cutoff; the first buy's POSTs are answered
    429 for longer than is left of the session. Each try is checked against the close:
    the buy is not sent after it (its seventh try, at 16:03, would be placed, and Alpaca
    would queue it for the next open's prices), it stays queued, an incident says why,
    and the next session's first poll sends it."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = slow_daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    venue.fill(sell)
    clock.set(LATE)
    venue.set_now(LATE)
    rate_limited_until_after_the_close(venue)
    assert jobs.run("poll", jobs.poll_job)

    posts = venue.calls("POST", "/v2/orders")
    assert [o.data["side"] for o in venue.orders] == ["sell"]  # no buy placed
    assert len([p for p in posts if p.body["side"] == "buy"]) == 5  # 15:53 .. 15:59:40
    [incident] = log.load_incidents()[lambda f: f["kind"] == "release"].itertuples()
    assert "the session has closed" in incident.message
    queued = log.load_orders().set_index("symbol")["status_message"].drop("TQQQ")
    assert queued.str.startswith("queued").all()

    at(jobs, clock, venue, NEXT_OPEN, "poll", jobs.poll_job)
    assert sorted(o.data["symbol"] for o in venue.orders if o.data["side"] == "buy") == sorted(queued.index)
    log.close()


def test_a_first_allocation_retrying_through_the_close_is_queued_not_lost(tmp_path, venue):
    """With no sell to wait for, the buys go out at once. The first one's tries ran into
    the close: it was refused by the gate and the exception failed the whole decision, so
    no buy was sent, queued or recorded until the next one. Now it is queued for the
    next open like a buy that waits for a sell, and the rebalance's other buys behind it."""
    jobs, log, clock = slow_daemon(tmp_path, venue)
    clock.set(LATE)
    venue.set_now(LATE)
    rate_limited_until_after_the_close(venue)
    assert jobs.run("open", jobs.open_job)

    assert venue.orders == []  # nothing placed after the close
    rows = log.load_orders().set_index("symbol")
    assert len(rows) == 5 and rows["status_message"].str.startswith("queued until the market opens").all()
    [incident] = log.load_incidents()[lambda f: f["kind"] == "release"].itertuples()
    assert "the session has closed" in incident.message and "queued" in incident.message

    at(jobs, clock, venue, NEXT_OPEN, "poll", jobs.poll_job)
    assert sorted(o.data["symbol"] for o in venue.orders) == sorted(rows.index)
    log.close()
