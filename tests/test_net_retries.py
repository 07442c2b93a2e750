"""The HTTP retry budget of idempotent requests (bot.net) against the fake Alpaca and
FRED servers, with the policy's clock and sleep simulated: minutes of 429 pass in no time.

The production policies are used as they ship (only time is injected), so these tests
pin the budget docs/live-trading.md promises."""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
from dataclasses import replace

import pytest
import requests
from urllib3.exceptions import MaxRetryError

from bot.broker.alpaca import AlpacaBroker
from bot.broker.base import BrokerError
from bot.data.alpaca import AlpacaMarketData
from bot.data.fred import fetch_series
from bot.errors import DataError
from bot.net import ALPACA_POLICY, FRED_POLICY, RetryPolicy, make_session
from bot.secrets import Credentials
from tests.fakes import Response
from tests.fakes.alpaca_server import KEY_ID, SECRET, FakeAlpaca, Fault
from tests.fakes.fred_server import FakeFred
from tests.test_alpaca_data import DAYS, NOW, bars

BARS = "/v2/stocks/bars"


class SimulatedTime:
    """The policy's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def time_() -> SimulatedTime:
    return SimulatedTime()


@pytest.fixture
def fake():
    server = FakeAlpaca(now=NOW)
    server.daily_bars = {"SPY": bars(DAYS, 500.0)}
    server.prices = {"SPY": 500.0}
    server.start()
    yield server
    server.stop()


def shipped(policy: RetryPolicy, time_: SimulatedTime) -> RetryPolicy:
    return replace(policy, sleep=time_.sleep, clock=time_.clock)


def market_data(fake, policy: RetryPolicy) -> AlpacaMarketData:
    return AlpacaMarketData.connect(
        Credentials(KEY_ID, SECRET), base_url=fake.url, policy=policy, now=lambda: fake.now
    )


def test_500_then_three_429s_no_longer_lose_the_download(fake, time_):
    """The issue's sequence: with the old budget (4 tries in ~4 s) the fifth answer was
    never asked for, and the day's decision and close job were skipped."""
    fake.inject("GET", BARS, Fault.error(500), *[Fault.error(429, message="rate limit")] * 3)
    history = market_data(fake, shipped(ALPACA_POLICY, time_)).daily_history(["SPY"], DAYS[0])
    assert history.close[-1, 0] == 506.0
    assert len(fake.calls("GET", BARS)) == 5
    assert len(time_.sleeps) == 4


def test_429_for_minutes_is_waited_out_as_retry_after_says(fake, time_):
    fake.inject("GET", BARS, *[Fault.error(429, message="rate limit", retry_after=60)] * 4)
    history = market_data(fake, shipped(ALPACA_POLICY, time_)).daily_history(["SPY"], DAYS[0])
    assert history.close[-1, 0] == 506.0
    assert time_.sleeps == [60, 60, 60, 60]  # never earlier than asked: 4 minutes
    assert len(fake.calls("GET", BARS)) == 5


def test_alpacas_rate_limit_headers_are_waited_out_without_retry_after(fake, time_):
    """Alpaca's 429s carry X-RateLimit-Remaining 0 and X-RateLimit-Reset (a Unix time),
    no Retry-After: the retries wait for the window's reset, not the short backoff."""
    fake.inject("GET", BARS, *[Fault.error(429, message="too many requests", rate_reset_in=45)] * 2)
    history = market_data(fake, shipped(ALPACA_POLICY, time_)).daily_history(["SPY"], DAYS[0])
    assert history.close[-1, 0] == 506.0
    assert len(time_.sleeps) == 2 and all(43 <= s <= 46 for s in time_.sleeps), time_.sleeps


def test_the_budget_ends_the_retries_and_the_error_names_the_status(fake, time_):
    fake.inject("GET", BARS, *[Fault.error(429, message="rate limit", retry_after=100)] * 20)
    with pytest.raises(DataError, match="HTTP 429"):
        market_data(fake, shipped(ALPACA_POLICY, time_)).daily_history(["SPY"], DAYS[0])
    # 300 s budget from the first failure: retries at 100, 200 and 300 s, not at 400.
    assert time_.sleeps == [100, 100, 100]
    assert len(fake.calls("GET", BARS)) == 4


def test_a_retry_after_beyond_the_limit_stops_at_once(fake, time_):
    fake.inject("GET", BARS, Fault.error(429, message="come back in an hour", retry_after=3600))
    with pytest.raises(DataError, match="HTTP 429"):
        market_data(fake, shipped(ALPACA_POLICY, time_)).daily_history(["SPY"], DAYS[0])
    assert time_.sleeps == [] and len(fake.calls("GET", BARS)) == 1


def test_persistent_500s_stop_after_the_attempts_with_growing_jittered_waits(fake, time_):
    policy = replace(shipped(ALPACA_POLICY, time_), rng=lambda: 1.0)  # the largest jitter
    fake.inject("GET", BARS, *[Fault.error(500)] * 20)
    with pytest.raises(DataError, match="HTTP 500"):
        market_data(fake, policy).daily_history(["SPY"], DAYS[0])
    assert len(fake.calls("GET", BARS)) == ALPACA_POLICY.attempts == 8
    # base 1 s doubling to the 30 s cap, each halved by the jitter
    assert time_.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]


def test_jitter_keeps_waits_within_the_backoff(time_):
    policy = shipped(ALPACA_POLICY, time_)
    for retry in range(8):
        full = min(policy.max_delay, policy.base_delay * 2**retry)
        for _ in range(20):
            assert full * (1 - policy.jitter) <= policy.delay(retry) <= full


def test_an_http_date_retry_after_is_honoured(fake, time_):
    when = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90), usegmt=True)
    fake.inject("GET", "/v2/clock", Fault(Response(429, {"message": "slow down"}, {"Retry-After": when})))
    broker = AlpacaBroker.connect(Credentials(KEY_ID, SECRET), base_url=fake.url,
                                  policy=shipped(ALPACA_POLICY, time_))
    assert broker.clock().is_open is not None
    assert len(time_.sleeps) == 1 and 85 <= time_.sleeps[0] <= 91


def test_alpaca_py_adds_no_retry_of_its_own(fake, time_):
    """The SDK retries 429/504 three times, 3 s apart, by itself; switched off, the
    number of requests is exactly our attempts and every wait is ours."""
    policy = replace(shipped(ALPACA_POLICY, time_), attempts=3)
    fake.inject("GET", "/v2/account", *[Fault.error(504)] * 10)
    broker = AlpacaBroker.connect(Credentials(KEY_ID, SECRET), base_url=fake.url, policy=policy)
    with pytest.raises(Exception, match="504"):
        broker.account()
    assert len(fake.calls("GET", "/v2/account")) == 3 and len(time_.sleeps) == 2
    assert broker._client._retry == 0


def test_a_post_is_never_repeated_by_the_transport(fake, time_):
    fake.inject("POST", "/v2/orders", Fault.error(503), Fault.error(503))
    with make_session(shipped(ALPACA_POLICY, time_)) as session:
        answer = session.post(f"{fake.url}/v2/orders", json={}, headers={
            "APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET})
    assert answer.status_code == 503
    assert len(fake.calls("POST", "/v2/orders")) == 1 and time_.sleeps == []


def test_a_refused_connection_is_retried_then_reported_as_such(time_):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = replace(shipped(ALPACA_POLICY, time_), attempts=3)
    with make_session(policy) as session, pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{port}/v2/clock")
    assert len(time_.sleeps) == 2


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound, then let go."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_alpaca_is_named_with_its_tries_and_cause(time_):
    """Through the real alpaca-py clients: the error the user sees names the API, its
    scheme://host:port, the tries and the cause, never a key or a query string."""
    url = f"http://127.0.0.1:{closed_port()}"
    credentials = Credentials(KEY_ID, SECRET)
    policy = shipped(ALPACA_POLICY, time_)
    broker = AlpacaBroker.connect(credentials, base_url=url, policy=policy)
    with pytest.raises(BrokerError) as trading:
        broker.account()
    assert str(trading.value) == (
        f"account: could not reach Alpaca trading API at {url} after 8 tries: connection refused"
    )
    data = AlpacaMarketData.connect(credentials, base_url=url + "/", policy=policy)
    with pytest.raises(DataError) as bars:
        data.daily_history(["SPY"], DAYS[0])
    assert str(bars.value) == (
        f"alpaca:bars: could not reach Alpaca data API at {url} after 8 tries: connection refused"
    )
    for error in (trading.value, bars.value):
        text = str(error)
        assert KEY_ID not in text and SECRET not in text
        assert "?" not in text and "SPY" not in text and "/v2" not in text  # no path or query
    assert len(time_.sleeps) == 2 * 7  # retried as any failure is


def test_an_unreachable_fred_is_named_with_its_tries_and_cause(time_):
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DataError) as failed:
        fetch_series("VIX", base_url=url, start=dt.date(2024, 1, 2),
                     policy=shipped(FRED_POLICY, time_))
    assert str(failed.value) == (
        f"fred:VIXCLS: download failed: could not reach FRED at {url} after 4 tries: "
        "connection refused"
    )


def test_a_server_that_never_answers_is_named_with_the_read_timeout(time_):
    fred = FakeFred()
    fred.series = {"DTB3": [(dt.date(2024, 11, 29), 4.42)]}
    policy = replace(shipped(FRED_POLICY, time_), attempts=2, timeout=0.2)
    with fred:
        fred.inject("GET", "/graph/fredgraph.csv", Fault.slow(30), Fault.slow(30))
        with pytest.raises(DataError) as failed:
            fetch_series("DTB3", base_url=fred.url, policy=policy)
    assert str(failed.value) == (
        f"fred:DTB3: download failed: no answer from FRED at {fred.url} after 2 tries: "
        "read timed out (0.2 s)"
    )


def test_unreachable_names_the_cause_of_each_transport_failure():
    """The causes a closed port cannot show (a name that does not resolve, a connect
    timeout), from urllib3's own exceptions; never the URL's path, query or user info."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError

    from bot.net import unreachable

    url = "https://user:pw@data.alpaca.markets:8443/v2/stocks/bars?symbols=SPY&token=s3cret"

    def gave_up(reason: Exception, tries: int) -> requests.ConnectionError:
        error = MaxRetryError(None, "/v2/stocks/bars?token=s3cret", reason)  # type: ignore[arg-type]
        error.tries = tries  # type: ignore[attr-defined]  # as BudgetRetry sets it
        return requests.ConnectionError(error)

    dns = NameResolutionError("data.alpaca.markets", None, socket.gaierror(-2, "unknown"))  # type: ignore[arg-type]
    assert unreachable("Alpaca data API", url, gave_up(dns, 8)) == (
        "could not reach Alpaca data API at https://data.alpaca.markets:8443 after 8 tries: "
        "host name not found (DNS)"
    )
    slow = ConnectTimeoutError(None, "timed out")
    assert unreachable(None, url, gave_up(slow, 1), (3.0, 10.0)) == (
        "could not reach https://data.alpaca.markets:8443: connect timed out (3 s)"
    )


def test_fred_has_the_smaller_budget_since_it_falls_back_to_stored_series(time_):
    fred = FakeFred()
    fred.series = {"DTB3": [(dt.date(2024, 11, 29), 4.42)]}
    with fred:
        fred.inject("GET", "/graph/fredgraph.csv", *[Fault.error(503, retry_after=25)] * 10)
        with pytest.raises(DataError, match="HTTP 503"):
            fetch_series("DTB3", base_url=fred.url, policy=shipped(FRED_POLICY, time_))
    assert time_.sleeps == [25, 25]  # a third wait would pass FRED's 60 s budget
    assert FRED_POLICY.budget == 60 and FRED_POLICY.attempts == 4


def test_rate_limit_headers_count_only_when_the_window_is_spent():
    import time as wall

    from bot.net import retry_after_seconds

    reset = str(int(wall.time()) + 30)
    assert retry_after_seconds({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": reset}) is None
    assert 28 <= retry_after_seconds({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}) <= 31
    assert retry_after_seconds({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"}) is None
    assert retry_after_seconds({"Retry-After": "7", "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": reset}) == 7.0  # Retry-After first
