"""Orders a user replaced at Alpaca (dashboard, or PATCH /v2/orders/{id}): the order the
bot sent becomes `replaced` with `replaced_by` naming a new order, which the bot follows as
its own order continued. Against the fake Alpaca on 127.0.0.1 through the real alpaca-py
client, the real jobs and reconciliation.

Alpaca lets a user change the quantity of whole-share orders only ("You can only patch
full shares"), so the daemon here trades whole shares (rebalance.fractional = false), and
the fake refuses what Alpaca refuses."""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.requests import ReplaceOrderRequest
from structlog.testing import capture_logs

from bot.broker.base import BrokerError
from bot.config import parse_settings
from bot.types import OrderStatus, Side
from tests import test_alpaca_broker as broker_tests
from tests import test_daemon_live as daemon_tests
from tests.fakes import Fault
from tests.fakes.alpaca_server import KEY_ID, SECRET
from tests.test_alpaca_broker import OPEN_WED, req
from tests.test_daemon_live import SETTINGS, bought_before
from tests.test_live_order_faults import crash_after_first_submit, later
from tests.test_live_restart import (
    TUESDAY_CLOSE_JOB,
    all_fills,
    fills_match_orders,
    move,
)

fake, broker = broker_tests.fake, broker_tests.broker
venue = daemon_tests.venue

TQQQ = "diversified_leverage-20241125-rb-TQQQ-buy"  # the first buy of the initial allocation


def whole_shares():
    raw = SETTINGS.model_dump(mode="json")
    raw["rebalance"]["fractional"] = False
    return parse_settings(raw, "whole shares")


WHOLE = whole_shares()
daemon = functools.partial(daemon_tests.daemon, settings=WHOLE)


def replaced_logs(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] in ("order_replaced_at_venue",
                                              "order_replacement_not_found")]


def order_row(log, cid: str):
    return log.load_orders().set_index("client_order_id").loc[cid]


def fills_for(log, cid: str):
    fills = all_fills(log)
    return fills[fills["client_order_id"] == cid]


def fill_all_but(venue, cid: str) -> None:
    """Fill every working order the bot sent but `cid` (a replacement has another id)."""
    for data in [o.data for o in venue.orders]:
        mine = data["client_order_id"].startswith("diversified")
        if mine and data["status"] == "new" and data["client_order_id"] != cid:
            venue.fill(data["id"])


# --- the daemon -------------------------------------------------------------------------


def test_a_filled_replacement_is_recorded_once_against_the_bots_order(tmp_path, venue):
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)  # the initial allocation: five buys
    sent = venue.order(TQQQ)
    # The user halves the buy through Alpaca's API, as a script or the dashboard would.
    client = TradingClient(KEY_ID, SECRET, url_override=venue.url)
    new = client.replace_order_by_id(sent["id"], ReplaceOrderRequest(qty=50))
    assert venue.order(sent["id"])["status"] == "replaced"
    venue.fill_open()
    clock.set(later(2))
    with capture_logs() as logs:
        assert jobs.run("poll", jobs.poll_job)

    row = order_row(log, TQQQ)
    assert row["status"] == "filled" and row["filled_quantity"] == pytest.approx(50)
    assert sent["id"] in row["status_message"] and str(new.id) in row["status_message"]
    assert "not by the bot" in row["status_message"]
    fills = fills_for(log, TQQQ)
    assert fills["quantity"].tolist() == [pytest.approx(50)]
    assert fills["price"].iloc[0] == pytest.approx(venue.prices["TQQQ"])
    fills_match_orders(log)
    [warning] = replaced_logs(logs)
    assert warning["log_level"] == "warning"
    assert (warning["order_id"], warning["replaced_by"]) == (sent["id"], str(new.id))

    clock.set(later(4))
    assert jobs.run("poll", jobs.poll_job)
    assert len(fills_for(log, TQQQ)) == 1  # once
    assert jobs.ctx.broker.open_order_count() == 0
    # The position is what the fills say, at the venue and in the close's snapshot.
    assert float(venue.positions["TQQQ"].qty) == pytest.approx(50)
    move(venue, clock, TUESDAY_CLOSE_JOB)
    assert jobs.run("close", jobs.close_job)
    snapshot = log.load_positions(log.run_id).set_index("symbol")
    assert snapshot.loc["TQQQ", "quantity"] == pytest.approx(50)
    assert venue.order_count() == 6  # five sent, one replacement: nothing sent again
    log.close()


def test_an_open_replacement_is_outstanding_and_the_rebalance_waits(tmp_path, venue):
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sent = venue.order(TQQQ)
    new_id = venue.replace(TQQQ, qty="40")
    fill_all_but(venue, TQQQ)
    clock.set(later(2))
    assert jobs.run("poll", jobs.poll_job)

    assert jobs.ctx.broker.open_order_count() == 1  # the replacement works: outstanding
    row = order_row(log, TQQQ)
    assert row["status"] == "new"  # read as canceled before
    assert sent["id"] in row["status_message"] and new_id in row["status_message"]
    assert "quantity 40" in row["status_message"]
    assert fills_for(log, TQQQ).empty

    # The decision runs again (a restart within two hours of the open job does this).
    clock.set(later(4))
    assert jobs.run("open", jobs.open_job)
    events = log.load_risk_events(log.run_id)
    skipped = events[events["rule"] == "outstanding_orders"]
    assert list(skipped["action"]) == ["skipped: 1 order(s) outstanding"]
    assert venue.order_count() == 6  # nothing sent again

    venue.fill(new_id, 40, venue.prices["TQQQ"] * 0.99)
    clock.set(later(6))
    assert jobs.run("poll", jobs.poll_job)
    row = order_row(log, TQQQ)
    assert row["status"] == "filled"
    assert fills_for(log, TQQQ)["quantity"].tolist() == [pytest.approx(40)]
    assert jobs.ctx.broker.open_order_count() == 0
    fills_match_orders(log)
    log.close()


def test_a_restart_follows_a_replacement_that_filled_while_down(tmp_path, venue):
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    log.close()  # the daemon stops with five buys open
    new_id = venue.replace(TQQQ, qty="30")
    venue.fill_open()

    jobs, log, clock = daemon(tmp_path, venue, later(3))  # reconciliation at start
    row = order_row(log, TQQQ)
    assert row["status"] == "filled" and new_id in row["status_message"]
    assert fills_for(log, TQQQ)["quantity"].tolist() == [pytest.approx(30)]
    fills_match_orders(log)
    assert jobs.run("open", jobs.open_job)  # decided again: nothing sent again
    assert venue.order_count() == 6
    incidents = len(log.load_incidents())
    log.close()

    # A second restart finds nothing to repair: no fill difference, no fill twice.
    _, log, _ = daemon(tmp_path, venue, later(5))
    new_incidents = log.load_incidents()["message"].tolist()[incidents:]
    assert not any("fill" in m for m in new_incidents), new_incidents
    assert len(fills_for(log, TQQQ)) == 1
    fills_match_orders(log)
    log.close()


def buys_posted(venue) -> list[str]:
    return [r.body["symbol"] for r in venue.calls("POST", "/v2/orders") if r.body["side"] == "buy"]


def test_after_a_restart_a_sell_the_user_replaced_still_holds_the_buys_back(tmp_path, venue):
    """The rebalance's buys wait for its sell. The daemon stops; the user lowers the
    sell's quantity at Alpaca, whose replacement carries a client_order_id of Alpaca's,
    not the bot's. The restarted daemon follows the sell through its replacement, and its
    queued buys wait for that, as they would have without the restart. Before, they went
    out at the first poll on cash the sell had not brought."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    [sell] = [o.data for o in venue.orders if o.data["side"] == "sell"]
    assert buys_posted(venue) == []  # queued behind the sell
    log.close()  # the daemon stops
    new_id = venue.replace(sell["client_order_id"], qty=str(int(float(sell["qty"])) - 1))

    jobs, log, clock = daemon(tmp_path, venue, later(3))
    assert jobs.run("poll", jobs.poll_job)
    assert buys_posted(venue) == []  # the replacement still works: the buys wait
    queued = log.load_orders().set_index("symbol")["status_message"]
    assert queued.str.startswith("queued").sum() == 4

    venue.fill(new_id)
    clock.set(later(5))
    venue.set_now(later(5))
    assert jobs.run("poll", jobs.poll_job)
    assert sorted(buys_posted(venue)) == sorted(set(queued.index) - {"TQQQ"})
    assert order_row(log, sell["client_order_id"])["status"] == "filled"
    fills_match_orders(log)
    log.close()


def test_a_crash_then_a_replacement_the_log_never_saw_is_adopted_and_waited_for(
    tmp_path, venue, monkeypatch
):
    """Killed after the first buy went out and before the log stored it; the user then
    replaced that buy. The restart adopts it as the bot's order, still working, so the
    decision taken again sends nothing on top of it."""
    cid = crash_after_first_submit(tmp_path, venue, monkeypatch, WHOLE)
    assert cid == TQQQ
    new_id = venue.replace(cid, qty="20")

    jobs, log, clock = daemon(tmp_path, venue, later(3))
    row = order_row(log, cid)
    assert row["status"] == "new" and new_id in row["status_message"]
    assert jobs.run("open", jobs.open_job)
    assert venue.order_count() == 2  # the bot's buy and its replacement: nothing re-sent
    assert jobs.ctx.broker.open_order_count() == 1

    venue.fill(new_id)
    clock.set(later(5))
    assert jobs.run("poll", jobs.poll_job)
    assert order_row(log, cid)["status"] == "filled"
    assert fills_for(log, cid)["quantity"].tolist() == [pytest.approx(20)]
    log.close()


def test_a_replacement_alpaca_cannot_find_is_an_error_and_the_jobs_go_on(tmp_path, venue):
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sent = venue.order(TQQQ)
    new_id = venue.replace(TQQQ, qty="40")
    venue.forget(new_id)  # 404 from now on
    fill_all_but(venue, TQQQ)
    clock.set(later(2))
    with capture_logs() as logs:
        assert jobs.run("poll", jobs.poll_job)
        clock.set(later(4))
        assert jobs.run("poll", jobs.poll_job)

    [error] = replaced_logs(logs)  # once, not at every poll
    assert error["log_level"] == "error"
    assert (error["order_id"], error["replaced_by"]) == (sent["id"], new_id)
    row = order_row(log, TQQQ)
    assert row["status"] == "new"  # outstanding: never sent again
    assert new_id in row["status_message"] and sent["id"] in row["status_message"]
    assert "404" in row["status_message"]
    filled = log.load_orders()
    assert (filled["status"] == "filled").sum() == 4  # the other orders' fills went in
    assert jobs.ctx.broker.open_order_count() == 1
    assert log.load_incidents().empty  # no job failed
    log.close()

    jobs, log, _ = daemon(tmp_path, venue, later(6))  # a restart does not fail on it either
    assert order_row(log, TQQQ)["status"] == "new"
    assert jobs.run("open", jobs.open_job)
    assert venue.order_count() == 5  # four sent and the original (its replacement is gone)
    log.close()


# --- the adapter --------------------------------------------------------------------------


def test_a_chain_of_two_replacements_is_one_order_with_every_fill(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 10, ref=10.0), fake.now)
    first = order.broker_order_id
    fake.fill(first, 2, 10.0)
    [(_, fill)] = broker.poll(fake.now)
    assert fill.quantity == 2

    second = fake.replace(first, qty="6")  # the fills of the first stay on it
    fake.set_now(OPEN_WED + dt.timedelta(minutes=1))
    with capture_logs() as logs:
        [(seen, fill)] = broker.poll(fake.now)
    assert fill is None and seen is order
    assert (order.status, order.request.quantity) == (OrderStatus.PARTIALLY_FILLED, 8.0)
    fake.fill(second, 1, 11.0)
    [(_, fill)] = broker.poll(fake.now)
    assert (fill.quantity, fill.price) == (1.0, pytest.approx(11.0))

    third = fake.replace(second, qty="4")
    fake.set_now(OPEN_WED + dt.timedelta(minutes=2))
    fake.fill(third, 4, 12.0)
    with capture_logs() as more:
        [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED
    assert (fill.client_order_id, fill.quantity, fill.price) == (
        "run1-20241127-rb-TMF-buy", 4.0, pytest.approx(12.0))
    assert fill.filled_at == fake.now
    assert (order.filled_quantity, order.request.quantity) == (7.0, 7.0)
    assert order.average_price == pytest.approx((2 * 10 + 11 + 4 * 12) / 7)
    assert order.broker_order_id == first  # the bot's order, continued
    assert f"{first} -> {second} -> {third}" in order.status_message
    assert broker.open_order_count() == 0 and broker.poll(fake.now) == []
    assert [e["replaced_by"] for e in replaced_logs(logs + more)] == [second, third]

    # Looked up by its client_order_id (a restart) it reads the same.
    found = broker.find_order("run1-20241127-rb-TMF-buy")
    assert (found.status, found.filled_quantity, found.broker_order_id) == (
        OrderStatus.FILLED, 7.0, first)
    [closed] = [o for o in broker.closed_orders(OPEN_WED - dt.timedelta(days=1))
                if o.request.client_order_id == "run1-20241127-rb-TMF-buy"]
    assert closed.filled_quantity == 7.0


def test_cancel_of_a_replaced_order_cancels_its_replacement(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 10), fake.now)
    new_id = fake.replace(order.broker_order_id, qty="5")
    broker.cancel("run1-20241127-rb-TMF-buy")
    assert fake.order(new_id)["status"] == "canceled"
    [(seen, _)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.CANCELED


def test_a_replacement_that_cannot_be_read_now_fails_the_poll_naming_both_ids(fake, broker):
    """A 500 is not a 404: the poll fails as any failed read does (the job records an
    incident and the next poll tries again), and loses nothing."""
    order = broker.submit(req("TMF", Side.BUY, 10), fake.now)
    new_id = fake.replace(order.broker_order_id, qty="5")
    fake.fill(new_id)
    fake.inject("GET", "/v2/orders/{order_id}", Fault.passthrough(),
                *[Fault.error(500, None, "boom")] * 3)
    with pytest.raises(BrokerError) as caught:
        broker.poll(fake.now)
    assert order.broker_order_id in str(caught.value) and new_id in str(caught.value)
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED and fill.quantity == 5.0


def test_the_fake_refuses_the_replacements_alpaca_refuses(fake, broker):
    """Alpaca changes the quantity of whole-share orders only, and a market order has no
    price to change: the fake answers 422 as Alpaca does, so no test here rests on a
    replacement a user could not make."""
    client = TradingClient(KEY_ID, SECRET, url_override=fake.url)
    fractional = broker.submit(req("TMF", Side.BUY, 2.5), fake.now)
    whole = broker.submit(req("UGL", Side.BUY, 10), fake.now)
    for order_id, change in [
        (fractional.broker_order_id, ReplaceOrderRequest(qty=2)),
        (whole.broker_order_id, ReplaceOrderRequest(limit_price=9.0)),
    ]:
        with pytest.raises(APIError) as refused:
            client.replace_order_by_id(order_id, change)
        assert refused.value.status_code == 422
    with pytest.raises(AssertionError, match="only whole shares"):  # alpaca-py's int refuses it too
        fake.replace(whole.broker_order_id, qty="7.5")
    assert fake.order(whole.broker_order_id)["status"] == "new"  # untouched
    assert fake.order(fake.replace(whole.broker_order_id, qty="7"))["qty"] == "7"
