import datetime as dt

import numpy as np
import pytest

from bot.broker.simulated import CostModel, SimulatedBroker
from bot.types import OrderRequest, OrderStatus, Side

NOW = dt.datetime(2024, 3, 4, 14, 30, tzinfo=dt.UTC)


def request(symbol, side, qty, cid=None):
    return OrderRequest(cid or f"r-{symbol}-{side.value}", "r", symbol, side, qty, "test", 10.0)


def test_fills_sells_before_buys_with_costs():
    broker = SimulatedBroker(("A", "B"), 1000.0, CostModel(0.01, 10.0, 20.0))
    broker.shares[0] = 50.0
    broker.submit(request("B", Side.BUY, 10), NOW)
    broker.submit(request("A", Side.SELL, 20), NOW)
    results = broker.execute(np.array([10.0, 50.0]), NOW)
    assert [o.request.side for o, _ in results] == [Side.SELL, Side.BUY]
    sell, buy = results[0][1], results[1][1]
    assert sell.price == pytest.approx(10.0 * (1 - 0.002))
    assert sell.commission == pytest.approx(0.01 * 20 + 0.001 * 20 * sell.price)
    assert buy.price == pytest.approx(50.0 * 1.002)
    assert buy.slippage_cost == pytest.approx(0.1 * 10)
    expected_cash = 1000 + 20 * sell.price - sell.commission - 10 * buy.price - buy.commission
    assert broker.cash() == pytest.approx(expected_cash)
    assert broker.shares.tolist() == [30.0, 10.0]
    assert broker.open_order_count() == 0


def test_cash_never_goes_negative():
    broker = SimulatedBroker(("A",), 100.0, CostModel(commission_bps=10.0))
    broker.submit(request("A", Side.BUY, 50), NOW)
    [(order, fill)] = broker.execute(np.array([10.0]), NOW)
    assert order.status is OrderStatus.EXPIRED
    assert fill.quantity == pytest.approx(100.0 / (10.0 * 1.001))
    assert broker.cash() >= 0.0 and broker.cash() == pytest.approx(0.0, abs=1e-9)


def test_a_buy_the_cash_cuts_below_one_dollar_is_refused_not_filled_as_dust():
    """Once the buys before it spent the cash to the cent, the last buy of a rebalance
    was filled for 1e-11 shares (six such fills in a 2010-2024 backtest), an order the
    live bot never sends (Alpaca's smallest is $1). A cut worth $1 or more still fills;
    an uncut order is never refused for its size (the planner's minimum decides)."""
    broker = SimulatedBroker(("A", "B", "C"), 1000.5, CostModel())
    broker.submit(request("A", Side.BUY, 100), NOW)  # $1,000 at 10: the cash to 50 cents
    broker.submit(request("B", Side.BUY, 5), NOW)  # cut to $0.50: refused
    results = broker.execute(np.array([10.0, 10.0, 10.0]), NOW)
    (a, a_fill), (b, b_fill) = results
    assert a.status is OrderStatus.FILLED and a_fill.quantity == 100
    assert b.status is OrderStatus.REJECTED and b.status_message == "insufficient cash"
    assert b_fill is None and broker.shares[1] == 0.0
    assert broker.cash() == pytest.approx(0.5)

    broker.submit(request("C", Side.BUY, 0.02, "tiny"), NOW)  # 20 cents, not cut: fills
    [(c, c_fill)] = broker.execute(np.array([10.0, 10.0, 10.0]), NOW)
    assert c.status is OrderStatus.FILLED and c_fill.quantity == pytest.approx(0.02)

    rich = SimulatedBroker(("A",), 1.5, CostModel())
    rich.submit(request("A", Side.BUY, 1.0), NOW)  # $10 wanted, cut to $1.50: fills
    [(cut, cut_fill)] = rich.execute(np.array([10.0]), NOW)
    assert cut.status is OrderStatus.EXPIRED and cut_fill.quantity == pytest.approx(0.15)


def test_whole_shares_mode_buys_only_what_cash_pays_for():
    broker = SimulatedBroker(("A",), 105.0, fractional=False)
    broker.submit(request("A", Side.BUY, 50), NOW)
    [(order, fill)] = broker.execute(np.array([10.0]), NOW)
    assert fill.quantity == 10.0 and broker.cash() == pytest.approx(5.0)


def test_buy_with_no_cash_is_rejected_and_sell_is_capped_at_the_position():
    broker = SimulatedBroker(("A", "B"), 0.0)
    broker.shares[1] = 3.0
    broker.submit(request("A", Side.BUY, 5), NOW)
    broker.submit(request("B", Side.SELL, 5), NOW)
    results = {o.request.symbol: (o, f) for o, f in broker.execute(np.array([10.0, 10.0]), NOW)}
    assert results["B"][1].quantity == 3.0
    assert results["B"][0].status is OrderStatus.EXPIRED
    assert broker.shares[1] == 0.0
    # After the sell, 30 in cash buys 3 of A: the buy is cut, not rejected.
    assert results["A"][1].quantity == pytest.approx(3.0)


def test_order_without_price_expires():
    broker = SimulatedBroker(("A",), 100.0)
    broker.submit(request("A", Side.BUY, 1), NOW)
    [(order, fill)] = broker.execute(np.array([np.nan]), NOW)
    assert fill is None and order.status is OrderStatus.EXPIRED
    assert broker.cash() == 100.0


def test_unknown_symbol_is_rejected_at_submit():
    broker = SimulatedBroker(("A",), 100.0)
    order = broker.submit(request("ZZZ", Side.BUY, 1), NOW)
    assert order.status is OrderStatus.REJECTED and broker.open_order_count() == 0


def test_whole_shares_never_round_a_buy_past_the_cash():
    """Cash 1e-7 short of 10 shares at 400: the whole-quantity tolerance (1e-9 share)
    rounded the affordable 9.9999999998 up to 10, and cash ended at -1e-7."""
    broker = SimulatedBroker(("A",), 4000.0 - 1e-7, fractional=False)
    broker.submit(request("A", Side.BUY, 50), NOW)
    [(order, fill)] = broker.execute(np.array([400.0]), NOW)
    assert fill.quantity == 9.0 and order.status is OrderStatus.EXPIRED
    assert broker.cash() == pytest.approx(400.0 - 1e-7, abs=1e-9) and broker.cash() >= 0.0


def test_whole_shares_buy_an_exact_fit_with_costs():
    """Cash exactly the cost of 10 shares, slippage and both commissions included, buys
    10 and leaves no negative cash."""
    costs = CostModel(commission_per_share=0.01, commission_bps=10.0, slippage_bps=20.0)
    price = 50.0 * 1.002
    cash = 10 * price + (0.01 * 10 + 0.001 * 10 * price)
    broker = SimulatedBroker(("A",), cash, costs, fractional=False)
    broker.submit(request("A", Side.BUY, 10), NOW)
    [(order, fill)] = broker.execute(np.array([50.0]), NOW)
    assert fill.quantity == 10.0 and order.status is OrderStatus.FILLED
    assert fill.commission == pytest.approx(0.1 + 0.001 * 10 * price)
    assert 0.0 <= broker.cash() <= 1e-9
