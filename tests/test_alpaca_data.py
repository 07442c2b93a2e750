"""AlpacaMarketData against the fake data API, through the real StockHistoricalDataClient."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from bot.calendar import sessions
from bot.data.alpaca import AlpacaMarketData, write_csv_directory
from bot.data.base import MacroSeries
from bot.data.csv_source import load_csv_directory
from bot.errors import DataError
from bot.net import RetryPolicy
from bot.secrets import Credentials
from tests.fakes import Response
from tests.fakes.alpaca_server import KEY_ID, SECRET, DailyBar, FakeAlpaca, Fault

NOW = dt.datetime(2024, 11, 27, 15, 0, tzinfo=dt.UTC)
DAYS = [dt.date(2024, 11, d) for d in (18, 19, 20, 21, 22, 25, 26)]


def bars(days, first: float = 100.0, step: float = 1.0) -> list[DailyBar]:
    out = []
    for i, day in enumerate(days):
        close = first + step * i
        out.append(DailyBar(day, close - 0.5, close + 1.0, close - 1.0, close))
    return out


@pytest.fixture
def fake():
    server = FakeAlpaca(now=NOW)
    server.daily_bars = {"SPY": bars(DAYS, 500.0), "TMF": bars(DAYS[3:], 10.0, 0.5)}
    server.start()
    yield server
    server.stop()


def connect(fake, sleeps, **kwargs) -> AlpacaMarketData:
    policy = RetryPolicy(attempts=3, timeout=5.0, base_delay=0.1, jitter=0.0, sleep=sleeps.append)
    return AlpacaMarketData.connect(
        Credentials(KEY_ID, SECRET),
        base_url=fake.url,
        policy=policy,
        now=lambda: fake.now,
        **kwargs,
    )


@pytest.fixture
def data(fake, sleeps):
    return connect(fake, sleeps)


def test_one_request_for_all_symbols_follows_every_page(fake, data):
    fake.bars_page_size = 3  # 7 + 4 bars -> 4 pages
    history = data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))
    calls = fake.calls("GET", "/v2/stocks/bars")
    assert len(calls) == 4
    assert {c.query["symbols"] for c in calls} == {"SPY,TMF"}
    assert [c.query.get("page_token") is None for c in calls] == [True, False, False, False]
    assert history.symbols == ("SPY", "TMF")
    assert history.dates.tolist() == DAYS
    assert history.close[:, 0].tolist() == [500.0 + i for i in range(7)]
    assert np.isnan(history.close[:3, 1]).all()  # TMF before its first bar
    assert history.close[3:, 1].tolist() == [10.0, 10.5, 11.0, 11.5]
    assert history.open[3:, 1].tolist() == [9.5, 10.0, 10.5, 11.0]


def test_a_refused_key_says_which_variables_to_check(fake, sleeps):
    fake.secret = "another-secret"
    with pytest.raises(DataError) as caught:
        connect(fake, sleeps).daily_history(["SPY"], dt.date(2024, 11, 18))
    text = str(caught.value)
    assert "HTTP 403" in text and "check APCA_API_KEY_ID and APCA_API_SECRET_KEY" in text
    assert SECRET not in text and KEY_ID not in text


def test_a_latest_price_too_old_is_not_used_to_size_orders(fake, data):
    """A thin fund's last IEX print can be yesterday's: a trade older than 30 minutes
    gives way to a fresh minute bar, and with neither fresh the symbol is left out (its
    orders are sized on the close, with a warning)."""
    from structlog.testing import capture_logs

    fake.latest_trades = {"SPY": 600.0, "UGL": 30.0, "DIG": 40.0}
    fake.latest_bars = {"UGL": 31.0, "DIG": 41.0}
    yesterday = NOW - dt.timedelta(hours=20)
    fake.trade_times = {"UGL": yesterday, "DIG": yesterday}
    fake.bar_times = {"DIG": yesterday}
    fake.trade_times["SPY"] = NOW - dt.timedelta(seconds=2.5)  # fresh, with a fraction
    with capture_logs() as logs:
        prices = data.latest_prices(["SPY", "UGL", "DIG"])
    assert prices == {"SPY": 600.0, "UGL": 31.0}
    (warning,) = [e for e in logs if e["event"].startswith("latest price too old")]
    assert warning["symbol"] == "DIG"


def test_trade_times_with_nanoseconds_are_read():
    from bot.data.alpaca import _older

    limit = dt.datetime(2024, 11, 27, 14, 59, 59, tzinfo=dt.UTC)
    assert _older("2024-11-27T14:59:58.123456789Z", limit)  # Alpaca's nanoseconds
    assert not _older("2024-11-27T15:00:00.5Z", limit)
    assert not _older("2024-11-27T10:00:00-05:00", limit)  # 15:00 UTC
    assert not _older("not a time", limit) and not _older(None, limit)  # not judged


def test_request_asks_for_adjusted_daily_sip_bars_ending_16_minutes_ago(fake, data):
    fake.splits = {"SPY": [(dt.date(2024, 11, 21), 4.0)]}  # 4:1 split effective on the 21st
    fake.daily_bars["SPY"] = [
        DailyBar(d, c, c, c, c)
        for d, c in zip(DAYS, [400.0, 404.0, 408.0, 102.5, 103.0, 104.0, 105.0], strict=True)
    ]
    history = data.daily_history(["SPY"], dt.date(2024, 11, 18))
    [call] = fake.calls("GET", "/v2/stocks/bars")
    assert call.query["adjustment"] == "all"
    assert call.query["feed"] == "sip"
    assert call.query["timeframe"] == "1Day"
    end = dt.datetime.fromisoformat(call.query["end"])
    assert end <= NOW - dt.timedelta(minutes=16)
    # Adjusted: no 4x drop on the split day.
    assert history.close[:, 0].tolist() == [100.0, 101.0, 102.0, 102.5, 103.0, 104.0, 105.0]


def test_explicit_end_date_is_kept_when_in_the_past(fake, data):
    history = data.daily_history(["SPY"], dt.date(2024, 11, 18), dt.date(2024, 11, 20))
    assert history.dates.tolist() == DAYS[:3]


def test_feeds_are_configurable_and_a_free_key_gets_sip_bars(fake, sleeps):
    """A free key may query SIP data older than 15 minutes (Alpaca's market data FAQ):
    bars on SIP by default, ending 16 minutes back (a minute for a clock behind
    Alpaca's); latest trades on IEX by default, since the latest SIP trade is recent
    data a free key is refused (403)."""
    data = connect(fake, sleeps)
    data.daily_history(["SPY"], dt.date(2024, 11, 18))
    bars = fake.calls("GET", "/v2/stocks/bars")[-1].query
    assert bars["feed"] == "sip"
    assert dt.datetime.fromisoformat(bars["end"].replace("Z", "+00:00")) <= NOW - dt.timedelta(minutes=16)
    fake.latest_trades["SPY"] = 100.0
    data.latest_prices(["SPY"])
    assert fake.calls("GET", "/v2/stocks/trades/latest")[-1].query["feed"] == "iex"
    paid = connect(fake, sleeps, latest_feed="sip")
    with pytest.raises(DataError, match="403.*recent SIP data.*alpaca_latest_feed"):
        paid.latest_prices(["SPY"])
    fake.sip_allowed = True  # a paid plan
    assert paid.latest_prices(["SPY"]) == {"SPY": 100.0}
    iex = connect(fake, sleeps, feed="iex")
    iex.daily_history(["SPY"], dt.date(2024, 11, 18))
    assert fake.calls("GET", "/v2/stocks/bars")[-1].query["feed"] == "iex"


def test_sip_bars_refused_to_a_free_key_point_at_the_clock(fake, sleeps):
    """Bars end 16 minutes back, past the 15 a free key waits: a refusal means this
    machine's clock is ahead of Alpaca's. The hint used to suggest IEX bars, whose
    closes are not the official ones."""
    ahead = AlpacaMarketData.connect(
        Credentials(KEY_ID, SECRET), base_url=fake.url, now=lambda: fake.now + dt.timedelta(minutes=3),
        policy=RetryPolicy(attempts=1, timeout=5.0, base_delay=0.1, jitter=0.0, sleep=sleeps.append),
    )
    with pytest.raises(DataError, match="recent SIP data.*clock is more than a minute ahead") as refused:
        ahead.daily_history(["SPY"], dt.date(2024, 11, 18), NOW.date())
    assert "iex" not in str(refused.value)


def test_a_failed_page_is_retried_alone(fake, data, sleeps):
    fake.bars_page_size = 4
    fake.inject(
        "GET", "/v2/stocks/bars", Fault.passthrough(), Fault.error(503, None, "unavailable")
    )
    history = data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))
    tokens = [c.query.get("page_token") for c in fake.calls("GET", "/v2/stocks/bars")]
    assert tokens[0] is None and tokens[1] == tokens[2] and len(tokens) == 4
    assert sleeps == [0.1]
    assert history.close[-1].tolist() == [506.0, 11.5]


def test_missing_symbol_is_an_error_naming_it(fake, data):
    with pytest.raises(DataError, match=r"alpaca:UGL \[symbol\]"):
        data.daily_history(["SPY", "UGL"], dt.date(2024, 11, 1))


@pytest.mark.parametrize(
    ("bad", "field"),
    [({"close": math.nan}, "close"), ({"close": 0.0}, "close"), ({"open": -1.0}, "open")],
)
def test_unusable_prices_are_errors_naming_symbol_and_field(fake, data, bad, field):
    rows = bars(DAYS[3:], 10.0)
    rows[2] = DailyBar(**{**rows[2].__dict__, **bad})
    fake.daily_bars["TMF"] = rows
    with pytest.raises(DataError, match=rf"alpaca:TMF \[{field}\].*2024-11-25"):
        data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))


def test_duplicate_bars_are_an_error(fake, data):
    fake.daily_bars["TMF"] = bars(DAYS[3:], 10.0) + bars([DAYS[4]], 10.0)
    with pytest.raises(DataError, match=r"alpaca:TMF \[date\]: duplicate bar on 2024-11-22"):
        data.daily_history(["TMF"], dt.date(2024, 11, 1))


def test_short_gap_is_forward_filled_long_one_is_an_error(fake, data):
    fake.daily_bars["TMF"] = [b for b in bars(DAYS, 10.0) if b.day != DAYS[4]]
    history = data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))
    assert history.close[4, 1] == history.close[3, 1] and np.isnan(history.open[4, 1])
    assert history.filled is not None
    assert np.argwhere(history.filled).tolist() == [[4, 1]]  # marked: never a fill price
    many = [d.astype(dt.date) for d in sessions("2024-10-01", "2024-10-14")]  # 10 sessions
    fake.daily_bars = {"SPY": bars(many, 500.0), "TMF": bars([many[0], many[-1]], 10.0)}
    with pytest.raises(DataError, match=r"alpaca:TMF \[date\]"):
        data.daily_history(["SPY", "TMF"], dt.date(2024, 10, 1))


def test_malformed_answer_is_a_data_error(fake, data):
    fake.inject("GET", "/v2/stocks/bars", Fault.malformed())
    with pytest.raises(DataError, match="malformed JSON"):
        data.daily_history(["SPY"], dt.date(2024, 11, 1))


def test_answer_of_unexpected_shape_is_a_data_error(fake, data):
    fake.inject("GET", "/v2/stocks/bars", Fault(Response(200, {"unexpected": {}})))
    with pytest.raises(DataError, match="alpaca:bars: malformed answer"):
        data.daily_history(["SPY"], dt.date(2024, 11, 1))


def _bar(day: str, close: object = 10.0, **fields: object) -> dict[str, object]:
    return {"t": f"{day}T05:00:00Z", "o": 9.5, "h": 11.0, "l": 9.0, "c": close, "v": 100, **fields}


@pytest.mark.parametrize(
    ("bar", "expected"),
    [
        ({"c": "ten"}, r"alpaca:TMF \[c\]: a price that is not a number"),
        ({"c": [10.0]}, r"alpaca:TMF \[c\]: a price that is not a number"),
        ({"t": "yesterday"}, r"alpaca:TMF \[t\]: unusable bar time 'yesterday'"),
        ({"t": "2024-11-19T05:00:00"}, r"alpaca:TMF \[t\]: unusable bar time"),  # no zone
        ({"t": None}, r"alpaca:TMF \[t\]: unusable bar time None"),
        ({"c": None}, r"alpaca:TMF \[close\]"),  # null: NaN, refused by the price rules
    ],
)
def test_a_bad_field_in_a_bar_is_an_error_naming_it(fake, data, bar, expected):
    raw = [_bar("2024-11-18"), {**_bar("2024-11-19"), **bar}, _bar("2024-11-20")]
    fake.inject("GET", "/v2/stocks/bars", Fault(Response(200, {"bars": {"TMF": raw}})))
    with pytest.raises(DataError, match=expected):
        data.daily_history(["TMF"], dt.date(2024, 11, 1))


def test_a_bar_without_a_price_or_not_an_object_is_an_error(fake, data):
    raw = [_bar("2024-11-18"), {"t": "2024-11-19T05:00:00Z", "o": 1.0, "h": 1.0, "l": 1.0}]
    fake.inject("GET", "/v2/stocks/bars", Fault(Response(200, {"bars": {"TMF": raw}})))
    with pytest.raises(DataError, match=r"alpaca:TMF \[c\]: a bar without this price"):
        data.daily_history(["TMF"], dt.date(2024, 11, 1))
    fake.inject("GET", "/v2/stocks/bars", Fault(Response(200, {"bars": {"TMF": ["a bar"]}})))
    with pytest.raises(DataError, match=r"alpaca:TMF \[bars\]: malformed answer"):
        data.daily_history(["TMF"], dt.date(2024, 11, 1))


@pytest.mark.parametrize("bars", [5, True, "bars", {"t": "2024-11-19T05:00:00Z"}])
def test_a_symbols_bars_that_are_not_a_list_are_an_error_not_a_traceback(fake, data, bars):
    fake.inject("GET", "/v2/stocks/bars", Fault(Response(200, {"bars": {"TMF": bars}})))
    # alpaca-py refuses some shapes itself (alpaca:bars), the bot the rest (alpaca:TMF)
    with pytest.raises(DataError, match=r"alpaca:(TMF \[bars\]|bars): malformed answer"):
        data.daily_history(["TMF"], dt.date(2024, 11, 1))


def test_bar_stamps_are_read_as_new_york_session_dates(fake, data):
    """Midnight New York in UTC (05:00Z in winter, 04:00Z in summer) and with an offset."""
    raw = [  # daylight saving time ends on Sunday 2024-11-03
        {**_bar("2024-11-01"), "t": "2024-11-01T04:00:00Z"},
        {**_bar("2024-11-04"), "t": "2024-11-04T00:00:00-05:00"},
        _bar("2024-11-05"),
    ]
    fake.inject("GET", "/v2/stocks/bars", Fault(Response(200, {"bars": {"SPY": raw}})))
    history = data.daily_history(["SPY"], dt.date(2024, 10, 1))
    days = [str(d) for d in history.dates[np.isfinite(history.close[:, 0])]]
    assert days == ["2024-11-01", "2024-11-04", "2024-11-05"]


def test_latest_prices_trade_first_then_bar(fake, data):
    fake.latest_trades = {"SPY": 601.25}
    fake.latest_bars = {"SPY": 600.0, "TMF": 9.87}
    assert data.latest_prices(["SPY", "TMF"]) == {"SPY": 601.25, "TMF": 9.87}
    [bar_call] = fake.calls("GET", "/v2/stocks/bars/latest")
    assert bar_call.query["symbols"] == "TMF" and bar_call.query["feed"] == "iex"


def test_latest_price_missing_or_bad_is_an_error(fake, data):
    fake.latest_trades = {"SPY": 601.25}
    with pytest.raises(DataError, match=r"alpaca:TMF \[price\]"):
        data.latest_prices(["SPY", "TMF"])
    fake.latest_trades = {"SPY": 0.0}
    with pytest.raises(DataError, match=r"alpaca:SPY \[trade.price\]"):
        data.latest_prices(["SPY"])


def test_csv_cache_round_trips_through_the_csv_loader(fake, data, tmp_path):
    history = data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))
    vix = MacroSeries(
        "VIX",
        np.array(["2024-11-20", "2024-11-21"], dtype="datetime64[D]"),
        np.array([16.85, 17.16]),
    )
    write_csv_directory(history, {"VIX": vix}, tmp_path)
    header = (tmp_path / "prices" / "TMF.csv").read_text().splitlines()[0]
    assert header == "date,open,high,low,close,adj_close,volume"
    loaded = load_csv_directory(tmp_path, ["SPY", "TMF"], macro=["VIX"])
    np.testing.assert_array_equal(loaded.prices.dates, history.dates)
    np.testing.assert_allclose(loaded.prices.close, history.close, rtol=1e-15)
    np.testing.assert_allclose(loaded.prices.open, history.open, rtol=1e-15)
    np.testing.assert_array_equal(loaded.macro["VIX"].dates, vix.dates)
    np.testing.assert_allclose(loaded.macro["VIX"].values, vix.values, rtol=1e-15)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_bars_that_stop_early_are_not_forward_filled(fake, data):
    """A symbol whose bars stop before the others' must not look current: the days after
    its last bar stay NaN (the daemon then refuses to decide), never its old close."""
    fake.daily_bars["TMF"] = bars(DAYS[:3], 10.0)
    history = data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))
    assert len(history.dates) == len(DAYS)
    # One quiet day is carried (marked filled: no order fills at it); after that, NaN.
    assert np.isfinite(history.close[:4, 1]).all() and np.isnan(history.close[4:, 1]).all()
    assert history.filled[:, 1].tolist() == [False] * 3 + [True] + [False] * (len(DAYS) - 4)


def test_a_thin_etf_without_the_days_print_is_carried_one_day(fake, data):
    """IEX may have no trade in a thin ETF on a quiet day: that must not stop the day."""
    fake.daily_bars["TMF"] = bars(DAYS[:-1], 10.0)
    history = data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))
    assert history.close[-1, 1] == history.close[-2, 1] and bool(history.filled[-1, 1])


def test_csv_cache_leaves_forward_filled_days_out(fake, data, tmp_path):
    """Written as a row, a filled day would come back as a real bar (close-only fallback)
    and a backtest on the cache would fill orders at its stale close."""
    fake.daily_bars["TMF"] = [b for b in bars(DAYS, 10.0) if b.day != DAYS[4]]
    history = data.daily_history(["SPY", "TMF"], dt.date(2024, 11, 1))
    write_csv_directory(history, {}, tmp_path)
    lines = (tmp_path / "prices" / "TMF.csv").read_text().splitlines()
    assert len(lines) == 1 + len(DAYS) - 1 and not any(str(DAYS[4]) in x for x in lines)
    loaded = load_csv_directory(tmp_path, ["SPY", "TMF"], macro=()).prices
    np.testing.assert_array_equal(loaded.filled, history.filled)
    np.testing.assert_allclose(loaded.close, history.close, rtol=1e-15)


def test_the_default_end_leaves_out_a_session_still_open(fake, sleeps):
    """`bot data fetch` asks with no end. During a session Alpaca's daily bar for it is
    still forming; it used to be stored as that day's close. The default end is now the
    last session closed 16 minutes (the data delay) before."""
    forming = dt.date(2024, 11, 27)
    fake.daily_bars["SPY"] = bars([*DAYS, forming], 500.0)
    during = connect(fake, sleeps)  # fake.now is 10:00 New York on the 27th
    assert during.daily_history(["SPY"], dt.date(2024, 11, 18)).dates[-1] == np.datetime64("2024-11-26")
    # an explicit end inside the open session still gets its bar: the caller asked for it
    asked = during.daily_history(["SPY"], dt.date(2024, 11, 18), forming)
    assert asked.dates[-1] == np.datetime64(forming)

    def at(when: dt.datetime) -> AlpacaMarketData:
        return AlpacaMarketData.connect(Credentials(KEY_ID, SECRET), base_url=fake.url,
                                        now=lambda: when, feed="iex")  # the fake's clock is behind

    close = dt.datetime(2024, 11, 27, 21, 0, tzinfo=dt.UTC)  # 16:00 New York
    before = at(close + dt.timedelta(minutes=15)).daily_history(["SPY"], dt.date(2024, 11, 18))
    assert before.dates[-1] == np.datetime64("2024-11-26")  # still inside the data delay
    after = at(close + dt.timedelta(minutes=16)).daily_history(["SPY"], dt.date(2024, 11, 18))
    assert after.dates[-1] == np.datetime64(forming)
    # the day after Thanksgiving closes at 13:00 New York (18:00 UTC)
    fake.daily_bars["SPY"] = bars([*DAYS, forming, dt.date(2024, 11, 29)], 500.0)
    half_day = dt.datetime(2024, 11, 29, 18, 16, tzinfo=dt.UTC)
    assert at(half_day).daily_history(["SPY"], dt.date(2024, 11, 18)).dates[-1] == np.datetime64("2024-11-29")
