"""The fake venue's fault tools that soaks and crash tests build on: answers held until
released, seeded random faults, orders answered already filled."""

from __future__ import annotations

import threading

import pytest
import requests

from bot.types import OrderStatus, Side
from tests import test_alpaca_broker as broker_tests
from tests.fakes import FakeServer, Fault, RandomFaults, Request, Response
from tests.test_alpaca_broker import req

fake, broker = broker_tests.fake, broker_tests.broker  # the venue and a broker on it

ORDER = {"symbol": "TMF", "qty": "5", "side": "buy", "type": "market", "time_in_force": "day",
         "client_order_id": "held-1"}


def test_a_held_answer_waits_until_released_with_the_order_created(fake):
    held = Fault.held()
    fake.inject("POST", "/v2/orders", held)
    answers: list[int] = []
    headers = {"APCA-API-KEY-ID": fake.key_id, "APCA-API-SECRET-KEY": fake.secret}
    client = threading.Thread(target=lambda: answers.append(
        requests.post(f"{fake.url}/v2/orders", json=ORDER, headers=headers, timeout=10).status_code
    ))
    client.start()
    assert held.answered.wait(5)  # handled: the order exists while the client waits
    assert fake.order("held-1")["status"] == "new"
    client.join(0.3)
    assert client.is_alive() and answers == []
    held.release()
    client.join(5)
    assert answers == [200]


class Echo(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.handled = 0
        self.route("GET", "/ping", self._ping)
        self.route("GET", "/other", self._ping)

    def _ping(self, request: Request) -> Response:
        self.handled += 1
        return Response(200, {"ok": True})


def draw(seed: int) -> list[int]:
    with Echo() as server:
        server.fault_policy = RandomFaults({"429": 0.3, "500": 0.2, "lost": 0.2}, seed=seed,
                                           routes={("GET", "/ping")})
        codes = [requests.get(f"{server.url}/ping", timeout=5).status_code for _ in range(40)]
        assert requests.get(f"{server.url}/other", timeout=5).status_code == 200  # not drawn
        lost = sum(1 for _, _, kind in server.fault_policy.drawn if kind == "lost")
        assert server.handled == codes.count(200) + lost + 1  # a lost answer was handled
        return codes


def test_random_faults_are_seeded_and_mixed():
    first = draw(7)
    assert first == draw(7)
    assert {200, 429, 500, 504} <= set(first)
    with pytest.raises(ValueError, match="unknown kinds"):
        RandomFaults({"teapot": 1.0})


def test_a_market_order_can_be_answered_filled_or_partly_filled(fake, broker):
    fake.fill_on_submit = 1.0
    filled = broker.submit(req("TMF", Side.BUY, 10, ref=10.0), fake.now)
    assert (filled.status, filled.filled_quantity) == (OrderStatus.FILLED, 10.0)
    [(order, fill)] = broker.take_reports()
    assert order is filled and (fill.quantity, fill.price) == (10.0, pytest.approx(10.0))
    assert broker.take_reports() == [] and broker.poll(fake.now) == []  # reported once

    fake.fill_on_submit = 0.4
    part = broker.submit(req("UGL", Side.BUY, 10, ref=40.0), fake.now)
    assert (part.status, part.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 4.0)
    fake.fill(part.broker_order_id)
    updates = broker.poll(fake.now)  # the reply's fill (not taken), then the rest
    assert [f.quantity for _, f in updates] == [4.0, 6.0]
    assert float(fake.cash) == pytest.approx(100_000 - 100 - 400)
