"""Order tracking under faults: partial failures while releasing queued buys, submits in
doubt, restarts after a crash, and a trade log shared by paper and live runs. Against the
fake Alpaca on 127.0.0.1 through the real alpaca-py client."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.broker.alpaca import AlpacaBroker
from bot.broker.base import AccountInfo
from bot.broker.sequenced import QUEUED, SellsFirst
from bot.clock import SimulatedClock
from bot.daemon.live import build_live
from bot.errors import BotError
from bot.store.tradelog import TradeLog
from bot.types import Order, OrderRequest, OrderStatus, Side
from tests import test_alpaca_broker as broker_tests
from tests import test_daemon_live as daemon_tests
from tests.fakes import Fault
from tests.test_alpaca_broker import req
from tests.test_daemon_live import OPEN_JOB, SETTINGS, bought_before, daemon

# The fixtures of those modules: a fake venue with a broker on it, and a fake venue
# with FRED beside it set up for the daemon.
fake, broker = broker_tests.fake, broker_tests.broker
venue = daemon_tests.venue

UTC = dt.UTC
PREFIX = "diversified_leverage-20241125-rb"


def later(minutes: int) -> dt.datetime:
    return OPEN_JOB + dt.timedelta(minutes=minutes)


def fills_of(log: TradeLog, cid: str):
    fills = log.load_fills(log.run_id)
    return fills[fills["client_order_id"] == cid]


def buy_cids(venue) -> list[str]:
    return [o.data["client_order_id"] for o in venue.orders if o.data["side"] == "buy"]


def crash_after_first_submit(tmp_path, venue, monkeypatch, settings=SETTINGS) -> str:
    """Run the open job until the first order is sent, then die before anything is
    stored (kill -9); returns that order's client_order_id."""
    original = AlpacaBroker.submit

    def dies(self, request, now):
        original(self, request, now)
        raise KeyboardInterrupt("kill -9")

    monkeypatch.setattr(AlpacaBroker, "submit", dies)
    jobs, log, _ = daemon(tmp_path, venue, settings=settings)
    with pytest.raises(KeyboardInterrupt):
        jobs.open_job()
    log.discard()
    monkeypatch.setattr(AlpacaBroker, "submit", original)
    return venue.orders[0].data["client_order_id"]


# --- one trade log, paper and live runs ---------------------------------------------------


def live_daemon(tmp_path, monkeypatch, when: dt.datetime):
    """A live-mode daemon on the trade log the paper daemon of `daemon()` uses."""
    monkeypatch.setenv("BOT_LIVE_CONFIRM", "yes")
    log = TradeLog.open(f"sqlite:///{tmp_path / 'paper.sqlite'}")
    run_id = log.start_run(mode="live", strategy=SETTINGS.strategy.name, config_hash="h",
                           config={}, code_version="t", data_source="alpaca", synthetic=False,
                           started_at=dt.datetime.now(UTC))
    clock = SimulatedClock(when)
    return build_live(SETTINGS, log, run_id, live=True, clock=clock), log


def test_live_daemon_refuses_an_instance_holding_paper_state(tmp_path, venue, monkeypatch):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)  # paper: a sell sent, buys queued, state saved
    log.close()
    posts = len(venue.calls("POST", "/v2/orders"))

    with pytest.raises(BotError, match=r"'diversified_leverage'.*paper.*live"):
        live_daemon(tmp_path, monkeypatch, later(180))
    assert len(venue.calls("POST", "/v2/orders")) == posts
    orders = TradeLog.open(f"sqlite:///{tmp_path / 'paper.sqlite'}").load_orders()
    assert set(orders["status"]) == {"new"}  # the paper orders were left as they were


def test_live_reconcile_never_touches_a_paper_runs_orders(tmp_path, venue, monkeypatch):
    paper = TradeLog.open(f"sqlite:///{tmp_path / 'paper.sqlite'}")
    paper.start_run(mode="paper", strategy=SETTINGS.strategy.name, config_hash="h", config={},
                    code_version="t", data_source="alpaca", synthetic=False,
                    started_at=OPEN_JOB)
    sell = OrderRequest(f"{PREFIX}-TQQQ-sell", PREFIX, "TQQQ", Side.SELL, 10.0, "t", 50.0)
    buy = OrderRequest(f"{PREFIX}-UGL-buy", PREFIX, "UGL", Side.BUY, 10.0, "t", 30.0)
    paper.order(Order(sell, OrderStatus.NEW, OPEN_JOB, "paper-order-id"))
    paper.order(Order(buy, OrderStatus.NEW, OPEN_JOB, None, status_message=QUEUED))
    paper.close()  # no strategy state saved: only the runs' modes tell them apart

    jobs, log = live_daemon(tmp_path, monkeypatch, later(180))  # the live account is empty
    assert jobs.ctx.broker.open_order_count() == 0  # the paper buy is not queued here
    assert jobs.run("poll", jobs.poll_job)
    assert venue.calls("POST", "/v2/orders") == []
    rows = log.load_orders().set_index("client_order_id")
    assert rows.loc[sell.client_order_id, "status"] == "new"  # not "vanished"
    assert rows.loc[buy.client_order_id, "status_message"] == QUEUED


# --- releasing the queued buys --------------------------------------------------------------


def test_a_failed_release_keeps_the_fills_polled_before_it(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    venue.fill_open()
    venue.inject("GET", "/v2/account", *[Fault.error(503, message="unavailable")] * 4)
    clock.set(later(2))
    assert jobs.run("poll", jobs.poll_job)
    assert log.load_orders().set_index("client_order_id").loc[sell, "status"] == "filled"
    assert len(fills_of(log, sell)) == 1
    assert buy_cids(venue) == []  # no buy sent: they wait for the next poll

    clock.set(later(4))
    assert jobs.run("poll", jobs.poll_job)
    assert len(buy_cids(venue)) == 4
    log.close()


class MarginAccount:
    """A LiveBroker stub: a margin account whose buying power is twice its cash."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[OrderRequest] = []
        self.fail_on = fail_on

    def open_orders(self) -> list[Order]:
        return []

    def followed_orders(self) -> list[Order]:
        return []

    def open_order_count(self) -> int:
        return 0

    def refresh(self) -> None:
        pass

    def account(self) -> AccountInfo:
        return AccountInfo("PA1", 40_000.0, 40_000.0, 80_000.0, "ACTIVE", True)

    def cash(self) -> float:
        return 40_000.0

    def poll(self, now: dt.datetime) -> list:
        return []

    def take_reports(self) -> list:
        return []

    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        if request.symbol == self.fail_on:
            raise BotError("order not placed after 3 attempts")
        self.sent.append(request)
        return Order(request, OrderStatus.NEW, now, f"id-{request.symbol}")


def queued_buys(*symbols: str) -> list[Order]:
    return [
        Order(OrderRequest(f"x-{s}-buy", "x", s, Side.BUY, 300.0, "t", 100.0),
              OrderStatus.NEW, OPEN_JOB, None, status_message=QUEUED)
        for s in symbols
    ]


def test_released_buys_are_budgeted_on_cash_never_on_margin():
    inner = MarginAccount()
    broker = SellsFirst(inner)
    broker.restore(queued_buys("UPRO", "UGL"))  # $60k of buys, $40k of cash
    broker.poll(OPEN_JOB)
    spent = sum(r.quantity * r.reference_price for r in inner.sent)
    assert spent == pytest.approx(40_000.0 * 0.995)


def test_a_release_failing_part_way_sends_no_buy_twice_and_records_an_incident():
    inner = MarginAccount(fail_on="UGL")
    incidents = []
    broker = SellsFirst(inner, incident=lambda *args: incidents.append(args))
    broker.restore(queued_buys("UPRO", "UGL", "DIG"))
    [(placed, fill)] = broker.poll(OPEN_JOB)  # UPRO placed, UGL failed: reported anyway
    assert (placed.broker_order_id, fill) == ("id-UPRO", None)
    assert [kind for _, kind, _, _ in incidents] == ["release"]
    assert "order not placed" in incidents[0][2]
    inner.fail_on = None
    broker.poll(OPEN_JOB)
    assert [r.symbol for r in inner.sent] == ["UPRO", "UGL", "DIG"]
    assert broker.open_order_count() == 0


def test_a_buy_placed_before_a_failed_release_is_recorded_once(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    venue.fill_open()
    # the 1st buy is placed, the 2nd fails every attempt (never reaches the venue)
    venue.inject("POST", "/v2/orders", Fault.passthrough(),
                 *[Fault.error(503, message="unavailable")] * 4)
    clock.set(later(2))
    jobs.run("poll", jobs.poll_job)
    [first] = buy_cids(venue)
    venue.fill(first)
    for minutes in (4, 6):
        clock.set(later(minutes))
        assert jobs.run("poll", jobs.poll_job)
        venue.fill_open()
    clock.set(later(8))
    assert jobs.run("poll", jobs.poll_job)

    posts = [r.body["client_order_id"] for r in venue.calls("POST", "/v2/orders")]
    assert posts.count(first) == 1
    assert len(fills_of(log, first)) == 1
    assert fills_of(log, first)["quantity"].sum() == pytest.approx(
        float(venue.order(first)["filled_qty"]))
    assert set(log.load_orders()["status"]) == {"filled"}
    log.close()


def test_an_order_adopted_again_reports_no_fill_twice(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    fake.fill(order.broker_order_id, 3, 10.0)
    [(_, fill)] = broker.poll(fake.now)
    assert fill.quantity == 3.0
    again = broker.submit(req("TMF", Side.BUY, 7), fake.now)  # 422 duplicate: adopted
    assert again.broker_order_id == order.broker_order_id
    fake.fill(order.broker_order_id, 4, 11.0)
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED
    assert (fill.quantity, fill.price) == (4.0, pytest.approx(11.0))
    assert broker.submit(req("TMF", Side.BUY, 7), fake.now).status is OrderStatus.FILLED
    assert broker.poll(fake.now) == []  # final and fully reported: nothing again


# --- restart after a crash ----------------------------------------------------------------


def test_restart_records_the_fills_an_adopted_order_had_while_down(tmp_path, venue, monkeypatch):
    bought_before(venue, "TQQQ", 60_000.0)
    cid = crash_after_first_submit(tmp_path, venue, monkeypatch)
    qty = float(venue.order(cid)["qty"])
    venue.fill(cid, qty=round(qty * 0.6, 6))  # 60 % filled while the daemon is down

    jobs, log, clock = daemon(tmp_path, venue, later(3))
    venue.fill(cid)
    clock.set(later(5))
    assert jobs.run("poll", jobs.poll_job)
    row = log.load_orders().set_index("client_order_id").loc[cid]
    assert row["status"] == "filled"
    assert fills_of(log, cid)["quantity"].sum() == pytest.approx(qty)
    log.close()


def test_restart_records_an_order_that_filled_completely_while_down(tmp_path, venue, monkeypatch):
    bought_before(venue, "TQQQ", 60_000.0)
    cid = crash_after_first_submit(tmp_path, venue, monkeypatch)
    venue.fill(cid)

    jobs, log, clock = daemon(tmp_path, venue, later(3))
    incidents = log.load_incidents()["message"].tolist()
    assert any(cid in m and "adopted" in m for m in incidents), incidents
    # its fill is recorded by the restart itself, before any job runs
    assert jobs.ctx.broker.open_order_count() == 0
    row = log.load_orders().set_index("client_order_id").loc[cid]
    assert (row["status"], row["filled_quantity"]) == ("filled", float(venue.order(cid)["qty"]))
    fills = fills_of(log, cid)
    assert fills["quantity"].sum() == pytest.approx(float(venue.order(cid)["qty"]))
    log.close()


# --- a submit in doubt ------------------------------------------------------------------------


def test_an_unconfirmed_submit_is_logged_tracked_and_resolved(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    venue.inject("POST", "/v2/orders", Fault.error(500, process=True))  # created, answer lost
    venue.inject("GET", "/v2/orders:by_client_order_id", *[Fault.error(500)] * 4)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    row = log.load_orders().set_index("client_order_id").loc[sell]
    assert row["status"] == "new" and row["status_message"].startswith("unconfirmed")
    assert jobs.ctx.broker.inner.open_order_count() == 1
    assert [o.data["side"] for o in venue.orders] == ["sell"]  # buys wait for it

    venue.fill_open()
    clock.set(later(2))
    assert jobs.run("poll", jobs.poll_job)
    row = log.load_orders().set_index("client_order_id").loc[sell]
    assert row["status"] == "filled" and row["broker_order_id"] == venue.order(sell)["id"]
    assert len(fills_of(log, sell)) == 1
    assert len(buy_cids(venue)) == 4  # released once the sell was known to be filled
    log.close()


def test_buys_wait_for_an_unconfirmed_sell_the_venue_does_not_list(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    venue.inject("POST", "/v2/orders", Fault.error(500))  # the sell is not created
    venue.inject("GET", "/v2/orders:by_client_order_id", *[Fault.error(500)] * 4)
    assert jobs.run("open", jobs.open_job)
    assert venue.orders == []  # no buy went out beside a sell in doubt
    orders = log.load_orders()
    assert set(orders.loc[orders["side"] == "buy", "status_message"]) == {QUEUED}

    clock.set(later(2))
    assert jobs.run("poll", jobs.poll_job)  # the lookup answers 404: the sell never existed
    rows = log.load_orders().set_index("client_order_id")
    sell = rows.index[rows["side"] == "sell"][0]
    assert rows.loc[sell, "status"] == "rejected"
    assert "not placed" in rows.loc[sell, "status_message"]
    log.close()


def test_an_unconfirmed_order_the_venue_never_got_is_closed(fake, broker):
    fake.inject("POST", "/v2/orders", Fault.error(500, None, "internal error"))  # not created
    fake.inject("GET", "/v2/orders:by_client_order_id", *[Fault.error(503, None, "down")] * 3)
    order = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert order.status is OrderStatus.NEW and broker.open_order_count() == 1
    assert broker.poll(fake.now) == []  # 404, but the venue may lag its own submit
    assert broker.open_order_count() == 1
    [(seen, fill)] = broker.poll(fake.now + dt.timedelta(minutes=2))  # still 404: never placed
    assert fill is None and seen.status is OrderStatus.REJECTED
    assert "not placed" in seen.status_message
    assert broker.open_order_count() == 0
    assert len(fake.calls("POST", "/v2/orders")) == 1


def test_buys_with_no_sell_to_wait_for_are_cut_to_the_cash_left(fake, broker):
    """A first allocation: no sell, so the buys go out at once. Planned on the whole
    cash at slightly stale prices, the last one overshot and the venue refused it (403);
    each is now cut to the cash left, less the 0.5% buffer."""
    sequenced = SellsFirst(broker)
    fake.prices = {"SPY": 500.0, "TMF": 10.0, "UGL": 40.0}
    plan = {"SPY": 100.0, "TMF": 2_000.0, "UGL": 750.01}  # 50,000 + 20,000 + 30,000.40
    placed = [
        sequenced.submit(req(s, Side.BUY, q, ref=fake.prices[s]), OPEN_JOB) for s, q in plan.items()
    ]
    assert OrderStatus.REJECTED not in [o.status for o in placed]
    assert placed[-1].request.quantity < plan["UGL"]
    assert float(fake.buying_power()) >= 0.0


def test_buys_sent_at_once_share_one_budget_on_a_margin_account():
    """On margin the cash does not drop while buys are open: re-reading it for each buy
    let a rebalance's buys add up to more than the cash."""
    inner = MarginAccount()  # 40k cash, 80k buying power, cash() stays 40k
    sequenced = SellsFirst(inner)
    for symbol in ("UPRO", "UGL", "DIG"):  # 3 x 30k planned
        sequenced.submit(OrderRequest(f"x-{symbol}-buy", "x", symbol, Side.BUY, 300.0, "t", 100.0),
                         OPEN_JOB)
    spent = sum(r.quantity * r.reference_price for r in inner.sent)
    assert spent == pytest.approx(40_000.0 * 0.995)


def test_a_buy_cut_below_a_dollar_or_a_share_is_not_sent():
    """Alpaca refuses a fractional buy worth under $1, and any fractional quantity of a
    config that trades whole shares: a buy cut to the cash left honours both."""
    inner = MarginAccount()  # 40k cash
    sequenced = SellsFirst(inner)
    first = OrderRequest("x-UPRO-buy", "x", "UPRO", Side.BUY, 397.998, "t", 100.0)  # 39,799.80
    tiny = OrderRequest("x-UGL-buy", "x", "UGL", Side.BUY, 10.0, "t", 100.0)  # 0.20 left
    sequenced.submit(first, OPEN_JOB)
    order = sequenced.submit(tiny, OPEN_JOB)
    assert [r.symbol for r in inner.sent] == ["UPRO"]
    assert order.status is OrderStatus.REJECTED and order.status_message == "no cash left after the sells"

    whole = MarginAccount()
    sequenced = SellsFirst(whole, whole_shares=True)
    sequenced.submit(OrderRequest("y-UPRO-buy", "y", "UPRO", Side.BUY, 500.0, "t", 99.0), OPEN_JOB)
    assert [r.quantity for r in whole.sent] == [402]  # 39,800 / 99 = 402.02, floored


def test_a_resolved_order_loses_its_unconfirmed_or_queued_message(fake, broker):
    from bot.broker.alpaca import _copy_state

    confirmed = Order(req("SPY", Side.BUY, 1.0), OrderStatus.FILLED, OPEN_JOB, "b-1")
    ours = Order(req("SPY", Side.BUY, 1.0), OrderStatus.NEW, OPEN_JOB, None,
                 status_message="unconfirmed: timeout")
    _copy_state(confirmed, ours)
    assert ours.status_message == ""  # "" clears it in the trade log; None would keep it
    _copy_state(confirmed, ours)
    assert ours.status_message == ""  # stable: no change to report on the next poll
    released = Order(req("SPY", Side.BUY, 1.0), OrderStatus.NEW, OPEN_JOB, "b-2",
                     status_message="sent after the sells filled")
    _copy_state(confirmed, released)
    assert released.status_message == "sent after the sells filled"


def test_polls_report_only_real_changes(fake, broker):
    """Comparing the venue's message (None) with ours ("sent after the sells filled")
    reported the released buy again on every poll, each an order event in the log."""
    fake.hold("SPY", 10, 450.0)
    sequenced = SellsFirst(broker)
    sell = sequenced.submit(req("SPY", Side.SELL, 10, ref=500.0), OPEN_JOB)
    sequenced.submit(req("TMF", Side.BUY, 5, ref=10.0), OPEN_JOB)
    fake.fill(sell.broker_order_id)
    first = sequenced.poll(OPEN_JOB)
    assert [(o.request.symbol, o.status_message) for o, _ in first][-1] == (
        "TMF", "sent after the sells filled"
    )
    assert sequenced.poll(OPEN_JOB) == [] and sequenced.poll(OPEN_JOB) == []


def test_a_buy_refused_for_buying_power_is_sent_again_smaller(fake, broker):
    """A venue that values a market buy 4% above its price (Alpaca's older rule; the
    current docs say the ask) refused the last buy of a first allocation sized on the
    whole cash. It is sent once more, cut to the buying power the venue reports less 5%,
    and the refusal is recorded; the fake's answer names what it counted."""
    fake.market_buy_collar = 0.04
    incidents: list[tuple] = []
    sequenced = SellsFirst(broker, incident=lambda *args: incidents.append(args))
    plan = {"SPY": 100.0, "TMF": 2_000.0, "UGL": 740.0}  # 50,000 + 20,000 + 29,600 of 100,000
    placed = [
        sequenced.submit(req(s, Side.BUY, q, ref=fake.prices[s]), OPEN_JOB) for s, q in plan.items()
    ]
    assert OrderStatus.REJECTED not in [o.status for o in placed]
    last = placed[-1]
    assert last.request.quantity < plan["UGL"]
    assert "to fit the buying power the venue reported" in last.status_message
    assert float(fake.buying_power()) >= 0.0
    (incident,) = incidents
    assert incident[1] == "buying_power"
    assert "insufficient buying power (cost basis" in incident[2]
    posts = fake.calls("POST", "/v2/orders")
    assert len(posts) == 4  # three buys, the last one twice


def test_a_buy_refused_for_buying_power_is_sent_again_only_once(fake, broker):
    """A venue valuing buys 10% above the price refuses the smaller buy too: it stays
    refused (rejected in the log, the next rebalance buys what is missing), no third try."""
    from decimal import Decimal

    fake.market_buy_collar = 0.10
    fake.cash = Decimal(1_000)
    order = SellsFirst(broker).submit(req("SPY", Side.BUY, 2.0, ref=500.0), OPEN_JOB)
    assert order.status is OrderStatus.REJECTED
    assert "insufficient buying power" in order.status_message
    assert [float(c.body["qty"]) for c in fake.calls("POST", "/v2/orders")] == [1.99, 1.9]


def test_a_duplicate_id_refusal_after_a_5xx_follows_the_order_it_proves(fake, broker):
    """The first POST created the order but answered 500, and the lookup by id lagged
    (404). The second POST got Alpaca's 422 "client_order_id must be unique", and the
    lookup lagged again: the order exists, so it is followed as unconfirmed (its fill
    recorded once the venue shows it), never reported as rejected and forgotten."""
    fake.inject("POST", "/v2/orders", Fault.error(500, None, "internal error", process=True))
    fake.inject("GET", "/v2/orders:by_client_order_id",
                *[Fault.error(404, 40410000, "order not found")] * 2)
    order = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert order.status is OrderStatus.NEW and "client_order_id must be unique" in order.status_message
    assert fake.order_count() == 1 and broker.open_order_count() == 1
    fake.fill(fake.orders[0].data["client_order_id"])
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED and fill is not None and fill.quantity == 5


def test_an_order_the_venue_no_longer_knows_is_closed_and_the_others_still_polled(fake, broker):
    """One order 404s by its id and by its client_order_id: it used to fail every poll
    (and the open and close jobs after it) until a restart; it is closed as vanished,
    and the fills of the others are still reported."""
    gone = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    kept = broker.submit(req("UGL", Side.BUY, 5), fake.now)
    fake.fill(kept.broker_order_id)
    fake.inject("GET", "/v2/orders/{order_id}", Fault.error(404, 40410000, "order not found"))
    fake.inject("GET", "/v2/orders:by_client_order_id", Fault.error(404, 40410000, "order not found"))
    seen = {o.request.symbol: (o, f) for o, f in broker.poll(fake.now)}
    assert seen["TMF"][0].status is OrderStatus.CANCELED and "vanished" in seen["TMF"][0].status_message
    assert seen["UGL"][0].status is OrderStatus.FILLED and seen["UGL"][1] is not None
    assert broker.open_order_count() == 0
    assert gone.broker_order_id is not None


def test_a_release_that_runs_into_the_close_keeps_the_rest_queued():
    """The first buy's sends took the session's last minutes (429s): the buys after it
    are not sent into the close (they would fill at the next open's prices); they stay
    queued for the next session's first poll."""
    inner = MarginAccount()
    now = [OPEN_JOB]

    def slow_submit(request, at, submit=inner.submit):
        now[0] += dt.timedelta(hours=7)  # the retries ran past the close
        return submit(request, at)

    inner.submit = slow_submit
    broker = SellsFirst(inner, clock=lambda: now[0],
                        market_open=lambda t: t < OPEN_JOB + dt.timedelta(hours=6))
    broker.restore(queued_buys("UPRO", "UGL", "DIG"))
    broker.poll(OPEN_JOB)
    assert [r.symbol for r in inner.sent] == ["UPRO"]
    assert broker.open_order_count() == 2  # UGL and DIG still queued
