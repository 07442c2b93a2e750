import numpy as np
import pytest

from bot.config import RebalanceSettings
from bot.planner import client_order_id, plan_orders, rebalance_due
from bot.types import Side

CFG = RebalanceSettings()
TARGETS = np.array([0.5, 0.5])


def weights(*w):
    return lambda: np.array(w)


def test_first_decision_is_the_initial_allocation():
    check = rebalance_due(None, weights(0, 0), None, 0, CFG)
    assert check.due and check.reason == "initial allocation"


@pytest.mark.parametrize(("days", "due"), [(1, False), (3, False), (4, True), (9, True)])
def test_period_counts_trading_days_since_the_last_rebalance(days, due):
    assert rebalance_due(days, weights(0.5, 0.5), TARGETS, 0, CFG).due is due


def test_drift_over_five_points_triggers_early():
    assert not rebalance_due(1, weights(0.55, 0.45), TARGETS, 0, CFG).due  # exactly 5 points
    check = rebalance_due(1, weights(0.56, 0.44), TARGETS, 0, CFG)
    assert check.due and check.reason.startswith("drift 6.00%")


def test_drift_check_can_be_disabled():
    cfg = RebalanceSettings(drift=None)
    assert not rebalance_due(1, weights(0.9, 0.1), TARGETS, 0, cfg).due


def test_outstanding_orders_skip_even_a_due_rebalance():
    check = rebalance_due(10, weights(0.9, 0.1), TARGETS, 2, CFG, forced="defensive")
    assert not check.due and check.reason == "skipped: 2 order(s) outstanding"


def test_weights_are_not_valued_when_the_period_decides():
    def boom():
        raise AssertionError("valued the book needlessly")

    assert rebalance_due(4, boom, TARGETS, 0, CFG).due


def test_orders_sell_first_and_hit_the_targets():
    orders = plan_orders(
        "r1", ("A", "B", "C"), np.array([0.5, 0.3, 0.2]), np.array([0.0, 50.0, 10.0]),
        np.array([10.0, 10.0, 10.0]), 1000.0, CFG, "period",
    )
    # Targets in shares: A 50, B 30, C 20 -> buy 50 A, sell 20 B, buy 10 C; sells first.
    assert [(o.symbol, o.side, o.quantity) for o in orders] == [
        ("B", Side.SELL, 20.0), ("A", Side.BUY, 50.0), ("C", Side.BUY, 10.0),
    ]
    assert orders[0].client_order_id == "r1-B-sell"
    assert all(o.reference_price == 10.0 and o.reason == "period" for o in orders)


def test_minimum_trade_size_in_shares_and_notional():
    cfg = RebalanceSettings(min_trade_shares=2.0, min_trade_notional=100.0)
    orders = plan_orders(
        "r", ("A", "B", "C"), np.array([0.34, 0.33, 0.33]), np.array([33.0, 32.0, 28.0]),
        np.array([10.0, 10.0, 100.0]), 10000.0, cfg, "p",
    )
    # A: 340 vs 33 shares -> buy 307; B: 330 vs 32 -> buy 298; C: 33 vs 28 -> 5 shares, $500.
    assert [o.symbol for o in orders] == ["A", "B", "C"]
    assert [o.quantity for o in orders] == pytest.approx([307.0, 298.0, 5.0])
    orders = plan_orders(
        "r", ("A",), np.array([0.5]), np.array([499.0]), np.array([10.0]), 10000.0, cfg, "p"
    )
    assert orders == []  # 1 share ($10) is below both minimums


def test_whole_shares_round_targets_down():
    cfg = RebalanceSettings(fractional=False, min_trade_notional=0.0)
    orders = plan_orders(
        "r", ("A", "B"), np.array([0.5, 0.5]), np.zeros(2), np.array([30.0, 7.0]), 1000.0, cfg, "p"
    )
    assert [o.quantity for o in orders] == [16.0, 71.0]  # 16.67 -> 16, 71.43 -> 71


def test_whole_shares_never_sell_more_than_a_fractional_holding():
    """Before: 10.6 shares held (bought fractionally before whole-share mode), target 0:
    round(-10.6) planned a sell of 11, a short or a refusal at the venue."""
    cfg = RebalanceSettings(fractional=False, min_trade_notional=0.0)
    orders = plan_orders(
        "r", ("A", "B"), np.array([0.0, 0.2]), np.array([10.6, 10.0]), np.array([10.0, 10.0]),
        212.0, cfg, "p",
    )
    assert [(o.symbol, o.side.value, o.quantity) for o in orders] == [("A", "sell", 10), ("B", "sell", 6)]


@pytest.mark.parametrize("fractional", [True, False])
def test_no_plan_sells_more_than_is_held(fractional):
    """A negative equity (a broker answer) made every fractional target negative: a
    sale of funds not held, i.e. a short of leveraged ETFs."""
    cfg = RebalanceSettings(fractional=fractional, min_trade_notional=0.0)
    orders = plan_orders(
        "r", ("A", "B"), np.array([0.5, 0.5]), np.array([0.0, 3.0]), np.array([10.0, 10.0]),
        -5_000.0, cfg, "p",
    )
    assert [(o.symbol, o.side.value, o.quantity) for o in orders] == [("B", "sell", 3.0)]


def test_assets_without_a_price_are_not_traded():
    orders = plan_orders(
        "r", ("A", "B"), np.array([0.5, 0.5]), np.zeros(2), np.array([np.nan, 10.0]), 1000.0, CFG, "p"
    )
    assert [o.symbol for o in orders] == ["B"]


def test_client_order_ids_are_deterministic():
    assert client_order_id("bt1-20240304-rb", "TQQQ", Side.BUY) == "bt1-20240304-rb-TQQQ-buy"
