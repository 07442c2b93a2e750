"""The CSV loader: the real bundled data loads as documented, and each kind of broken file
is refused with an error that names the file and the field."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from bot.broker.simulated import next_open_prices
from bot.calendar import sessions
from bot.data.align import MAX_FILLED_GAP
from bot.data.base import MACRO_SERIES, MacroSeries
from bot.data.csv_source import load_csv_directory
from bot.errors import DataError

REAL_DATA = Path(__file__).parents[2] / "shared" / "data"
UNIVERSE = ["TQQQ", "UPRO", "UDOW", "TMF", "UGL", "DIG", "SPY", "IEF"]
HEADER = "date,open,high,low,close,adj_close,volume"


@pytest.fixture(scope="module")
def real_dir() -> Path:
    if not (REAL_DATA / "prices").is_dir():
        reason = f"real data not found at {REAL_DATA} (see PROVENANCE.md there)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return REAL_DATA


def _year_return(md, symbol: str, year: int) -> float:
    p = md.prices
    close = p.close[:, p.index_of(symbol)]
    last_prior = np.searchsorted(p.dates, np.datetime64(f"{year}-01-01")) - 1
    last = np.searchsorted(p.dates, np.datetime64(f"{year + 1}-01-01")) - 1
    return close[last] / close[last_prior] - 1


# --- real data -------------------------------------------------------------------------------


def test_real_universe_loads_with_documented_facts(real_dir: Path) -> None:
    md = load_csv_directory(real_dir, UNIVERSE)
    p = md.prices
    assert p.symbols == tuple(UNIVERSE)
    assert p.close.shape == p.open.shape == (len(p.dates), len(UNIVERSE))
    assert len(p.dates) == 8038  # SPY's rows: every other file's dates are among them
    assert p.dates[0] == np.datetime64("1993-01-29") and p.dates[-1] == np.datetime64("2024-12-31")
    assert np.all(np.diff(p.dates) > np.timedelta64(0, "D"))
    assert not md.synthetic and "SYNTHETIC" not in md.label
    assert set(md.macro) == set(MACRO_SERIES)

    tmf, tqqq = p.index_of("TMF"), p.index_of("TQQQ")
    assert np.isnan(p.open[:, tmf]).all()  # close-only source
    listed = ~np.isnan(p.close[:, tqqq])
    assert not np.isnan(p.open[listed, tqqq]).any()
    first_tmf = np.flatnonzero(~np.isnan(p.close[:, tmf]))[0]
    assert p.dates[first_tmf] == np.datetime64("2009-04-16")
    assert not np.isnan(p.close[first_tmf:]).any(axis=0)[tmf]

    assert _year_return(md, "SPY", 2022) == pytest.approx(-0.182, abs=0.001)
    assert _year_return(md, "TQQQ", 2022) == pytest.approx(-0.791, abs=0.001)
    assert md.macro["VIX"].last_before(dt.date(2020, 3, 17)) == (82.69, dt.date(2020, 3, 16))


def test_all_real_files_load(real_dir: Path) -> None:
    symbols = sorted(p.stem for p in (real_dir / "prices").glob("*.csv"))
    assert len(symbols) == 22
    md = load_csv_directory(real_dir, symbols)
    assert (md.prices.close[~np.isnan(md.prices.close)] > 0).all()


def test_last_before_never_returns_a_future_value(real_dir: Path) -> None:
    series = load_csv_directory(real_dir, ["SPY"], ["T10Y2Y", "USEPUINDXD"]).macro
    rng = np.random.default_rng(0)
    days = np.datetime64("1990-01-01") + rng.integers(0, 365 * 35, 500).astype("timedelta64[D]")
    for s in series.values():
        for day in days:
            before = s.last_before(day.item())
            on_or_before = s.last_before(day.item() + dt.timedelta(days=1))
            assert before is None or before[1] < day.item()
            assert on_or_before is None or on_or_before[1] <= day.item()
            # the newest such value: numpy's own search over the dates finds the same
            i = int(np.searchsorted(s.dates, day, side="left")) - 1
            assert before == (None if i < 0 else (float(s.values[i]), s.dates[i].item()))
        first = s.dates[0].item()
        assert s.last_before(first) is None
        assert s.last_before(first + dt.timedelta(days=1)) == (float(s.values[0]), first)


# --- malformed files -------------------------------------------------------------------------


def _write(root: Path, symbol: str, lines: list[str], header: str = HEADER) -> Path:
    prices = root / "prices"
    prices.mkdir(parents=True, exist_ok=True)
    path = prices / f"{symbol}.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _rows(n: int, start: str = "2024-01-02") -> list[str]:
    """`n` rows on NYSE sessions with an open, as a source with OHLC data writes them."""
    days = sessions(start, "2024-12-31")[:n]
    return [f"{d},{10 + i},,,{10.5 + i},{10.5 + i}," for i, d in enumerate(days)]


def _load_error(root: Path, symbols: list[str]) -> DataError:
    with pytest.raises(DataError) as caught:
        load_csv_directory(root, symbols, macro=())
    return caught.value


GOOD = _rows(4)
MALFORMED = {
    "missing_column": (["2024-01-02,10,,,,,"], "date,open,high,low,last,vwap,volume", "close"),
    "missing_date": (["2024-01-02,10"], "day,close", "date"),
    "unsorted_dates": ([GOOD[1], GOOD[0], GOOD[2]], HEADER, "date"),
    "duplicate_date": ([GOOD[0], GOOD[1], GOOD[1], GOOD[2]], HEADER, "date"),
    "nan_close": ([GOOD[0], "2024-01-03,11,,,11,,", GOOD[2]], HEADER, "adj_close"),
    "empty_close": ([GOOD[0], "2024-01-03,11,,,,11,", GOOD[2]], HEADER, "close"),
    "empty_both": ([GOOD[0], "2024-01-03,11,,,,,"], HEADER, "close"),
    "zero_price": ([GOOD[0], "2024-01-03,11,,,0,0,", GOOD[2]], HEADER, "close"),
    "zero_adj_close": ([GOOD[0], "2024-01-03,11,,,11,0,", GOOD[2]], HEADER, "adj_close"),
    "negative_price": ([GOOD[0], "2024-01-03,11,,,-1,-1,", GOOD[2]], HEADER, "close"),
    "negative_open": ([GOOD[0], "2024-01-03,-11,,,11,11,", GOOD[2]], HEADER, "open"),
    "bad_date": ([GOOD[0], "2024-13-03,11,,,11,11,", GOOD[2]], HEADER, "date"),
    "non_numeric": ([GOOD[0], "2024-01-03,11,,,11,eleven,", GOOD[2]], HEADER, "adj_close"),
    "bad_stamp_time": ([GOOD[0], "2024-01-03T25:00:00Z,11,,,11,11,"], HEADER, "date"),
    "repeated_header": (GOOD, "date,open,high,low,close,Adj Close,adj_close", "adj_close"),
    "repeated_date_header": (["2024-01-02,2024-01-02,10"], "Date, date,close", "date"),
    "identical_header": (["2024-01-02,10,11"], "date,close,close", "close"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_file_and_field(tmp_path: Path, case: str) -> None:
    lines, header, field = MALFORMED[case]
    _write(tmp_path, "BAD", lines, header)
    error = _load_error(tmp_path, ["BAD"])
    assert error.field == field
    assert "BAD.csv" in str(error) and f"[{field}]" in str(error)


def test_errors_name_the_offending_value(tmp_path: Path) -> None:
    _write(tmp_path, "A", [GOOD[0], "2024-13-03,11,,,11,11,"])
    assert "2024-13-03" in str(_load_error(tmp_path, ["A"]))
    _write(tmp_path, "B", [GOOD[0], GOOD[2], GOOD[1]])
    assert "2024-01-03" in str(_load_error(tmp_path, ["B"]))  # the date that steps back
    _write(tmp_path, "C", [GOOD[0], "2024-01-03,11,,,0,0,"])
    assert "2024-01-03" in str(_load_error(tmp_path, ["C"]))
    _write(tmp_path, "D", [GOOD[0], "2024-01-03,11,,,11,eleven,"])
    assert "eleven" in str(_load_error(tmp_path, ["D"]))


def test_stamped_dates_keep_the_day_they_name(tmp_path: Path) -> None:
    """A daily file may stamp its rows with a time and an offset: each row is the day its
    stamp names, whatever the offset (converted to UTC, +01:00 midnight would be the day
    before) and across daylight saving's change of offset (which pandas cannot parse
    together)."""
    days = sessions("2024-03-07", "2024-03-12")[:4]  # the US clocks change on 10 March
    offsets = ["+01:00", "-05:00", "-04:00", "Z"]
    lines = [f"{d}T00:00:00{o},10,,,10,10," for d, o in zip(days, offsets, strict=True)]
    _write(tmp_path, "X", lines)
    p = load_csv_directory(tmp_path, ["X"], macro=()).prices
    assert [str(d)[:10] for d in p.dates] == [str(d) for d in days]


def test_close_column_alone_is_enough(tmp_path: Path) -> None:
    _write(tmp_path, "X", ["2024-01-02,9,10", "2024-01-03,,11"], header="date,open,close")
    p = load_csv_directory(tmp_path, ["X"], macro=()).prices
    assert p.close[:, 0].tolist() == [10.0, 11.0]
    assert p.open[0, 0] == 9.0 and np.isnan(p.open[1, 0])


def test_open_is_put_on_the_adjusted_basis(tmp_path: Path) -> None:
    _write(tmp_path, "X", ["2024-01-02,40,,,50,25,"])
    p = load_csv_directory(tmp_path, ["X"], macro=()).prices
    assert p.close[0, 0] == 25.0 and p.open[0, 0] == 20.0


def test_an_open_without_the_raw_close_to_scale_it_is_refused(tmp_path: Path) -> None:
    """adj_close with an open but no close: the open stayed on the raw basis, a
    dividend's few percent above the adjusted close every day, passing every check."""
    _write(tmp_path, "X", ["2024-01-02,26.25,25", "2024-01-03,26.5,25.2"], header="date,open,adj_close")
    error = _load_error(tmp_path, ["X"])
    assert error.field == "open" and "X.csv" in str(error)
    assert "no close" in str(error) and "add the close column" in str(error)
    _write(tmp_path, "Y", ["2024-01-02,25", "2024-01-03,25.2"], header="date,adj_close")
    assert load_csv_directory(tmp_path, ["Y"], macro=()).prices.close[1, 0] == 25.2  # still fine


@pytest.mark.parametrize("name", ["adjClose", "adjusted_close", "Adj. Close", "adj._close",
                                  "Adjusted Close", "ADJ CLOSE", "adj-close"])
def test_every_spelling_of_the_adjusted_close_is_read(tmp_path: Path, name: str) -> None:
    """Tiingo's `adjClose` was lower-cased to `adjclose` and ignored: the raw closes were
    used without a word (a split a 50% drop, a dividend a loss)."""
    _write(tmp_path, "X", ["2024-01-02,40,50,25", "2024-01-03,41,51,25.5"],
           header=f"date,open,close,{name}")
    p = load_csv_directory(tmp_path, ["X"], macro=()).prices
    assert p.close[:, 0].tolist() == [25.0, 25.5] and p.open[0, 0] == 20.0


def test_a_tiingo_file_is_read_on_its_adjusted_close(tmp_path: Path) -> None:
    header = ("date,close,high,low,open,volume,adjClose,adjHigh,adjLow,adjOpen,adjVolume,"
              "divCash,splitFactor")
    _write(tmp_path, "X", ["2024-01-02,50,51,49,50.5,100,25,25.5,24.5,25.25,200,0,1"], header=header)
    p = load_csv_directory(tmp_path, ["X"], macro=()).prices
    assert p.close[0, 0] == 25.0 and p.open[0, 0] == 25.25


@pytest.mark.parametrize("name", ["adj_close_price", "close_adj", "AdjPrice", "adjustment"])
def test_an_unknown_adjusted_column_is_refused_not_ignored(tmp_path: Path, name: str) -> None:
    _write(tmp_path, "X", ["2024-01-02,50,25"], header=f"date,close,{name}")
    error = _load_error(tmp_path, ["X"])
    column = name.lower()
    assert error.field == column and "X.csv" in str(error)
    assert f"unknown column {column!r}" in str(error) and "adj_close" in str(error)


def test_two_spellings_of_the_adjusted_close_are_one_column_named_twice(tmp_path: Path) -> None:
    _write(tmp_path, "X", ["2024-01-02,50,25,25"], header="date,close,adjClose,adj_close")
    error = _load_error(tmp_path, ["X"])
    assert error.field == "adj_close" and "'adjClose' and 'adj_close'" in str(error)


@pytest.mark.parametrize("first_line", [
    "2024-01-02,406.4994202,407.1,405.2,406.4994202,406.4994202,1000",  # Yahoo without header
    "01/02/2024,406.4994202,406.4994202",
    "406.4994202,406.4994202",
])
def test_a_price_file_without_a_header_says_so(tmp_path: Path, first_line: str) -> None:
    """Before: `[406.4994202]: the header names '406.4994202' twice`."""
    path = tmp_path / "prices" / "X.csv"
    path.parent.mkdir()
    second = ",".join(["2024-01-03", *["407"] * (first_line.count(",") - 1), "1000"])
    path.write_text(f"{first_line}\n{second}\n")
    error = _load_error(tmp_path, ["X"])
    assert str(error) == (
        f"{path}: line 1 is not a header ({first_line.split(',')[0]!r} is a value); "
        "expected date,open,high,low,close,adj_close,volume (or date,close)"
    )


def test_a_macro_file_without_a_header_says_so(tmp_path: Path) -> None:
    _write(tmp_path, "SPY", GOOD)
    path = _write_macro(tmp_path, "VIX", "2024-01-02,13.2\n2024-01-03,13.2\n")
    with pytest.raises(DataError) as caught:
        load_csv_directory(tmp_path, ["SPY"], macro=["VIX"])
    assert str(caught.value) == (f"{path}: line 1 is not a header ('2024-01-02' is a value); "
                                 "expected date,value")


def test_unknown_symbol_lists_available(tmp_path: Path) -> None:
    _write(tmp_path, "SPY", GOOD)
    error = _load_error(tmp_path, ["SPY", "NOPE"])
    assert error.field == "symbol"
    assert "NOPE.csv" in str(error) and "[symbol]" in str(error) and "SPY" in str(error)


def test_missing_directory(tmp_path: Path) -> None:
    error = _load_error(tmp_path / "absent", ["SPY"])
    assert "absent" in str(error)


def test_symbols_aligned_on_union_of_dates(tmp_path: Path) -> None:
    _write(tmp_path, "OLD", _rows(6))
    _write(tmp_path, "NEW", _rows(6)[2:])
    p = load_csv_directory(tmp_path, ["OLD", "NEW"], macro=()).prices
    assert len(p.dates) == 6
    assert np.isnan(p.close[:2, 1]).all() and not np.isnan(p.close[2:, 1]).any()


def test_short_gap_is_forward_filled_with_warning(tmp_path: Path) -> None:
    full = _rows(12)
    _write(tmp_path, "FULL", full)
    _write(tmp_path, "HOLE", full[:3] + full[3 + MAX_FILLED_GAP :])
    with capture_logs() as logs:
        p = load_csv_directory(tmp_path, ["FULL", "HOLE"], macro=()).prices
    hole = slice(3, 3 + MAX_FILLED_GAP)
    assert (p.close[hole, 1] == p.close[2, 1]).all()
    assert np.isnan(p.open[hole, 1]).all()
    assert any(e["log_level"] == "warning" and "HOLE.csv" in e["path"] for e in logs)


def test_forward_filled_days_are_marked_and_never_a_fill_price(tmp_path: Path) -> None:
    """A filled day carries the last real close for returns, but the next_open model must
    not fill there (open NaN used to fall back to that stale close)."""
    full = _rows(6)
    _write(tmp_path, "FULL", full)
    holed = full[:3] + full[4:]
    _write(tmp_path, "HOLE", holed)
    close_only = [f"{row.split(',')[0]},{row.split(',')[4]}" for row in holed]
    _write(tmp_path, "CLOSE", close_only, "date,close")
    p = load_csv_directory(tmp_path, ["FULL", "HOLE", "CLOSE"], macro=()).prices
    assert p.filled is not None
    np.testing.assert_array_equal(np.flatnonzero(p.filled.any(axis=1)), [3])
    assert p.filled[3].tolist() == [False, True, True]
    fill = next_open_prices(p)
    assert np.isnan(fill[3, 1:]).all() and fill[3, 0] == 13.0
    # Close-only data keeps its documented fallback on real days: the close.
    np.testing.assert_array_equal(fill[[0, 4], 2], p.close[[0, 4], 2])
    np.testing.assert_array_equal(fill[[0, 4], 1], p.open[[0, 4], 1])


def test_data_without_gaps_has_no_fill_mask(tmp_path: Path) -> None:
    _write(tmp_path, "A", _rows(5))
    _write(tmp_path, "B", _rows(5)[1:])  # listed later: not a gap
    assert load_csv_directory(tmp_path, ["A", "B"], macro=()).prices.filled is None


def test_long_gap_names_first_missing_date(tmp_path: Path) -> None:
    full = _rows(12)
    _write(tmp_path, "FULL", full)
    _write(tmp_path, "HOLE", full[:3] + full[4 + MAX_FILLED_GAP :])
    error = _load_error(tmp_path, ["FULL", "HOLE"])
    assert "HOLE.csv" in str(error) and error.field == "date"
    assert full[3].split(",")[0] in str(error)


def test_a_hole_in_every_file_is_refused_and_a_short_one_is_filled(tmp_path: Path) -> None:
    """The same sessions deleted from every file: the union of their dates cannot show
    the hole, and a year of it was one trading day to the backtest. A short one is put
    back, filled, as a hole in one file is: before, five sessions' move was one day's."""
    days = sessions("2024-01-02", "2024-12-31")[:40]
    full = [f"{d},{100 + i / 10},,,{100 + i / 10},{100 + i / 10}," for i, d in enumerate(days)]
    for symbol in ("AAA", "BBB"):
        _write(tmp_path, symbol, full[:10] + full[11 + MAX_FILLED_GAP :])
    error = _load_error(tmp_path, ["AAA", "BBB"])
    assert error.field == "date" and "AAA.csv, " in str(error) and "BBB.csv" in str(error)
    first, last = full[10].split(",")[0], full[10 + MAX_FILLED_GAP].split(",")[0]
    assert f"{MAX_FILLED_GAP + 1} NYSE sessions missing from every one, {first} to {last}" in str(error)
    for symbol in ("AAA", "BBB"):  # a hole as short as one filled in a single file: filled
        _write(tmp_path, symbol, full[:10] + full[10 + MAX_FILLED_GAP :])
    with capture_logs() as logs:
        p = load_csv_directory(tmp_path, ["AAA", "BBB"], macro=()).prices
    assert p.dates.tolist() == days.tolist()  # every session, the hole's included
    hole = slice(10, 10 + MAX_FILLED_GAP)
    assert p.filled is not None and p.filled[hole].all() and p.filled.sum() == 2 * MAX_FILLED_GAP
    assert (p.close[hole] == p.close[9]).all() and np.isnan(p.open[hole]).all()
    assert np.isnan(next_open_prices(p)[hole]).all()  # no order fills on a carried day
    first, last = full[10].split(",")[0], full[9 + MAX_FILLED_GAP].split(",")[0]
    (warning,) = [e for e in logs if e["event"] == "sessions_missing_from_every_series_forward_filled"]
    assert warning["log_level"] == "warning" and "AAA.csv, " in warning["series"]
    assert (warning["first_missing"], warning["last_missing"]) == (first, last)
    assert warning["days"] == MAX_FILLED_GAP


def test_a_short_hole_in_a_one_symbol_history_is_filled(tmp_path: Path) -> None:
    """A one-symbol backtest: its file's missing sessions were the whole union's, so a
    three-session hole was never seen and its move counted as one day's return."""
    full = _rows(12)
    _write(tmp_path, "ONE", full[:4] + full[7:])
    p = load_csv_directory(tmp_path, ["ONE"], macro=()).prices
    assert len(p.dates) == 12 and p.filled is not None
    assert np.flatnonzero(p.filled[:, 0]).tolist() == [4, 5, 6]
    assert (p.close[4:7, 0] == p.close[3, 0]).all() and np.isnan(p.open[4:7, 0]).all()


def test_file_ending_early_counts_as_a_gap(tmp_path: Path) -> None:
    full = _rows(12)
    _write(tmp_path, "FULL", full)
    _write(tmp_path, "STALE", full[:4])
    error = _load_error(tmp_path, ["FULL", "STALE"])
    assert "STALE.csv" in str(error) and full[4].split(",")[0] in str(error)


# --- macro -----------------------------------------------------------------------------------


def _write_macro(root: Path, name: str, text: str) -> Path:
    (root / "macro").mkdir(parents=True, exist_ok=True)
    path = root / "macro" / f"{name}.csv"
    path.write_text(text)
    return path


def test_missing_macro_file_is_skipped_with_warning(tmp_path: Path) -> None:
    _write(tmp_path, "SPY", GOOD)
    _write_macro(tmp_path, "VIX", "date,value\n2024-01-02,13.2\n")
    with capture_logs() as logs:
        md = load_csv_directory(tmp_path, ["SPY"])
    assert set(md.macro) == {"VIX"}
    missing = {e["series"] for e in logs if e["log_level"] == "warning"}
    assert missing == set(MACRO_SERIES) - {"VIX"}


def test_fred_blanks_are_dropped(tmp_path: Path) -> None:
    _write(tmp_path, "SPY", GOOD)
    _write_macro(tmp_path, "DTB3", "date,value\n2024-01-01,.\n2024-01-02,5.2\n2024-01-03,\n")
    series = load_csv_directory(tmp_path, ["SPY"], ["DTB3"]).macro["DTB3"]
    assert isinstance(series, MacroSeries)
    assert series.dates.tolist() == [np.datetime64("2024-01-02", "D").item()]
    assert series.values.tolist() == [5.2]


@pytest.mark.parametrize(
    ("text", "field", "named"),
    [
        ("date,value\n2024-01-02,1\n2024-01-03,n/a\n", "value", "n/a"),
        ("date,value\n2024-01-03,1\n2024-01-02,2\n", "date", "2024-01-02"),
        ("date,value\n2024-01-02,1\n2024-01-02,2\n", "date", "2024-01-02"),
        ("date,value\nyesterday,1\n", "date", "yesterday"),
        ("day,value\n2024-01-02,1\n", "date", "date"),
    ],
)
def test_malformed_macro_file(tmp_path: Path, text: str, field: str, named: str) -> None:
    _write(tmp_path, "SPY", GOOD)
    _write_macro(tmp_path, "T10Y2Y", text)
    with pytest.raises(DataError) as caught:
        load_csv_directory(tmp_path, ["SPY"], ["T10Y2Y"])
    assert caught.value.field == field
    assert "T10Y2Y.csv" in str(caught.value) and named in str(caught.value)


def test_a_comma_at_the_end_of_each_row_is_read_as_without(tmp_path: Path) -> None:
    """Spreadsheets export rows ending in a comma: one field more than the header. pandas
    then took the dates as the index and shifted every column left, and the loader
    crashed with a TypeError (prices) or a ValueError in its own error message (macro)."""
    plain, trailing, first_only = tmp_path / "plain", tmp_path / "trailing", tmp_path / "first"
    header = "date,open,close"
    rows = [f"{d},{10 + i},{10.5 + i}" for i, d in enumerate(sessions("2024-01-02", "2024-01-31")[:5])]
    _write(plain, "X", rows, header)
    _write(trailing, "X", [f"{r}," for r in rows], header)
    _write(first_only, "X", [f"{rows[0]},", *rows[1:]], header)
    for root in (plain, trailing, first_only):
        _write_macro(root, "VIX", "date,value\n2024-01-02,13.2\n2024-01-03,14.1\n".replace("\n2", ",\n2")
                     if root is not plain else "date,value\n2024-01-02,13.2\n2024-01-03,14.1\n")
    expected = load_csv_directory(plain, ["X"], ["VIX"])
    for root in (trailing, first_only):
        got = load_csv_directory(root, ["X"], ["VIX"])
        assert np.array_equal(got.prices.close, expected.prices.close), root
        assert np.array_equal(got.prices.open, expected.prices.open), root
        assert got.macro["VIX"].values.tolist() == [13.2, 14.1]


def test_a_value_after_the_last_column_is_refused_with_its_line(tmp_path: Path) -> None:
    days = sessions("2024-01-02", "2024-01-31")[:3]
    _write(tmp_path, "X", [f"{days[0]},10,10,", f"{days[1]},11,11,7", f"{days[2]},12,12,"],
           "date,open,close")
    error = _load_error(tmp_path, ["X"])
    assert "X.csv" in str(error) and "line 3 has more fields than the header's 3 columns" in str(error)
    _write(tmp_path, "SPY", GOOD)
    _write_macro(tmp_path, "VIX", "date,value\n2024-01-02,13.2,\n2024-01-03,14.1,oops\n")
    with pytest.raises(DataError, match=r"VIX.csv.*line 3 has more fields"):
        load_csv_directory(tmp_path, ["SPY"], ["VIX"])


def test_a_monthly_file_under_a_daily_series_name_is_refused(tmp_path: Path) -> None:
    """USEPUINDXM (monthly, dated the 1st, published the next month) saved as the daily
    USEPUINDXD was read, and the regime saw March's average on 5 March."""
    _write(tmp_path, "SPY", GOOD)
    months = "".join(f"2023-{m:02d}-01,{100 + m}\n" for m in range(1, 13))
    _write_macro(tmp_path, "USEPUINDXD", "date,value\n" + months)
    with pytest.raises(DataError) as caught:
        load_csv_directory(tmp_path, ["SPY"], ["USEPUINDXD"])
    assert caught.value.field == "date" and "USEPUINDXD.csv" in str(caught.value)
    assert "31 days apart" in str(caught.value) and "daily series" in str(caught.value)
    # a daily series with the weekends and holidays it skips (and a short one) loads
    days = "".join(f"{d},{20 + i % 9}\n" for i, d in enumerate(sessions("2023-01-03", "2023-03-31")))
    _write_macro(tmp_path, "VIX", "date,value\n" + days)
    _write_macro(tmp_path, "T10Y2Y", "date,value\n2023-01-03,0.5\n2023-02-01,0.4\n")
    loaded = load_csv_directory(tmp_path, ["SPY"], ["VIX", "T10Y2Y"]).macro
    assert len(loaded["VIX"].dates) == len(sessions("2023-01-03", "2023-03-31"))
