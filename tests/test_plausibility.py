"""Plausibility checks (bot/data/plausibility.py) on every data path: CSV files, Alpaca
bars, FRED series and the shared alignment. Well-formed but wrong values (a split-like
jump, an open 50x the close, VIX -50, a Saturday or year-2300 row) stop the load with an
error naming the file or source, the row and the value; real data and the synthetic
market pass; `data.allow_extreme` accepts a named day knowingly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from bot.calendar import sessions
from bot.cli import main
from bot.clock import SimulatedClock
from bot.config import load_settings, parse_settings
from bot.daemon.live import build_live
from bot.data.align import SymbolBars, align_prices
from bot.data.alpaca import AlpacaMarketData
from bot.data.base import MACRO_SERIES
from bot.data.csv_source import load_csv_directory, read_macro_file
from bot.data.fred import parse_fredgraph_csv
from bot.data.plausibility import (
    PlausibilityRules,
    check_bars,
    check_macro,
    move_bound,
    robust_scale,
)
from bot.data.synthetic import KNOWN_SYMBOLS, synthetic_market
from bot.errors import ConfigError, DataError
from bot.net import RetryPolicy
from bot.secrets import Credentials
from tests import test_daemon_live as daemon_tests
from tests.conftest import CONFIG
from tests.fakes.alpaca_server import KEY_ID, SECRET, DailyBar, FakeAlpaca

HEADER = "date,open,high,low,close,adj_close,volume"
DAYS = sessions("2024-01-02", "2024-12-31")[:60]  # NYSE sessions only


def _bar_rows(closes: np.ndarray, days: np.ndarray = DAYS) -> list[str]:
    """OHLC rows around `closes` (open a little below, high/low bracketing both)."""
    rows = []
    for day, close in zip(days, closes, strict=False):
        o = close * 0.995
        rows.append(f"{day},{o:.6f},{close * 1.01:.6f},{o * 0.99:.6f},{close:.6f},{close:.6f},1000")
    return rows


def _calm_closes(n: int = len(DAYS), seed: int = 1) -> np.ndarray:
    """A series moving ~1% a day: its own bound is then the 0.25 floor."""
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


def _write_prices(root: Path, symbol: str, rows: list[str], header: str = HEADER) -> Path:
    path = root / "prices" / f"{symbol}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _load_error(root: Path, symbols: list[str], rules: PlausibilityRules | None = None):
    with pytest.raises(DataError) as caught:
        load_csv_directory(root, symbols, macro=(), rules=rules or PlausibilityRules())
    return caught.value


# --- prices in CSV files -----------------------------------------------------------------


def test_a_split_like_jump_names_file_line_date_value_and_the_way_to_accept_it(tmp_path):
    closes = _calm_closes()
    closes[40:] *= 10  # an unadjusted 1:10 reverse split
    path = _write_prices(tmp_path, "ABC", _bar_rows(closes))
    error = _load_error(tmp_path, ["ABC"])
    text = str(error)
    assert error.field == "close" and str(path) in text
    assert f"{DAYS[40]} (line 42)" in text  # header is line 1, row 40 is line 42
    assert f"close {float(f'{closes[40]:.6f}'):g} is a x" in text  # x10 times that day's move
    assert f'data.allow_extreme = ["ABC:{DAYS[40]}"]' in text


def test_an_accepted_day_loads_and_says_so_in_the_log(tmp_path):
    closes = _calm_closes()
    closes[40:] *= 10
    _write_prices(tmp_path, "ABC", _bar_rows(closes))
    rules = PlausibilityRules.from_entries([f"ABC:{DAYS[40]}"])
    with capture_logs() as logs:
        prices = load_csv_directory(tmp_path, ["ABC"], macro=(), rules=rules).prices
    assert prices.close[40, 0] == pytest.approx(closes[40], rel=1e-6)
    assert any(e["event"] == "extreme value accepted by data.allow_extreme" for e in logs)
    # Another symbol's or another day's waiver accepts nothing.
    for entry in (f"XYZ:{DAYS[40]}", f"ABC:{DAYS[41]}"):
        assert _load_error(tmp_path, ["ABC"], PlausibilityRules.from_entries([entry]))


def test_a_halving_is_caught_even_on_a_volatile_series_that_passes_its_crash_day(tmp_path):
    """Bound from the series' own history: a 3x-ETF-like series moving ~3% a day passes a
    real -34% crash day, but not a 2:1 split that was never adjusted (-50%)."""
    rng = np.random.default_rng(3)
    moves = rng.normal(0, 0.025, len(DAYS))
    moves[30] = np.log(1 - 0.34)  # a crash day, like TQQQ on 2020-03-16
    closes = 50 * np.exp(np.cumsum(moves))
    _write_prices(tmp_path, "LEV", _bar_rows(closes))
    load_csv_directory(tmp_path, ["LEV"], macro=())
    closes[45:] /= 2
    _write_prices(tmp_path, "LEV", _bar_rows(closes))
    assert f"{DAYS[45]}" in str(_load_error(tmp_path, ["LEV"]))


def test_an_open_fifty_times_the_close(tmp_path):
    closes = _calm_closes()
    rows = _bar_rows(closes)
    day, o, _h, _l, c, adj, v = rows[20].split(",")
    rows[20] = ",".join([day, f"{float(c) * 50:.4f}", "", "", c, adj, v])  # no high/low
    _write_prices(tmp_path, "OPN", rows)
    error = _load_error(tmp_path, ["OPN"])
    assert error.field == "open" and day in str(error) and "x5" in str(error)
    # A high in the row does not hide it: the open's own move check still refuses it.
    rows[20] = ",".join([day, f"{float(c) * 50:.4f}", f"{float(c) * 1.01:.4f}", "", c, adj, v])
    _write_prices(tmp_path, "OPN", rows)
    error = _load_error(tmp_path, ["OPN"])
    assert error.field == "open" and day in str(error) and "x5" in str(error)


def test_a_real_bar_opening_a_cent_above_its_high_is_accepted(tmp_path):
    """Alpaca's daily open is the listing exchange's official open, a print that does not
    set the bar's high or low (its staff: "it can happen that Open is higher than High";
    AAAA 2021-04-01 O 25.05 H 25.04 L 25.04 C 25.04). Refused, one such bar stopped
    every decision for the length of the window."""
    closes = _calm_closes()
    rows = _bar_rows(closes)
    day, _o, _h, _l, c, adj, v = rows[20].split(",")
    close = float(c)
    rows[20] = ",".join([day, f"{close * 1.0004:.4f}", f"{close:.4f}", f"{close:.4f}", c, adj, v])
    _write_prices(tmp_path, "OPN", rows)
    market = load_csv_directory(tmp_path, ["OPN"], macro=())
    assert market.prices.select(["OPN"]).open[20, 0] > close


def test_high_below_close_and_low_above_open(tmp_path):
    closes = _calm_closes()
    for column, index, value in (("high", 2, "90"), ("low", 3, "200")):
        rows = _bar_rows(closes)
        parts = rows[10].split(",")
        parts[index] = value
        rows[10] = ",".join(parts)
        _write_prices(tmp_path, "HL", rows)
        error = _load_error(tmp_path, ["HL"])
        assert error.field == column and DAYS[10].astype(str) in str(error)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("2024-01-06,,,,100,100,", "2024-01-06 (line 5): a Saturday, not an NYSE trading day"),
        ("2024-01-15,,,,100,100,", "2024-01-15 (line 5): an exchange holiday"),  # MLK day
        ("2300-01-03,,,,100,100,", "2300-01-03 (line 5): the date is after today"),
        ("1899-12-29,,,,100,100,", "1899-12-29 (line 2): the date is before 1900-01-01"),
    ],
)
def test_rows_off_the_exchange_calendar_are_refused(tmp_path, row, expected):
    rows = ["2024-01-02,,,,100,100,", "2024-01-03,,,,100,100,", "2024-01-05,,,,100,100,"]
    rows = sorted([*rows, row])
    _write_prices(tmp_path, "CAL", rows)
    error = _load_error(tmp_path, ["CAL"])
    assert error.field == "date" and expected in str(error), str(error)


def test_a_close_carried_forward_for_days_is_refused_and_can_be_accepted(tmp_path):
    """A vendor that forward-filled a gap (or a stalled feed) shows one close for a week:
    its 20-day volatility falls toward 0 and inverse-volatility weighting buys it. Four
    repeats pass (SHY has four in its real history), five do not."""
    closes = _calm_closes()
    closes[31:35] = closes[30]  # four repeats: a quiet fund can do that
    _write_prices(tmp_path, "STL", _bar_rows(closes))
    load_csv_directory(tmp_path, ["STL"], macro=())
    closes[35] = closes[30]  # the fifth
    path = _write_prices(tmp_path, "STL", _bar_rows(closes))
    error = _load_error(tmp_path, ["STL"])
    text = str(error)
    assert error.field == "close" and str(path) in text
    assert f"{DAYS[30]} (line 32): close {float(f'{closes[30]:.6f}'):g} repeats unchanged" in text
    assert f"in the next 5 sessions, to {DAYS[35]}" in text
    assert f'data.allow_extreme = ["STL:{DAYS[30]}"]' in text
    rules = PlausibilityRules.from_entries([f"STL:{DAYS[30]}"])
    with capture_logs() as logs:
        load_csv_directory(tmp_path, ["STL"], macro=(), rules=rules)
    assert any(e["event"] == "extreme value accepted by data.allow_extreme" for e in logs)


def test_a_fund_that_barely_moves_may_sit_on_one_price():
    """A bill fund moves a few hundredths of a percent a day and sits on one price for
    weeks (BIL for 18 sessions in 2011): no stale-feed error for it."""
    rng = np.random.default_rng(5)
    closes = 91.5 * np.exp(np.cumsum(rng.normal(0, 0.0003, len(DAYS))))
    closes[10:30] = closes[9]
    check_bars("BIL", SymbolBars("bills", DAYS, closes, closes))
    moving = _calm_closes()
    moving[10:30] = moving[9]
    with pytest.raises(DataError, match="repeats unchanged in the next 20 sessions"):
        check_bars("ABC", SymbolBars("moving", DAYS, moving, moving))


def test_a_close_of_1e300_is_an_error_not_a_crash(tmp_path):
    rows = _bar_rows(_calm_closes())
    parts = rows[0].split(",")
    rows[0] = ",".join([parts[0], "", "", "", "1e300", "1e300", ""])
    _write_prices(tmp_path, "BIG", rows)
    error = _load_error(tmp_path, ["BIG"])
    assert error.field == "close" and "1e+300" in str(error) and "above 1e+07" in str(error)


def test_the_backtest_command_stops_with_one_line_on_a_close_of_1e300(tmp_path, capsys):
    """Before the checks: ValueError traceback from inverse_vol_weights, exit 1."""
    closes = _calm_closes(len(DAYS))
    for symbol in ("TQQQ", "UPRO", "UDOW", "TMF", "UGL", "DIG"):
        _write_prices(tmp_path, symbol, _bar_rows(closes))
    rows = _bar_rows(closes)
    parts = rows[30].split(",")
    rows[30] = ",".join([parts[0], parts[1], "", "", "1e300", "1e300", ""])
    _write_prices(tmp_path, "TQQQ", rows)
    code = main(["backtest", "--config", str(CONFIG), "--data-dir", str(tmp_path),
                 "--database", f"sqlite:///{tmp_path}/t.sqlite", "--no-charts", "--no-benchmarks"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "TQQQ.csv [close]" in err[-1] and "1e+300" in err[-1]
    assert "Traceback" not in "\n".join(err)


# --- macro series ------------------------------------------------------------------------


def _write_macro(root: Path, name: str, rows: list[str]) -> Path:
    path = root / "macro" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["date,value", *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("VIX", "-50", "VIX -50 is outside its plausible range (5 to 150)"),
        ("VIX", "1e308", "VIX 1e+308 is outside"),
        ("T10Y2Y", "12.5", "T10Y2Y 12.5 is outside its plausible range (-10 to 10)"),
        ("USEPUINDXD", "0", "USEPUINDXD 0 is outside its plausible range (above 0 up to 3000)"),
        ("DTB3", "45", "DTB3 45 is outside"),
    ],
)
def test_macro_values_outside_their_range(tmp_path, name, value, expected):
    path = _write_macro(tmp_path, name, ["2024-01-02,6", f"2024-01-03,{value}", "2024-01-04,7"])
    with pytest.raises(DataError) as caught:
        read_macro_file(path, name)
    text = str(caught.value)
    assert caught.value.field == "value" and str(path) in text
    assert "2024-01-03 (line 3)" in text and expected in text


def test_macro_dates_weekends_and_future(tmp_path):
    saturday = ["2024-01-05,15", "2024-01-06,16", "2024-01-08,17"]
    with pytest.raises(DataError, match=r"2024-01-06 \(line 3\): a Saturday.*business days"):
        read_macro_file(_write_macro(tmp_path, "VIX", saturday), "VIX")
    # Policy uncertainty is published for every calendar day.
    assert len(read_macro_file(_write_macro(tmp_path, "USEPUINDXD", saturday), "USEPUINDXD").values) == 3
    with pytest.raises(DataError, match="2300-01-02.*after today"):
        read_macro_file(_write_macro(tmp_path, "T10Y2Y", ["2024-01-05,1", "2300-01-02,1"]), "T10Y2Y")


def test_an_accepted_macro_day_loads(tmp_path):
    path = _write_macro(tmp_path, "VIX", ["2024-01-02,15", "2024-01-03,160", "2024-01-04,16"])
    rules = PlausibilityRules.from_entries(["VIX:2024-01-03"])
    assert read_macro_file(path, "VIX", rules).values.tolist() == [15, 160, 16]


def test_fred_answers_are_checked_with_their_line():
    body = "observation_date,VIXCLS\n2024-11-27,14.1\n2024-11-29,-50\n"
    with pytest.raises(DataError, match=r"fred:VIXCLS \[value\]: 2024-11-29 \(line 3\): VIX -50"):
        parse_fredgraph_csv(body, "VIXCLS", "VIX")
    future = "observation_date,T10Y2Y\n2024-11-27,0.1\n2300-11-29,0.2\n"
    with pytest.raises(DataError, match=r"fred:T10Y2Y \[date\]: 2300-11-29 \(line 3\)"):
        parse_fredgraph_csv(future, "T10Y2Y", "T10Y2Y")


# --- Alpaca bars (through the real SDK and the fake data API) ----------------------------

NOW = dt.datetime(2024, 11, 27, 15, 0, tzinfo=dt.UTC)
ALPACA_DAYS = [d.astype(dt.date) for d in sessions("2024-09-03", "2024-11-26")]


@pytest.fixture
def alpaca(sleeps):
    server = FakeAlpaca(now=NOW)
    closes = _calm_closes(len(ALPACA_DAYS), seed=5)
    server.daily_bars = {
        "SPY": [DailyBar(d, c * 0.995, c * 1.01, c * 0.98, c) for d, c in zip(ALPACA_DAYS, closes, strict=True)]
    }
    server.start()
    policy = RetryPolicy(attempts=2, timeout=5.0, base_delay=0.1, jitter=0.0, sleep=sleeps.append)
    data = AlpacaMarketData.connect(
        Credentials(KEY_ID, SECRET), base_url=server.url, policy=policy, now=lambda: server.now
    )
    yield server, data
    server.stop()


def _replace_bar(server, index: int, **changes) -> None:
    bars = server.daily_bars["SPY"]
    bars[index] = DailyBar(**{**bars[index].__dict__, **changes})


def test_alpaca_bars_pass_the_same_rules(alpaca):
    server, data = alpaca
    assert len(data.daily_history(["SPY"], ALPACA_DAYS[0]).dates) == len(ALPACA_DAYS)
    good = server.daily_bars["SPY"][30]
    _replace_bar(server, 30, close=good.close * 10, high=good.close * 10.1)
    with pytest.raises(DataError, match=rf"alpaca:SPY \[close\]: {ALPACA_DAYS[30]}: close .* move"):
        data.daily_history(["SPY"], ALPACA_DAYS[0])
    _replace_bar(server, 30, close=good.close, high=good.close * 0.9)
    with pytest.raises(DataError, match=rf"alpaca:SPY \[high\]: {ALPACA_DAYS[30]}"):
        data.daily_history(["SPY"], ALPACA_DAYS[0])
    _replace_bar(server, 30, high=good.high, day=dt.date(2024, 10, 12))  # a Saturday
    with pytest.raises(DataError, match=r"alpaca:SPY \[date\]: 2024-10-12: a Saturday"):
        data.daily_history(["SPY"], ALPACA_DAYS[0])


def test_an_accepted_day_passes_the_alpaca_path(alpaca):
    """A level shift from day 30 on (a real 10x move would stay, not bounce back)."""
    server, _ = alpaca
    good = server.daily_bars["SPY"][30]
    server.daily_bars["SPY"][30:] = [
        DailyBar(b.day, b.open * 10, b.high * 10, b.low * 10, b.close * 10)
        for b in server.daily_bars["SPY"][30:]
    ]
    rules = PlausibilityRules.from_entries([f"SPY:{ALPACA_DAYS[30]}"])
    data = AlpacaMarketData.connect(
        Credentials(KEY_ID, SECRET), base_url=server.url, now=lambda: server.now, rules=rules,
        policy=RetryPolicy(attempts=1, timeout=5.0),
    )
    history = data.daily_history(["SPY"], ALPACA_DAYS[0])
    assert history.close[30, 0] == pytest.approx(good.close * 10)


# --- the shared alignment, the bound itself and the config -------------------------------


def test_alignment_checks_every_symbol_it_aligns():
    closes = _calm_closes()
    good = SymbolBars("good", DAYS, closes * 0.99, closes)
    bad_close = closes.copy()
    bad_close[7] = -1.0
    with pytest.raises(DataError, match=r"bad \[close\]: .*close -1 is not positive"):
        align_prices(("A", "B"), [good, SymbolBars("bad", DAYS, closes * 0.99, bad_close)])


def test_the_bound_follows_the_series_own_scale_with_a_floor():
    rules = PlausibilityRules()
    calm = np.random.default_rng(0).normal(0, 0.001, 500)
    wild = np.random.default_rng(0).normal(0, 0.03, 500)
    assert move_bound(calm, rules)[0] == rules.jump_floor
    assert move_bound(wild, rules)[0] == pytest.approx(25 * robust_scale(wild))
    assert move_bound(wild[:5], rules)[0] == pytest.approx(np.log(2))  # too short for a scale


def test_the_rules_come_from_the_config(tmp_path):
    raw = {"universe": {"SPY": {"weight": 1.0}}, "risk": {"position_cap": 1.0},
           "data": {"jump_scale_multiple": 30, "jump_floor": 0.3,
                    "allow_extreme": ["TQQQ:2020-03-16", "VIX:2020-03-16"]}}
    rules = PlausibilityRules.from_settings(parse_settings(raw).data)
    assert rules.jump_scale_multiple == 30 and rules.jump_floor == 0.3
    assert rules.allows("TQQQ", np.datetime64("2020-03-16"))
    assert not rules.allows("TQQQ", np.datetime64("2020-03-17"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[universe]\nSPY = { weight = 1.0 }\n[risk]\nposition_cap = 1.0\n'
                   '[data]\nallow_extreme = ["TQQQ 2020-03-16", "TQQQ:2020-02-30"]\n'
                   'jump_scale_multiple = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    text = "\n".join(caught.value.problems)
    assert "data.allow_extreme.0: expected SYMBOL:YYYY-MM-DD" in text
    assert "data.allow_extreme.1" in text
    assert "data.jump_scale_multiple: expected a value from 5 to 1000 (got 1)" in text


# --- what must pass ----------------------------------------------------------------------


def test_every_real_series_passes(shared_data):
    symbols = sorted(p.stem for p in (shared_data / "prices").glob("*.csv"))
    names = sorted(p.stem for p in (shared_data / "macro").glob("*.csv"))
    market = load_csv_directory(shared_data, symbols, names)  # raises on any violation
    assert len(market.prices.symbols) == 22 and set(market.macro) == set(names)


def test_a_real_series_with_an_unadjusted_split_is_caught(shared_data, tmp_path):
    """A 2:1 split left in TQQQ's prices (halved from 2018-05-24) fails; the real file,
    with its -34% day of 2020-03-16, passes (test above)."""
    lines = (shared_data / "prices" / "TQQQ.csv").read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        parts = line.split(",")
        if parts[0] < "2018-05-24":
            parts[1:6] = [f"{float(x) * 2:.8f}" if x else "" for x in parts[1:6]]
        out.append(",".join(parts))
    _write_prices(tmp_path, "TQQQ", out[1:])
    error = _load_error(tmp_path, ["TQQQ"])
    assert "2018-05-24" in str(error) and " is a x0.4996 move" in str(error)


@pytest.mark.parametrize(("seed", "start"), [(7, "2008-01-02"), (1, "2000-01-03"), (2, "2000-01-03"),
                                             (3, "2000-01-03")])
def test_the_synthetic_market_passes(seed, start):
    market = synthetic_market(list(KNOWN_SYMBOLS), start, "2024-12-31", seed=seed)
    p = market.prices
    for j, symbol in enumerate(p.symbols):
        check_bars(symbol, SymbolBars(f"synthetic:{symbol}", p.dates, p.open[:, j], p.close[:, j]))
    for name in MACRO_SERIES:
        check_macro(f"synthetic:{name}", market.macro[name])


# --- the live daemon ---------------------------------------------------------------------

venue = daemon_tests.venue  # the daemon tests' fake Alpaca and FRED, environment set


def test_a_live_decision_on_a_refused_day_fails_with_an_incident_until_accepted(tmp_path, venue):
    """TQQQ's bars jump 10x from 2024-11-20 on (a split the feed did not adjust): the
    decision job fails with the day in its incident and sends nothing; accepted in the
    config, the same bars are traded on."""
    jump = dt.date(2024, 11, 20)
    venue.daily_bars["TQQQ"] = [
        DailyBar(b.day, b.open * 10, b.high * 10, b.low * 10, b.close * 10) if b.day >= jump else b
        for b in venue.daily_bars["TQQQ"]
    ]
    venue.prices["TQQQ"] *= 10
    jobs, log, _ = daemon_tests.daemon(tmp_path, venue)
    assert not jobs.run("open", jobs.open_job)
    assert venue.order_count() == 0
    messages = log.load_incidents()["message"].tolist()
    assert any("alpaca:TQQQ [close]: 2024-11-20" in m and 'allow_extreme = ["TQQQ:2024-11-20"]' in m
               for m in messages), messages
    log.close()

    raw = daemon_tests.SETTINGS.model_dump(mode="json")
    raw["data"]["allow_extreme"] = ["TQQQ:2024-11-20"]
    accepted = parse_settings(raw)
    log, run_id = daemon_tests.open_log(tmp_path / "accepted")
    jobs = build_live(accepted, log, run_id, live=False, clock=SimulatedClock(daemon_tests.OPEN_JOB))
    assert jobs.run("open", jobs.open_job)
    assert venue.order_count() > 0
    log.close()


def test_a_wrong_latest_trade_never_sizes_an_order(tmp_path, venue):
    """A latest TQQQ trade 50x its close (a bad tick): TQQQ is sized on its close, the
    others on their latest prices, and the log says why."""
    venue.latest_trades = {s: p * 1.01 for s, p in venue.prices.items()}
    venue.latest_trades["TQQQ"] = venue.prices["TQQQ"] * 50
    jobs, log, _ = daemon_tests.daemon(tmp_path, venue)
    with capture_logs() as logs:
        assert jobs.run("open", jobs.open_job)
    orders = log.load_orders().set_index("symbol")
    last_close = next(b.close for b in reversed(venue.daily_bars["TQQQ"]) if b.day < dt.date(2024, 11, 26))
    assert orders.loc["TQQQ", "reference_price"] == pytest.approx(last_close)
    assert orders.loc["UPRO", "reference_price"] == pytest.approx(venue.latest_trades["UPRO"])
    assert any(e["event"] == "implausible latest price; sizing on the close" and e["symbol"] == "TQQQ"
               for e in logs)
    log.close()
