"""AlpacaBroker against a fake Alpaca speaking HTTP on 127.0.0.1, through the real
alpaca-py TradingClient."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from bot.broker.alpaca import AlpacaBroker, SubmitUnconfirmedError
from bot.broker.alpaca_orders import map_status
from bot.broker.base import BrokerError
from bot.config import RebalanceSettings
from bot.net import RetryPolicy
from bot.planner import plan_orders
from bot.secrets import Credentials
from bot.types import OrderRequest, OrderStatus, Side
from tests.fakes.alpaca_server import KEY_ID, SECRET, FakeAlpaca, FakeSession, Fault

UTC = dt.UTC
OPEN_WED = dt.datetime(2024, 11, 27, 15, 0, tzinfo=UTC)  # Wednesday 10:00 New York
THANKSGIVING = dt.datetime(2024, 11, 28, 15, 0, tzinfo=UTC)  # market closed all day
FRIDAY_OPEN = dt.datetime(2024, 11, 29, 14, 30, tzinfo=UTC)  # 09:30 New York
FRIDAY_EARLY_CLOSE = dt.datetime(2024, 11, 29, 18, 0, tzinfo=UTC)  # 13:00 New York


@pytest.fixture
def fake():
    server = FakeAlpaca(cash=100_000, now=OPEN_WED)
    server.prices = {"SPY": 500.0, "TMF": 10.0, "UGL": 40.0}
    server.start()
    yield server
    server.stop()


def policy(sleeps, *, timeout: float = 5.0, attempts: int = 3) -> RetryPolicy:
    """Deterministic backoff (jitter factor 0.75), sleeps recorded instead of taken."""
    return RetryPolicy(
        attempts=attempts,
        timeout=timeout,
        base_delay=0.1,
        max_delay=1.0,
        jitter=0.5,
        sleep=sleeps.append,
        rng=lambda: 0.5,
    )


@pytest.fixture
def broker(fake, sleeps):
    return AlpacaBroker.connect(
        Credentials(KEY_ID, SECRET), base_url=fake.url, policy=policy(sleeps)
    )


def req(
    symbol: str, side: Side, qty: float, cid: str | None = None, ref: float = 0.0
) -> OrderRequest:
    cid = cid or f"run1-20241127-rb-{symbol}-{side.value}"
    return OrderRequest(cid, "run1-20241127-rb", symbol, side, qty, "test", ref)


# --- snapshots ------------------------------------------------------------------------


def test_refresh_reads_account_and_positions(fake, broker):
    fake.hold("SPY", 10, 450.0)
    fake.cash -= 4500
    broker.refresh()
    assert broker.cash() == pytest.approx(95_500)
    assert broker.holdings(("TMF", "SPY")).tolist() == [0.0, 10.0]
    info = broker.account()
    assert info.account_number == "PA3FAKE00001"
    assert info.equity == pytest.approx(95_500 + 10 * 500)
    assert info.status == "ACTIVE" and info.paper is True


def test_cash_excludes_what_open_buy_orders_reserve(fake, broker):
    broker.submit(req("TMF", Side.BUY, 1000), fake.now)
    broker.refresh()
    assert broker.account().cash == pytest.approx(100_000)
    assert broker.cash() == pytest.approx(100_000 - 1000 * 10)


def test_cash_excludes_open_buys_on_a_margin_account_too(fake, broker):
    """Alpaca opens margin accounts: buying power 2-4x the cash, and cash that does not
    drop while a buy is open. The bot deducts its own open buys, or a second batch of
    buys would spend the same cash again, on margin."""
    broker.submit(req("TMF", Side.BUY, 1000, ref=10.0), fake.now)
    fake.account_patch = {"buying_power": "400000", "non_marginable_buying_power": "100000",
                          "multiplier": "4"}
    broker.refresh()
    assert broker.account().cash == pytest.approx(100_000)
    assert broker.cash() == pytest.approx(100_000 - 1000 * 10)
    fake.account_patch = {"buying_power": "5000"}  # and never more than the buying power
    broker.refresh()
    assert broker.cash() == pytest.approx(5000)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"equity": "12,5O0.00"}, "account.equity"),
        ({"cash": None}, "account.cash"),
        ({"buying_power": "NaN"}, "account.buying_power"),
        ({"status": "BOGUS"}, "status"),
        ({"account_number": None}, "account_number"),
    ],
)
def test_malformed_account_field_is_a_broker_error_naming_it(fake, broker, patch, field):
    fake.account_patch = patch
    with pytest.raises(BrokerError, match=field) as caught:
        broker.account()
    assert "pydantic" not in str(caught.value).lower()
    assert "validation error" not in str(caught.value).lower()


def test_malformed_json_is_a_broker_error(fake, broker):
    fake.inject("GET", "/v2/account", Fault.malformed())
    with pytest.raises(BrokerError, match="malformed JSON"):
        broker.account()


# --- a full rebalance -----------------------------------------------------------------


def test_rebalance_sells_fill_before_buys(fake, broker):
    """The planner's orders at the broker level: sells submitted and polled to filled,
    then the buys, which only fit in the buying power once the sells have paid."""
    fake.hold("SPY", 100, 450.0)
    fake.cash -= 45_000 + 5_000  # $50,000 cash, equity $100,000
    broker.refresh()
    symbols = ("SPY", "TMF", "UGL")
    prices = np.array([500.0, 10.0, 40.0])
    equity = broker.account().equity
    orders = plan_orders(
        "run1-20241127-rb",
        symbols,
        np.array([0.3, 0.4, 0.3]),
        broker.holdings(symbols),
        prices,
        equity,
        RebalanceSettings(fractional=False, min_trade_notional=0.0),
        "period",
    )
    sells = [o for o in orders if o.side is Side.SELL]
    buys = [o for o in orders if o.side is Side.BUY]
    assert [(o.symbol, o.quantity) for o in sells] == [("SPY", 40)]

    submitted = [broker.submit(o, fake.now) for o in sells]
    assert [o.status for o in submitted] == [OrderStatus.NEW]
    assert broker.open_order_count() == 1
    fake.fill_open()
    events = broker.poll(fake.now)
    assert [(o.request.symbol, o.status, f.quantity, f.price) for o, f in events] == [
        ("SPY", OrderStatus.FILLED, 40.0, 500.0)
    ]
    assert broker.open_order_count() == 0

    broker.refresh()
    assert broker.cash() == pytest.approx(70_000)
    placed = [broker.submit(o, fake.now) for o in buys]
    assert [o.status for o in placed] == [OrderStatus.NEW, OrderStatus.NEW]
    fake.fill_open()
    fills = {o.request.symbol: f.quantity for o, f in broker.poll(fake.now)}
    assert fills == {"TMF": 4000.0, "UGL": 750.0}
    broker.refresh()
    assert broker.holdings(symbols).tolist() == [60.0, 4000.0, 750.0]
    assert broker.cash() == pytest.approx(0.0)
    assert broker.poll(fake.now) == []


def test_partial_fills_give_one_fill_per_increase(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 10, ref=10.0), fake.now)
    assert broker.poll(fake.now) == []  # nothing changed yet

    steps = [(3, 10.0), (2, 11.5), (5, 12.0)]
    seen = []
    for minutes, (qty, price) in enumerate(steps, start=1):
        fake.set_now(OPEN_WED + dt.timedelta(minutes=minutes))
        fake.fill(order.broker_order_id, qty, price)
        [(polled, fill)] = broker.poll(fake.now)
        assert polled is order  # the caller's object is kept current
        seen.append((fill.quantity, fill.price, fill.filled_at, polled.status))
    assert seen == [
        (
            3.0,
            pytest.approx(10.0),
            OPEN_WED + dt.timedelta(minutes=1),
            OrderStatus.PARTIALLY_FILLED,
        ),
        (
            2.0,
            pytest.approx(11.5),
            OPEN_WED + dt.timedelta(minutes=2),
            OrderStatus.PARTIALLY_FILLED,
        ),
        (5.0, pytest.approx(12.0), OPEN_WED + dt.timedelta(minutes=3), OrderStatus.FILLED),
    ]
    assert all(f[2].tzinfo is UTC for f in seen)
    assert order.filled_quantity == 10.0
    assert order.average_price == pytest.approx((3 * 10 + 2 * 11.5 + 5 * 12) / 10)
    assert broker.open_order_count() == 0 and broker.poll(fake.now) == []


def test_slippage_is_the_signed_cost_against_the_sizing_price(fake, broker):
    """A buy filled 1% below the price it was sized on recorded a slippage cost of +10 on
    100 shares: every good fill counted as a cost in the report's transaction costs."""
    fake.hold("SPY", 200, 500.0)
    fills = {}
    for side, ref, price in ((Side.BUY, 10.0, 9.9), (Side.SELL, 500.0, 499.0)):
        symbol = "TMF" if side is Side.BUY else "SPY"
        order = broker.submit(req(symbol, side, 100, ref=ref), fake.now)
        fake.fill(order.broker_order_id, 100, price)
        [(_, fill)] = broker.poll(fake.now)
        fills[side] = fill.slippage_cost
    assert fills[Side.BUY] == pytest.approx(-10.0)  # bought cheaper than sized: a gain
    assert fills[Side.SELL] == pytest.approx(100.0)  # sold 1 below: a cost


def test_fractional_quantity_is_a_day_market_order_rounded_to_9_decimals(fake, broker):
    order = broker.submit(req("SPY", Side.BUY, 1.23456789049), fake.now)
    [call] = fake.calls("POST", "/v2/orders")
    assert call.body["qty"] == 1.23456789
    assert call.body["type"] == "market" and call.body["time_in_force"] == "day"
    assert call.body["client_order_id"] == "run1-20241127-rb-SPY-buy"
    assert order.status is OrderStatus.NEW


# --- faults on submit -------------------------------------------------------------------


def test_429_then_success(fake, broker, sleeps):
    fake.inject("POST", "/v2/orders", Fault.error(429, None, "too many requests."))
    order = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert order.status is OrderStatus.NEW
    assert len(fake.calls("POST", "/v2/orders")) == 2
    assert len(fake.calls("GET", "/v2/orders:by_client_order_id")) == 1  # looked up first
    assert fake.order_count() == 1
    assert sleeps == [pytest.approx(0.075)]  # 0.1 * 2**0 * (1 - 0.5 * 0.5)


def test_retry_after_header_is_honoured(fake, broker, sleeps):
    fake.inject("GET", "/v2/clock", Fault.error(429, None, "slow down", retry_after=0.5))
    assert broker.clock().is_open
    assert sleeps == [0.5]


def test_500_on_submit_after_the_order_was_created_adopts_it(fake, broker):
    fake.inject("POST", "/v2/orders", Fault.error(500, None, "internal error", process=True))
    order = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert fake.order_count() == 1
    assert len(fake.calls("POST", "/v2/orders")) == 1
    assert order.broker_order_id == fake.order("run1-20241127-rb-TMF-buy")["id"]
    assert order.status is OrderStatus.NEW
    fake.fill_open()
    [(_, fill)] = broker.poll(fake.now)
    assert fill.quantity == 5.0


def test_timeout_on_submit_looks_the_order_up_and_sends_no_duplicate(fake, sleeps):
    broker = AlpacaBroker.connect(
        Credentials(KEY_ID, SECRET), base_url=fake.url, policy=policy(sleeps, timeout=0.3)
    )
    fake.inject("POST", "/v2/orders", Fault.slow(30))  # created, answer held back
    order = broker.submit(req("UGL", Side.BUY, 2), fake.now)
    assert order.status is OrderStatus.NEW and order.broker_order_id
    assert fake.order_count() == 1
    assert len(fake.calls("POST", "/v2/orders")) == 1


def test_timeout_before_the_order_exists_retries_the_submit(fake, sleeps):
    broker = AlpacaBroker.connect(
        Credentials(KEY_ID, SECRET), base_url=fake.url, policy=policy(sleeps, timeout=0.3)
    )
    fake.inject("POST", "/v2/orders", Fault.slow(30, process=False))
    order = broker.submit(req("UGL", Side.BUY, 2), fake.now)
    assert order.status is OrderStatus.NEW
    assert fake.order_count() == 1
    assert len(fake.calls("POST", "/v2/orders")) == 2
    assert len(sleeps) == 1


def test_submit_gives_up_within_the_bound(fake, broker):
    fake.inject("POST", "/v2/orders", *[Fault.error(503, None, "unavailable")] * 3)
    with pytest.raises(BrokerError, match="not placed after 3 attempts") as caught:
        broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert not isinstance(caught.value, SubmitUnconfirmedError)
    assert fake.order_count() == 0
    assert len(fake.calls("POST", "/v2/orders")) == 3
    assert broker.open_order_count() == 0


def test_unanswerable_lookup_leaves_the_order_unconfirmed(fake, broker):
    fake.inject("POST", "/v2/orders", Fault.error(500, None, "internal error", process=True))
    fake.inject("GET", "/v2/orders:by_client_order_id", *[Fault.error(503, None, "down")] * 3)
    order = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert (order.status, order.broker_order_id) == (OrderStatus.NEW, None)
    assert order.status_message.startswith("unconfirmed: order run1-20241127-rb-TMF-buy")
    assert broker.open_order_count() == 1  # outstanding until a poll finds it
    assert len(fake.calls("POST", "/v2/orders")) == 1  # never re-sent blindly


def test_malformed_answer_to_submit_is_resolved_by_lookup(fake, broker):
    fake.inject("POST", "/v2/orders", Fault.malformed(process=True))
    order = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert order.status is OrderStatus.NEW and fake.order_count() == 1


def test_duplicate_client_order_id_adopts_the_existing_order(fake, broker):
    first = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    again = broker.submit(req("TMF", Side.BUY, 5), fake.now)
    assert again.broker_order_id == first.broker_order_id
    assert fake.order_count() == 1


def test_sdk_retry_is_off_and_ours_is_bounded(fake, broker, sleeps):
    fake.inject("GET", "/v2/account", *[Fault.error(504, None, "gateway timeout")] * 5)
    with pytest.raises(BrokerError, match="504"):
        broker.account()
    assert len(fake.calls("GET", "/v2/account")) == 3  # our 3 attempts, no SDK extra
    assert sleeps == [pytest.approx(0.075), pytest.approx(0.15)]


# --- rejections -------------------------------------------------------------------------


def test_insufficient_buying_power_is_a_rejected_order(fake, broker):
    order = broker.submit(req("SPY", Side.BUY, 1000), fake.now)
    assert order.status is OrderStatus.REJECTED
    assert order.status_message == (  # with what the venue counted, as Alpaca answers
        "403 40310000: insufficient buying power (cost basis 500000, buying power 100000)"
    )
    assert order.broker_order_id is None
    assert fake.order_count() == 0 and broker.open_order_count() == 0


def test_selling_more_than_held_is_rejected_with_alpacas_message(fake, broker):
    fake.hold("SPY", 3, 400.0)
    order = broker.submit(req("SPY", Side.SELL, 5), fake.now)
    assert order.status is OrderStatus.REJECTED
    assert order.status_message.startswith("403 40310000: insufficient qty available")


def test_validation_error_is_a_rejected_order(fake, broker):
    order = broker.submit(req("NOPE", Side.BUY, 1), fake.now)
    assert order.status is OrderStatus.REJECTED
    assert order.status_message == '422 40010001: asset "NOPE" not found'


def test_alpaca_refuses_fractions_of_a_whole_share_asset_and_any_order_of_an_inactive_one(
    fake, broker
):
    """The fake refuses what Alpaca refuses, so a test that trades such an asset cannot
    pass on orders the venue would reject: a fraction of a whole-share asset, and any
    order for one it does not trade. Whole shares of the first still go through."""
    fake.not_fractionable, fake.not_tradable = {"TMF"}, {"UGL"}
    order = broker.submit(req("TMF", Side.BUY, 2.5), fake.now)
    assert order.status is OrderStatus.REJECTED
    assert order.status_message == '422 40010001: asset "TMF" is not fractionable'
    assert broker.submit(req("TMF", Side.BUY, 2, cid="run1-whole-TMF-buy"), fake.now).status \
        is not OrderStatus.REJECTED
    order = broker.submit(req("UGL", Side.BUY, 1), fake.now)
    assert order.status is OrderStatus.REJECTED
    assert order.status_message == '422 40010001: asset "UGL" is not tradable'
    assert fake.order_count() == 1


def test_bad_keys_raise_instead_of_rejecting(fake, sleeps):
    broker = AlpacaBroker.connect(
        Credentials(KEY_ID, "wrong-secret-000000"), base_url=fake.url, policy=policy(sleeps)
    )
    with pytest.raises(BrokerError, match="403.*check the API keys"):
        broker.submit(req("TMF", Side.BUY, 1), fake.now)
    with pytest.raises(BrokerError, match="check the API keys"):
        broker.refresh()


# --- market closed, cancel, expiry ------------------------------------------------------


def test_order_sent_while_closed_stays_accepted_then_fills(fake, broker):
    fake.set_now(THANKSGIVING)
    assert broker.clock().is_open is False
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    assert order.status is OrderStatus.ACCEPTED
    assert broker.poll(fake.now) == []

    fake.set_now(FRIDAY_OPEN)  # routed at the open
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.NEW and fill is None
    fake.fill(order.broker_order_id, price=10.25)
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED and (fill.quantity, fill.price) == (7.0, 10.25)


def test_order_sent_while_closed_can_be_rejected_later(fake, broker):
    fake.set_now(THANKSGIVING)
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    fake.set_status(order.broker_order_id, "rejected")
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.REJECTED and fill is None
    assert broker.open_order_count() == 0


def test_unfilled_day_order_expires_at_the_early_close(fake, broker):
    fake.set_now(FRIDAY_OPEN)
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    fake.fill(order.broker_order_id, 2)
    fake.set_now(FRIDAY_EARLY_CLOSE)
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.EXPIRED
    assert fill.quantity == 2.0  # the part that filled before expiry is still reported


def test_cancel(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    broker.cancel(order.request.client_order_id)
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.CANCELED and fill is None
    broker.cancel(order.request.client_order_id)  # already final: nothing to do
    assert len(fake.calls("DELETE", "/v2/orders/{order_id}")) == 1
    with pytest.raises(BrokerError, match="no such order"):
        broker.cancel("never-sent")


def test_cancel_racing_a_fill_is_not_an_error(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    fill_first = Fault.first(lambda: fake.fill(order.broker_order_id))
    fake.inject("DELETE", "/v2/orders/{order_id}", fill_first)  # 422: already filled
    broker.cancel(order.request.client_order_id)
    assert len(fake.calls("DELETE", "/v2/orders/{order_id}")) == 1
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED and fill.quantity == 7.0


def test_cancel_under_way_is_not_repeated(fake, broker):
    fake.cancel_leaves_pending = True
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    broker.cancel(order.request.client_order_id)
    broker.cancel(order.request.client_order_id)
    assert len(fake.calls("DELETE", "/v2/orders/{order_id}")) == 1
    [(seen, _)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.NEW and seen.status_message == "alpaca status: pending_cancel"
    fake.set_status(order.broker_order_id, "canceled")
    [(seen, _)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.CANCELED


def test_cancel_all(fake, broker):
    broker.submit(req("TMF", Side.BUY, 7), fake.now)
    broker.submit(req("UGL", Side.BUY, 1), fake.now)
    assert broker.cancel_all() == 2
    assert {o.status for o, _ in broker.poll(fake.now)} == {OrderStatus.CANCELED}


# --- reconciliation ---------------------------------------------------------------------


def test_open_orders_and_find_order_after_a_restart(fake, broker, sleeps):
    broker.submit(req("TMF", Side.BUY, 7), fake.now)
    done = broker.submit(req("UGL", Side.BUY, 1), fake.now)
    fake.fill(done.broker_order_id)
    fake.fill("run1-20241127-rb-TMF-buy", 3, 10.0)

    restarted = AlpacaBroker.connect(
        Credentials(KEY_ID, SECRET), base_url=fake.url, policy=policy(sleeps)
    )
    [open_order] = restarted.open_orders()
    assert open_order.request.client_order_id == "run1-20241127-rb-TMF-buy"
    assert open_order.request.rebalance_id == "run1-20241127-rb"
    assert (open_order.request.symbol, open_order.request.side) == ("TMF", Side.BUY)
    assert open_order.request.quantity == 7.0
    assert (open_order.status, open_order.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 3.0)
    assert restarted.find_order("run1-20241127-rb-UGL-buy").status is OrderStatus.FILLED
    assert restarted.find_order("run1-20241127-rb-SPY-sell") is None

    restarted.track(open_order)  # fills up to 3 were recorded before the restart
    fake.fill("run1-20241127-rb-TMF-buy", 4, 11.0)
    [(seen, fill)] = restarted.poll(fake.now)
    assert seen.status is OrderStatus.FILLED
    assert (fill.quantity, fill.price) == (4.0, pytest.approx(11.0))


def test_poll_failure_loses_no_report(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    fake.fill(order.broker_order_id)
    fake.inject("GET", "/v2/orders/{order_id}", *[Fault.error(500, None, "boom")] * 3)
    with pytest.raises(BrokerError):
        broker.poll(fake.now)
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED and fill.quantity == 7.0


# --- clock and calendar -----------------------------------------------------------------


def test_clock_is_utc(fake, broker):
    clock = broker.clock()
    assert clock.is_open and clock.timestamp == OPEN_WED
    assert clock.next_close == dt.datetime(2024, 11, 27, 21, 0, tzinfo=UTC)
    assert clock.next_open == FRIDAY_OPEN  # Thanksgiving skipped
    fake.set_now(THANKSGIVING)
    assert broker.clock().next_close == FRIDAY_EARLY_CLOSE


def test_calendar_sessions_in_utc_with_holiday_early_close_and_dst(sleeps):
    sessions = [
        FakeSession(dt.date(2024, 11, 1)),  # EDT: close 20:00 UTC
        FakeSession(dt.date(2024, 11, 4)),  # EST: close 21:00 UTC
        FakeSession(dt.date(2024, 11, 27)),
        FakeSession(dt.date(2024, 11, 29), close="13:00"),
    ]
    with FakeAlpaca(sessions=sessions) as fake:
        broker = AlpacaBroker.connect(
            Credentials(KEY_ID, SECRET), base_url=fake.url, policy=policy(sleeps)
        )
        days = broker.calendar(dt.date(2024, 11, 1), dt.date(2024, 11, 30))
        [call] = fake.calls("GET", "/v2/calendar")
        assert (call.query["start"], call.query["end"]) == ("2024-11-01", "2024-11-30")
    assert [(s.day.day, s.open.hour, s.open.minute, s.close.hour) for s in days] == [
        (1, 13, 30, 20),
        (4, 14, 30, 21),
        (27, 14, 30, 21),
        (29, 14, 30, 18),
    ]
    assert dt.date(2024, 11, 28) not in {s.day for s in days}
    assert all(s.open.tzinfo is UTC and s.close.tzinfo is UTC for s in days)


# --- status mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpaca", "filled", "qty", "ours"),
    [
        ("new", 0, 10, OrderStatus.NEW),
        ("accepted", 0, 10, OrderStatus.ACCEPTED),
        ("pending_new", 0, 10, OrderStatus.ACCEPTED),
        ("accepted_for_bidding", 0, 10, OrderStatus.ACCEPTED),
        ("held", 0, 10, OrderStatus.ACCEPTED),
        ("suspended", 0, 10, OrderStatus.ACCEPTED),
        ("partially_filled", 4, 10, OrderStatus.PARTIALLY_FILLED),
        ("filled", 10, 10, OrderStatus.FILLED),
        ("done_for_day", 0, 10, OrderStatus.NEW),
        ("done_for_day", 4, 10, OrderStatus.PARTIALLY_FILLED),
        ("calculated", 10, 10, OrderStatus.FILLED),
        ("stopped", 0, 10, OrderStatus.NEW),
        ("pending_cancel", 4, 10, OrderStatus.PARTIALLY_FILLED),
        ("pending_replace", 0, 10, OrderStatus.NEW),
        ("canceled", 4, 10, OrderStatus.CANCELED),
        ("replaced", 0, 10, OrderStatus.NEW),  # followed to its replacement (test_replaced_orders)
        ("replaced", 4, 10, OrderStatus.PARTIALLY_FILLED),
        ("expired", 0, 10, OrderStatus.EXPIRED),
        ("rejected", 0, 10, OrderStatus.REJECTED),
    ],
)
def test_status_mapping(alpaca, filled, qty, ours):
    assert map_status(alpaca, filled, qty) is ours


def test_venue_only_status_is_named_in_the_message(fake, broker):
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    fake.fill(order.broker_order_id, 2)
    fake.set_status(order.broker_order_id, "done_for_day")
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.PARTIALLY_FILLED
    assert seen.status_message == "alpaca status: done_for_day"
    assert fill.quantity == 2.0


def test_the_venue_status_note_is_cleared_once_the_statuses_agree(fake, broker):
    """Alpaca often answers a market order at the open `pending_new` (ours: accepted,
    noted "alpaca status: pending_new"); once it fills, the note goes (it stayed on the
    filled order's row)."""
    order = broker.submit(req("TMF", Side.BUY, 7), fake.now)
    fake.set_status(order.broker_order_id, "pending_new")
    [(seen, _)] = broker.poll(fake.now)
    assert seen.status_message == "alpaca status: pending_new"
    fake.set_status(order.broker_order_id, "new")  # routed, then filled
    fake.fill(order.broker_order_id)
    [(seen, fill)] = broker.poll(fake.now)
    assert seen.status is OrderStatus.FILLED and fill.quantity == 7.0
    assert seen.status_message == ""  # "" clears it in the trade log


@pytest.mark.parametrize(("answer", "reason"), [
    ({}, None),
    ({"trading_blocked": True}, "Alpaca reports trading_blocked for the account"),
    ({"status": "ACCOUNT_CLOSED"}, "the account's status is ACCOUNT_CLOSED, not ACTIVE"),
    ({"trade_suspended_by_user": None}, None),  # absent or null: not blocked
])
def test_the_account_says_when_alpaca_refuses_its_orders(fake, broker, answer, reason):
    fake.account_patch = answer
    info = broker.account()
    assert info.cannot_trade == reason
    broker.refresh()
    assert broker.trading_refusal() == reason


def test_a_buy_whose_wait_for_a_request_token_crosses_the_close_is_not_sent(fake):
    """The platform's shared request budget makes a request wait for its token inside the
    HTTP layer, after the send gate was asked: a buy asked at 15:59:58 and let through
    at 16:00:03 reached Alpaca after the close (queued there for the next open's prices).
    The gate is asked again once the wait is over; a sell, and a buy whose wait ends in
    the session, go out."""
    from bot.broker.base import SendRefused
    from bot.broker.sequenced import buys_refused_after_the_close

    now = [dt.datetime(2024, 11, 27, 20, 59, 58, tzinfo=UTC)]  # 15:59:58 New York
    close = dt.datetime(2024, 11, 27, 21, 0, tzinfo=UTC)

    def token_wait() -> None:  # each request waits 5 s for its token
        now[0] += dt.timedelta(seconds=5)

    slow_budget = RetryPolicy(attempts=3, timeout=5.0, sleep=lambda _s: None, throttle=token_wait)
    broker = AlpacaBroker.connect(Credentials(KEY_ID, SECRET), base_url=fake.url, policy=slow_budget)
    broker.send_gate = buys_refused_after_the_close(lambda at: at < close, lambda: now[0])

    with pytest.raises(SendRefused, match="the session has closed") as refused:
        broker.submit(req("SPY", Side.BUY, 2), fake.now)
    assert "attempts" not in str(refused.value)  # no try reached the venue
    assert fake.calls("POST", "/v2/orders") == []
    assert now[0] > close  # the wait did cross the close

    fake.hold("SPY", 10, 450.0)
    assert broker.submit(req("SPY", Side.SELL, 1), fake.now).status is not OrderStatus.REJECTED
    now[0] = close - dt.timedelta(seconds=30)
    assert broker.submit(req("SPY", Side.BUY, 1), fake.now).status is not OrderStatus.REJECTED
    assert [c.body["side"] for c in fake.calls("POST", "/v2/orders")] == ["sell", "buy"]


def test_a_send_gate_that_asks_the_venue_does_not_recurse(fake):
    """The platform's gate asks the venue's clock when its cached answer is old: that
    request ran the last check again, which asked the clock again, until RecursionError,
    each level taking a token of the shared budget. The check runs once per request."""
    tokens = []
    budget = RetryPolicy(attempts=3, timeout=5.0, sleep=lambda _s: None, throttle=lambda: tokens.append(1))
    broker = AlpacaBroker.connect(Credentials(KEY_ID, SECRET), base_url=fake.url, policy=budget)
    asked = []

    def gate(_request):
        asked.append(broker.clock())  # through the same client, in the same thread
        return None

    broker.send_gate = gate
    tokens.clear()
    assert broker.submit(req("SPY", Side.BUY, 1), fake.now).status is not OrderStatus.REJECTED
    assert len(asked) == 2  # before the try, and once more after the POST's token
    assert len(tokens) == 3  # the POST and the two clock requests
    assert len(fake.calls("POST", "/v2/orders")) == 1
