"""The live order path on its worst day: restarts with orders open, fills that arrive in
the submit reply, a process that ends before its first poll, sells still open at the
close, and the same day decided twice. Against the fake Alpaca (and FRED) on 127.0.0.1
through the real alpaca-py clients, the real jobs and reconciliation."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from bot.broker.sequenced import QUEUED, SellsFirst
from bot.daemon.jobs import TradingJobs
from bot.daemon.live_feed import REFETCH_DAYS
from bot.daemon.once import decide_once
from bot.store.tradelog import TradeLog
from bot.types import Fill, Order, OrderRequest, OrderStatus, Side
from tests import test_daemon_live as daemon_tests
from tests import test_store as store_tests
from tests.fakes import Fault
from tests.test_daemon_live import OPEN_JOB, bought_before, daemon
from tests.test_live_order_faults import buy_cids, fills_of, later

venue = daemon_tests.venue  # the fake Alpaca + FRED fixture, the bot pointed at them
url = store_tests.url  # a trade-log URL, once for SQLite and once for PostgreSQL

UTC = dt.UTC
TUESDAY_CLOSE_JOB = dt.datetime(2024, 11, 26, 21, 20, tzinfo=UTC)  # 16:20 New York
WEDNESDAY_OPEN_JOB = dt.datetime(2024, 11, 27, 14, 35, tzinfo=UTC)  # 09:35 New York


def move(venue, clock, when: dt.datetime) -> None:
    """The venue's time and the bot's clock together."""
    venue.set_now(when)
    clock.set(when)


def all_fills(log: TradeLog):
    """Fills of every run (a restarted daemon records an older order's fills in its run)."""
    import pandas as pd

    frames = [log.load_fills(int(run_id)) for run_id in log.runs()["id"]]
    return pd.concat(frames, ignore_index=True)


def fills_match_orders(log: TradeLog) -> None:
    """Every order's filled quantity is exactly what its recorded fills add up to."""
    got = all_fills(log).groupby("client_order_id")["quantity"].sum()
    for row in log.load_orders().itertuples():
        assert got.get(row.client_order_id, 0.0) == pytest.approx(
            row.filled_quantity, abs=1e-9
        ), row.client_order_id


def venue_filled(venue) -> dict[str, float]:
    return {o.data["client_order_id"]: float(o.data["filled_qty"]) for o in venue.orders}


def recorded_filled(log: TradeLog) -> dict[str, float]:
    return all_fills(log).groupby("client_order_id")["quantity"].sum().to_dict()


# --- 1. a restart with an open order -------------------------------------------------------


def test_restart_with_an_open_order_keeps_every_job_working(tmp_path, venue):
    """An open order whose status_message is NULL came back from pandas as NaN after a
    restart, and every poll, open and close job then failed on NaN.startswith."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)  # the sell is sent (no message), buys queued
    log.close()
    sell = venue.orders[0].data["client_order_id"]

    jobs, log, clock = daemon(tmp_path, venue, later(3))
    venue.fill(sell)
    clock.set(later(5))
    assert jobs.run("poll", jobs.poll_job)
    assert len(buy_cids(venue)) == 4  # the restored queue was released
    venue.fill_open()
    clock.set(later(7))
    assert jobs.run("poll", jobs.poll_job)
    move(venue, clock, TUESDAY_CLOSE_JOB)
    assert jobs.run("close", jobs.close_job)
    assert log.load_incidents()["kind"].str.startswith("job:").sum() == 0
    assert set(log.load_orders()["status"]) == {"filled"}
    assert recorded_filled(log) == pytest.approx(venue_filled(venue))
    log.close()


def test_recorded_orders_keep_a_missing_message_as_none(url):
    log = TradeLog.open(url)
    log.start_run(mode="paper", strategy="s", config_hash="h", config={}, code_version="t",
                  data_source="x", synthetic=False, started_at=OPEN_JOB)
    queued = OrderRequest("inst-20241125-rb-UGL-buy", "inst-20241125-rb", "UGL", Side.BUY,
                          2.0, "period", 40.0)
    sent = OrderRequest("inst-20241125-rb-TQQQ-sell", "inst-20241125-rb", "TQQQ", Side.SELL,
                        3.0, "period", 70.0)
    log.order(Order(queued, OrderStatus.NEW, OPEN_JOB, None, status_message=QUEUED))
    log.order(Order(sent, OrderStatus.PARTIALLY_FILLED, OPEN_JOB, "b-1", 2.0, 70.5))
    log.order(Order(sent._replace(client_order_id="other_x-1"), OrderStatus.NEW, OPEN_JOB))
    for qty, price in ((1.5, 70.0), (0.5, 72.0)):
        log.fill(Fill(sent.client_order_id, "TQQQ", Side.SELL, qty, price, 0.0, 0.0, OPEN_JOB))
    log.flush()
    # the '_' of the prefix is not a LIKE wildcard: 'inst' must not match 'other_x'
    found = {r.order.request.client_order_id: r for r in log.recorded_orders("inst")}
    assert set(found) == {queued.client_order_id, sent.client_order_id}
    assert found[sent.client_order_id].order.status_message is None
    assert found[queued.client_order_id].order.broker_order_id is None
    assert found[queued.client_order_id].order.average_price is None
    assert found[queued.client_order_id].order.status_message == QUEUED
    assert (found[queued.client_order_id].fills_quantity,
            found[queued.client_order_id].fills_average) == (0.0, None)
    rec = found[sent.client_order_id]
    assert (rec.mode, rec.order.status, rec.order.filled_quantity) == (
        "paper", OrderStatus.PARTIALLY_FILLED, 2.0)
    assert (rec.fills_quantity, rec.fills_average) == (2.0, pytest.approx(70.5))
    log.close()


# --- 2. fills in the submit reply -------------------------------------------------------------


def test_fills_in_the_submit_reply_are_recorded_by_the_job_that_sent_them(tmp_path, venue):
    venue.fill_on_submit = 1.0  # every market order is answered already filled
    jobs, log, _ = daemon(tmp_path, venue)  # all cash: the buys go out at once
    assert jobs.run("open", jobs.open_job)
    orders = log.load_orders()
    assert len(orders) >= 5 and set(orders["status"]) == {"filled"}
    assert recorded_filled(log) == pytest.approx(venue_filled(venue))
    fills_match_orders(log)
    # ... once only: the polls after it report nothing again
    assert jobs.run("poll", jobs.poll_job)
    assert recorded_filled(log) == pytest.approx(venue_filled(venue))
    log.close()


def test_a_partial_fill_in_the_submit_reply_and_the_rest_later(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    venue.fill_on_submit = 0.4
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    first = fills_of(log, sell)
    assert len(first) == 1
    assert first["quantity"].iloc[0] == pytest.approx(float(venue.order(sell)["qty"]) * 0.4)
    venue.fill_on_submit = 0.0
    venue.fill(sell, price=venue.prices["TQQQ"] * 1.01)
    clock.set(later(2))
    assert jobs.run("poll", jobs.poll_job)  # the rest of the sell, then the buys released
    fills = fills_of(log, sell)
    assert fills["quantity"].sum() == pytest.approx(float(venue.order(sell)["qty"]))
    assert fills["price"].iloc[1] == pytest.approx(venue.prices["TQQQ"] * 1.01)
    assert len(buy_cids(venue)) == 4
    fills_match_orders(log)
    log.close()


def test_once_execute_records_fills_made_before_it_exits(tmp_path, venue):
    """`bot once --execute` used to end right after its submits: orders that filled a
    moment later had no fill row until some later process polled them."""
    jobs, log, _ = daemon(tmp_path, venue)
    # The venue fills everything just before the first order lookup after the submits.
    venue.inject("GET", "/v2/orders/{order_id}", Fault.first(venue.fill_open))
    outcome = decide_once(jobs, execute=True)
    log.flush()  # as `bot once` does when it closes the log
    assert outcome.orders
    assert set(log.load_orders()["status"]) == {"filled"}
    assert recorded_filled(log) == pytest.approx(venue_filled(venue))
    fills_match_orders(log)
    log.close()


def test_a_stopping_daemon_records_the_fills_made_since_its_last_poll(tmp_path, venue):
    import threading

    from bot.daemon.service import build_schedule, run_live

    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)  # the sell sent, the buys queued
    sell = venue.orders[0].data["client_order_id"]
    venue.fill(sell)
    stop = threading.Event()
    stop.set()  # SIGTERM before the next poll
    run_live(build_schedule(jobs), jobs, stop=stop)
    log = TradeLog.open(f"sqlite:///{tmp_path / 'paper.sqlite'}")
    assert recorded_filled(log) == {sell: pytest.approx(float(venue.order(sell)["qty"]))}
    assert buy_cids(venue) == []  # a stopping daemon sends nothing new
    log.close()


def test_restart_records_a_fill_the_trade_log_lacks(tmp_path, venue):
    """An order the log shows filled without its fill row (the fill went to a rejected
    flush's incident, or an older version dropped the submit reply's fill): reconciliation
    compares the filled quantity with the recorded fills and records what is missing."""
    venue.fill_on_submit = 1.0
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    missing = venue.orders[0].data
    with log.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM fills WHERE client_order_id = :c"),
                     {"c": missing["client_order_id"]})
    log.close()

    jobs, log, _ = daemon(tmp_path, venue, later(3))
    messages = log.load_incidents()["message"].tolist()
    assert any(missing["client_order_id"] in m and "fills" in m for m in messages), messages
    fills = all_fills(log)
    restored = fills[fills["client_order_id"] == missing["client_order_id"]]
    assert restored["quantity"].sum() == pytest.approx(float(missing["filled_qty"]))
    assert restored["price"].iloc[0] == pytest.approx(float(missing["filled_avg_price"]))
    fills_match_orders(log)
    # a second restart finds nothing to repair
    log.close()
    _, log, _ = daemon(tmp_path, venue, later(4))
    assert not any("fills" in m for m in log.load_incidents()["message"].tolist()[len(messages):])
    assert len(all_fills(log)) == len(venue.orders)
    log.close()


def test_restart_follows_again_an_order_the_log_closed_but_the_venue_works(tmp_path, venue):
    """The log says canceled (say a lookup missed it right after the POST and the order
    was closed as vanished), the venue still works it: it is opened again and followed,
    so its fills are recorded instead of lost."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET status = 'canceled' WHERE client_order_id = :c"),
                     {"c": sell})
    log.close()

    jobs, log, clock = daemon(tmp_path, venue, later(3))
    messages = log.load_incidents()["message"].tolist()
    assert any(sell in m and "followed again" in m for m in messages), messages
    venue.fill(sell)
    clock.set(later(5))
    assert jobs.run("poll", jobs.poll_job)
    row = log.load_orders().set_index("client_order_id").loc[sell]
    assert row["status"] == "filled"
    assert recorded_filled(log)[sell] == pytest.approx(float(venue.order(sell)["qty"]))
    fills_match_orders(log)
    log.close()


def test_killed_while_releasing_the_buys_sends_none_twice(tmp_path, venue, monkeypatch):
    from bot.broker.alpaca import AlpacaBroker

    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)  # the sell sent, the buys queued and recorded
    venue.fill_open()
    original = AlpacaBroker.submit

    def dies_after_a_buy(self, request, now):
        order = original(self, request, now)
        if request.side is Side.BUY:
            raise KeyboardInterrupt("kill -9 while releasing")
        return order

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(AlpacaBroker, "submit", dies_after_a_buy)
        clock.set(later(2))
        jobs.poll_job()
    log.discard()
    [first] = buy_cids(venue)

    restarted, log, clock = daemon(tmp_path, venue, later(3))
    row = log.load_orders().set_index("client_order_id").loc[first]
    assert row["broker_order_id"] == venue.order(first)["id"]  # no longer "queued"
    assert row["status_message"] != QUEUED
    clock.set(later(5))
    assert restarted.run("poll", restarted.poll_job)  # the other three go out
    venue.fill_open()
    clock.set(later(7))
    assert restarted.run("poll", restarted.poll_job)
    posts = [r.body["client_order_id"] for r in venue.calls("POST", "/v2/orders")]
    assert len(posts) == len(set(posts)) == 5
    assert set(log.load_orders()["status"]) == {"filled"}
    fills_match_orders(log)
    log.close()


# --- 3. no buy released outside market hours --------------------------------------------------


def test_buys_are_never_released_after_the_close(tmp_path, venue):
    """A sell partly filled and still open at the close: when it expired, the close job
    released the buys; they filled at the next open at higher prices and overdrew the
    cash account. Buys now wait for the next session and are sized on its prices."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    venue.fill(sell, float(venue.order(sell)["qty"]) * 0.5)
    clock.set(later(2))
    assert jobs.run("poll", jobs.poll_job)
    assert buy_cids(venue) == []  # the sell is still working

    move(venue, clock, TUESDAY_CLOSE_JOB)  # the sell expires at the close, half filled
    assert jobs.run("close", jobs.close_job)
    assert buy_cids(venue) == []  # nothing sent while the market is closed
    assert jobs.ctx.broker.open_order_count() == 4  # still queued

    venue.prices = {s: p * 1.03 for s, p in venue.prices.items()}  # a gap up overnight
    venue.latest_trades = dict(venue.prices)
    move(venue, clock, WEDNESDAY_OPEN_JOB)
    assert jobs.run("open", jobs.open_job)
    assert len(buy_cids(venue)) == 4
    assert all(venue.session_at(dt.datetime.fromisoformat(o.data["submitted_at"]))
               for o in venue.orders)
    venue.fill_open()
    move(venue, clock, WEDNESDAY_OPEN_JOB + dt.timedelta(minutes=2))
    assert jobs.run("poll", jobs.poll_job)
    assert float(venue.cash) >= 0.0
    assert set(log.load_orders()["status"]) == {"filled", "expired"}
    fills_match_orders(log)
    log.close()


def test_once_execute_after_hours_sends_sells_and_queues_the_buys(tmp_path, venue):
    evening = dt.datetime(2024, 11, 26, 23, 0, tzinfo=UTC)  # 18:00 New York
    jobs, log, clock = daemon(tmp_path, venue, evening)  # all cash: only buys to send
    decide_once(jobs, execute=True)
    assert venue.orders == []
    orders = log.load_orders()
    assert len(orders) >= 5
    assert all("until the market opens" in m for m in orders["status_message"])
    log.close()

    restarted, log, clock = daemon(tmp_path, venue, WEDNESDAY_OPEN_JOB)
    assert restarted.run("poll", restarted.poll_job)  # the queue restored, sent in session
    assert len(buy_cids(venue)) == len(orders)
    log.close()


# --- 4. the same day decided again after a restart --------------------------------------------


def test_restart_right_after_all_submits_adopts_instead_of_crashing(tmp_path, venue, monkeypatch):
    """Killed after every order went out but before the state was stored, the restarted
    daemon decided the same day again; the cut last buy came back as a small extra buy
    with the same client_order_id (422 at the venue) and the trade log refused it."""
    venue.fill_on_submit = 1.0
    jobs, log, _ = daemon(tmp_path, venue)

    def killed(self, engine):
        raise KeyboardInterrupt("kill -9 before the records are stored")

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(TradingJobs, "save", killed)
        jobs.open_job()
    log.discard()
    sent = [o.data["client_order_id"] for o in venue.orders]
    assert len(sent) >= 5

    restarted, log, _ = daemon(tmp_path, venue, later(3))
    assert restarted.run("open", restarted.open_job)  # the same day again: adopt, no crash
    posts = [r.body["client_order_id"] for r in venue.calls("POST", "/v2/orders")]
    assert len(posts) > len(sent), "the re-decision should have met a reused id"
    ids = [o.data["client_order_id"] for o in venue.orders]
    assert len(ids) == len(set(ids))
    orders = log.load_orders()
    assert sorted(orders["client_order_id"]) == sorted(ids)
    assert recorded_filled(log) == pytest.approx(venue_filled(venue))
    fills_match_orders(log)
    state = log.load_state("diversified_leverage", "paper")
    assert state["last_rebalance_day"] == "2024-11-25"
    log.close()


def test_a_restart_that_lost_its_state_sends_no_order_twice(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)  # sell sent, buys queued and recorded
    # the state is lost (say, an older copy of the database came back)
    with log.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM strategy_state"))
    log.close()

    restarted, log, clock = daemon(tmp_path, venue, later(3))
    sell = venue.orders[0].data["client_order_id"]
    venue.fill(sell)  # the sell fills: nothing outstanding, the day is decided again
    assert restarted.run("open", restarted.open_job)  # the queue goes out; the decision waits
    venue.fill_open()
    clock.set(later(5))
    assert restarted.run("poll", restarted.poll_job)
    posts = [r.body["client_order_id"] for r in venue.calls("POST", "/v2/orders")]
    assert len(posts) == len(set(posts)) == 5
    assert set(log.load_orders()["status"]) == {"filled"}
    fills_match_orders(log)
    log.close()


def test_a_buy_decided_again_while_queued_stays_one_order():
    """Defensive: the engine does not plan while buys are queued (they count as
    outstanding), but a second submit of a queued client_order_id must not queue it twice."""
    from tests.test_live_order_faults import MarginAccount

    broker = SellsFirst(MarginAccount(), market_open=lambda now: False)
    buy = OrderRequest("x-20241125-rb-UGL-buy", "x-20241125-rb", "UGL", Side.BUY, 3.0, "t", 40.0)
    first = broker.submit(buy, OPEN_JOB)
    again = broker.submit(buy._replace(quantity=2.0), OPEN_JOB)
    assert again is first and broker.open_order_count() == 1


# --- 6. the FRED cache -------------------------------------------------------------------------


def macro_rows_written(engine: sa.Engine) -> list[int]:
    """Rows bound per statement writing macro_observations, recorded from now on."""
    written: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT") and "macro_observations" in statement:
            written.append(len(parameters) if executemany else 1)

    sa.event.listen(engine, "before_cursor_execute", count)
    return written


def test_a_decision_writes_only_new_or_revised_macro_observations(tmp_path, venue):
    """Every decision re-wrote the whole downloaded FRED history (some 40k bound values,
    about a second); only new days and revised values are written now."""
    jobs, log, clock = daemon(tmp_path, venue)
    written = macro_rows_written(log.engine)
    jobs.ctx.feed.macro()
    first = sum(written)
    assert first == sum(len(v) for v in venue.fred.series.values())  # all new: all stored

    vix = venue.fred.series["VIXCLS"]
    vix.append((vix[-1][0] + dt.timedelta(days=1), 17.25))  # a new day
    vix[-3] = (vix[-3][0], vix[-3][1] + 0.5)  # a revision
    written.clear()
    macro = jobs.ctx.feed.macro()
    assert sum(written) == 2
    assert macro["VIX"].values[-1] == 17.25 and macro["VIX"].values[-3] == vix[-3][1]
    assert len(log.load_macro("VIX")[0]) == len(vix)  # all stored; the decision gets a year
    first_asked = vix[-2][0] - dt.timedelta(days=REFETCH_DAYS)  # the newest stored day's
    kept = [d for d, v in vix if d >= first_asked and v is not None]
    assert macro["VIX"].dates.tolist() == kept
    log.close()


# --- found by the soak --------------------------------------------------------------------------


def test_buys_working_at_the_venue_do_not_look_like_a_drawdown(tmp_path, venue):
    """Buys queued overnight go out at the next open job's poll, just before its decision.
    Open buys reserve buying power, and the decision valued the account with the cash it
    may spend (cash less those reservations): a third of the equity vanished, the drawdown
    rule entered defensive mode (and left it the next day), each switch a rebalance."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    venue.fill(sell, float(venue.order(sell)["qty"]) * 0.5)  # half, then it expires
    move(venue, clock, TUESDAY_CLOSE_JOB)
    assert jobs.run("close", jobs.close_job)
    assert jobs.ctx.broker.open_order_count() == 4  # the buys wait for the next session

    move(venue, clock, WEDNESDAY_OPEN_JOB)
    assert jobs.run("open", jobs.open_job)  # its poll releases the buys, then it decides
    assert len(buy_cids(venue)) == 4
    assert all(venue.order(cid)["status"] == "new" for cid in buy_cids(venue))  # working
    run_id = int(log.runs()["id"].iloc[-1])
    events = log.load_risk_events(run_id)
    assert "drawdown" not in set(events["rule"]), events.to_dict("records")
    log.close()


def test_a_restart_compares_positions_with_its_own_strategys_snapshot(tmp_path, venue):
    """Two strategies may record to one trade log (each takes its own instance lock). A
    restart compares the broker's holdings with the last snapshot of its own runs: a
    later snapshot of the other strategy is not a difference, and a real one still is."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue, TUESDAY_CLOSE_JOB)
    assert jobs.run("close", jobs.close_job)  # this strategy's snapshot: TQQQ as held
    held = float(venue.positions["TQQQ"].qty)
    log.start_run(mode="paper", strategy="another_strategy", config_hash="h", config={},
                  code_version="t", data_source="alpaca", synthetic=False,
                  started_at=TUESDAY_CLOSE_JOB)
    log.snapshot(dt.date(2024, 11, 26), ("TQQQ",), [held * 3], [50.0])
    log.finish_run("finished", TUESDAY_CLOSE_JOB)
    log.close()

    _jobs, log, _clock = daemon(tmp_path, venue, WEDNESDAY_OPEN_JOB)
    assert not any(m.startswith("position") for m in log.load_incidents()["message"])
    log.close()

    venue.hold("TQQQ", 1.5 * held, venue.prices["TQQQ"])  # more than this strategy recorded
    _jobs, log, _clock = daemon(tmp_path, venue, WEDNESDAY_OPEN_JOB)
    messages = [m for m in log.load_incidents()["message"] if m.startswith("position")]
    assert messages == [f"position TQQQ: last snapshot {held:g}, broker holds {1.5 * held:g}"]
    log.close()


def test_a_change_without_a_fill_is_dated_when_it_was_seen(tmp_path, venue):
    """A sell fills in part, then the venue cancels the rest: the cancel is recorded at
    the poll that saw it, after the fill (it was dated at the order's submission, which
    put the history out of order and moved `updated_at` back)."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    sell = venue.orders[0].data["client_order_id"]
    venue.fill(sell, qty=float(venue.order(sell)["qty"]) / 2)
    move(venue, clock, later(2))
    assert jobs.run("poll", jobs.poll_job)
    venue.set_status(sell, "canceled")
    move(venue, clock, later(6))
    assert jobs.run("poll", jobs.poll_job)
    log.flush()
    with log.engine.connect() as conn:
        events = conn.execute(sa.text(
            "SELECT e.status, e.at FROM order_events e JOIN orders o ON o.id = e.order_id "
            "WHERE o.client_order_id = :cid ORDER BY e.id"), {"cid": sell}).all()
        updated = conn.execute(sa.text("SELECT updated_at FROM orders WHERE client_order_id = :cid"),
                               {"cid": sell}).scalar_one()
    statuses = [status for status, _ in events]
    assert statuses[-2:] == ["partially_filled", "canceled"]
    times = [dt.datetime.fromisoformat(str(at)).replace(tzinfo=UTC) for _, at in events]
    assert times == sorted(times)
    assert times[-1] == later(6)
    assert dt.datetime.fromisoformat(str(updated)).replace(tzinfo=UTC) == later(6)
    log.close()
