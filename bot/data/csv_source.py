"""Market data from a directory of CSV files: `prices/<SYM>.csv` and `macro/<NAME>.csv`.

Every check names the file and the column, because one bad row in a file of thousands is
otherwise found only as a strange backtest result. This module checks the file's form
(columns, dates that parse and ascend, numbers); whether the values are plausible is
decided by bot.data.plausibility, as for every other source.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import structlog

from bot.data.align import SymbolBars, align_prices
from bot.data.base import MACRO_SERIES, MacroSeries, MarketData
from bot.data.file_set import reading_whole
from bot.data.plausibility import (
    DEFAULT_RULES,
    PlausibilityRules,
    check_macro,
    check_price_column,
)
from bot.errors import DataError

log = structlog.get_logger(__name__)

# FRED writes "." for days it has no value (holidays); such rows are dropped, not filled.
_MACRO_BLANKS = ("", ".")


def load_csv_directory(
    directory: Path | str,
    symbols: Sequence[str],
    macro: Sequence[str] = MACRO_SERIES,
    rules: PlausibilityRules = DEFAULT_RULES,
) -> MarketData:
    """Load and validate `symbols` and the `macro` series found under `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(str(directory), None, "data directory not found")
    _check_symbol_list(directory, symbols)
    # not a folder a fetch stopped mid-way through (some files new, others old), and no
    # fetch writing it while its files are read
    with reading_whole(directory):
        files = [_read_price_file(_price_path(directory, s)) for s in symbols]
        series = _load_macro(directory, macro, rules)
    prices = align_prices(tuple(symbols), files, rules=rules)
    return MarketData(
        prices=prices,
        macro=series,
        source=f"csv:{directory.absolute()}",  # a run records it: where, whatever its cwd
        synthetic=False,
    )


def _check_symbol_list(directory: Path, symbols: Sequence[str]) -> None:
    if not symbols:
        raise DataError(str(directory), "symbols", "no symbols requested")
    seen: set[str] = set()
    for symbol in symbols:
        if symbol in seen:
            raise DataError(str(directory), "symbols", f"symbol {symbol!r} requested twice")
        seen.add(symbol)


def _price_path(directory: Path, symbol: str) -> Path:
    """The file for `symbol`; an unknown symbol lists what is available to fix a typo."""
    path = directory / "prices" / f"{symbol}.csv"
    if path.exists() and not path.is_file():
        raise DataError(str(path), "symbol", f"is not a file (the price file of {symbol!r})")
    if not path.is_file():
        available = sorted(p.stem for p in (directory / "prices").glob("*.csv"))
        listing = ", ".join(available) if available else "none"
        raise DataError(str(path), "symbol", f"no price file for {symbol!r}; available: {listing}")
    return path


def _load_macro(
    directory: Path, names: Sequence[str], rules: PlausibilityRules
) -> dict[str, MacroSeries]:
    """Series that exist; a missing one is only a warning (the strategy keeps its regime)."""
    found: dict[str, MacroSeries] = {}
    for name in names:
        path = directory / "macro" / f"{name}.csv"
        if not path.is_file():
            log.warning("macro_series_missing", series=name, path=str(path))
            continue
        found[name] = read_macro_file(path, name, rules)
    return found


# --- one price file -----------------------------------------------------------------------


def _read_price_file(path: Path) -> SymbolBars:
    """Adjusted close, open, high and low of one file (open NaN where the file has none);
    their plausibility is checked when the symbols are aligned."""
    frame = _read_csv(path)
    _require_columns(path, frame)
    _refuse_unknown_adjusted(path, frame)
    lines = frame.index.to_numpy() + 2  # the header is line 1
    dates = _parse_dates(path, frame["date"])
    _check_ascending(path, dates)
    close = _price_column(path, frame, "close", dates, lines)
    adj = _price_column(path, frame, "adj_close", dates, lines)
    raw = {c: _optional_price(path, frame, c, dates, lines) for c in ("open", "high", "low")}
    # Open, high and low are quoted on the raw basis; scale them like their row's close
    # so returns line up (and high >= close still holds). Without the raw close there is
    # nothing to scale them by, and a dividend's few percent pass every check unseen.
    unscalable = [c for c, v in raw.items() if v is not None] if close is None else []
    if adj is not None and unscalable:
        raise DataError(
            str(path), unscalable[0],
            f"has {', '.join(unscalable)} and adj_close but no close: {unscalable[0]} is quoted "
            "on the raw basis and needs the raw close to be put on adj_close's; add the close "
            "column, or remove open, high and low",
        )
    scale = adj / close if adj is not None and close is not None else 1.0
    price = adj if adj is not None else close
    if price is None:  # unreachable after _price_column's checks; kept for the type checker
        raise DataError(str(path), "close", "neither close nor adj_close has values")
    scaled = {c: None if v is None else v * scale for c, v in raw.items()}
    opens = scaled["open"] if scaled["open"] is not None else np.full(len(dates), np.nan)
    return SymbolBars(str(path), dates, opens, price, scaled["high"], scaled["low"], lines)


def _require_columns(path: Path, frame: pd.DataFrame) -> None:
    """A date and at least one close column; names the first one missing."""
    missing = "date" if "date" not in frame else None
    if not {"close", "adj_close"} & set(frame.columns):
        missing = missing or "close"
    if missing:
        found = list(frame.columns)
        raise DataError(
            str(path), missing, f"needs columns date and close or adj_close; found {found}"
        )


#: the header lines each kind of file is expected to start with, for error messages
PRICE_HEADERS = "date,open,high,low,close,adj_close,volume (or date,close)"
MACRO_HEADERS = "date,value"
_DATE_LIKE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")


def _read_csv(path: Path, expected: str = PRICE_HEADERS, **options: object) -> pd.DataFrame:
    """The file as a frame with normalised headers ("Adj Close" -> "adj_close");
    `expected` is the header the file should have (said when line 1 is data)."""
    try:
        frame = pd.read_csv(path, skipinitialspace=True, **options)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(str(path), None, f"not a readable CSV file: {exc}") from exc
    except OSError as exc:  # no permission, a device error
        raise DataError(str(path), None, f"cannot be read: {exc.strerror or exc}") from exc
    if not isinstance(frame.index, pd.RangeIndex):
        frame = _without_trailing_field(path, frame, options)
    given = [str(c) for c in frame.columns]
    _require_header(path, given, expected)
    frame.columns = _normalised_headers(path, given)
    if frame.empty:
        raise DataError(str(path), None, "file has a header but no rows")
    return frame


def _require_header(path: Path, given: list[str], expected: str) -> None:
    """A file without a header row had its first row taken as the header, and was
    refused for the wrong reason (`the header names '406.49' twice`): a first field that
    is a date or a number says line 1 is data."""
    first = given[0].strip() if given else ""
    if _DATE_LIKE.match(first) or _is_number(first):
        raise DataError(str(path), None, f"line 1 is not a header ({first!r} is a value); "
                        f"expected {expected}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: other spellings of adj_close, by their letters and digits alone: Tiingo's `adjClose`,
#: Yahoo's `Adj Close`, `Adj. Close`, `Adjusted Close`, `adjusted_close`
ADJ_CLOSE_SPELLINGS = frozenset({"adjclose", "adjustedclose"})
#: adjusted open, high, low and volume (Tiingo's adjOpen ...): not read, since open, high
#: and low are put on adj_close's basis from the raw ones (and volume is not used)
ADJUSTED_SIBLINGS = frozenset(
    f"{adj}{field}" for adj in ("adj", "adjusted") for field in ("open", "high", "low", "volume")
)


def _normalised_headers(path: Path, given: list[str]) -> list[str]:
    """Each header as the loader names it ("Adj Close", "adjClose" -> "adj_close"); a
    name given twice (in any spelling) is an error naming both."""
    names: list[str] = []
    seen: dict[str, str] = {}
    for original in given:
        column = _header_name(original)
        # pandas renames an exact repeat "close" to "close.1"; a repeat that differs in
        # case or spaces becomes one here, and frame[column] would then be a frame.
        base, _, suffix = original.rpartition(".")
        if suffix.isdigit() and base and _header_name(base) in seen:
            column, original = _header_name(base), base
        if column in seen:
            raise DataError(str(path), column, f"the header names {column!r} twice "
                            f"({seen[column]!r} and {original!r})")
        seen[column] = original
        names.append(column)
    return names


def _header_name(original: str) -> str:
    """A header lower-cased with spaces as underscores; any spelling of the adjusted
    close is `adj_close` (ignored under another name, the raw closes were used unsaid)."""
    name = original.strip().lower().replace(" ", "_")
    return "adj_close" if _letters(name) in ADJ_CLOSE_SPELLINGS else name


def _letters(name: str) -> str:
    return "".join(ch for ch in name if ch.isalnum())


def _refuse_unknown_adjusted(path: Path, frame: pd.DataFrame) -> None:
    """A column that looks adjusted but is not one the loader knows may be the adjusted
    close under a name it does not read: ignored, the raw closes (a split a 50% drop, a
    dividend a loss) would be used without a word. Refused, naming the column."""
    for column in frame.columns:
        letters = _letters(str(column))
        if "adj" in letters and column != "adj_close" and letters not in ADJUSTED_SIBLINGS:
            raise DataError(
                str(path), str(column),
                f"unknown column {column!r}: it looks like an adjusted price, and a price "
                "column the loader does not know is not read; name the adjusted close "
                "adj_close (or remove the column)",
            )


def _without_trailing_field(path: Path, frame: pd.DataFrame, options: dict) -> pd.DataFrame:
    """Rows with more fields than the header make pandas take the first columns as the
    index and shift the others left. Empty extra fields (a comma at the end of each row,
    as spreadsheets export) are read without them; a value there is an error."""
    extra = frame.iloc[:, -frame.index.nlevels:]
    filled = (extra.notna() & (extra.astype(str).apply(lambda c: c.str.strip()) != "")).any(axis=1)
    if filled.any():
        line = int(np.flatnonzero(filled.to_numpy())[0]) + 2  # the header is line 1
        raise DataError(str(path), None, f"line {line} has more fields than the header's "
                        f"{frame.shape[1]} columns")
    with warnings.catch_warnings():  # "loss of data": only the empty fields checked above
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        return pd.read_csv(path, skipinitialspace=True, index_col=False, **options)


def _parse_dates(path: Path, raw: pd.Series) -> np.ndarray:
    """ISO dates as datetime64[D]; the first unparseable one is named with its line.

    A stamp with a time ("2024-03-08T00:00:00+01:00") names its day by its own date
    part: converted to UTC first it would move to the 7th, and stamps whose offset
    changes with daylight saving (-05:00, -04:00) could not be parsed together. Its time
    and offset must still be valid."""
    text = raw.astype("string").str.strip()
    stamped = (text.str.len().gt(10) & text.str.slice(10, 11).isin(["T", " "])).fillna(False)
    parsed = pd.to_datetime(text.mask(stamped, text.str.slice(0, 10)), format="ISO8601",
                            errors="coerce")
    if stamped.any():
        whole = pd.to_datetime(text[stamped], format="ISO8601", errors="coerce", utc=True)
        parsed[whole.index[whole.isna().to_numpy()]] = pd.NaT
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        value = "" if pd.isna(raw.iloc[i]) else raw.iloc[i]
        raise DataError(str(path), "date", f"unparseable date {value!r} on line {_line(raw, i)}")
    return parsed.to_numpy().astype("datetime64[D]")


def _check_ascending(path: Path, dates: np.ndarray) -> None:
    """Dates must be strictly ascending: a repeat or step back means a spliced file."""
    steps = np.diff(dates)
    bad = np.flatnonzero(steps <= np.timedelta64(0, "D"))
    if not bad.size:
        return
    i = int(bad[0]) + 1
    kind = "is duplicated" if steps[i - 1] == np.timedelta64(0, "D") else "follows a later date"
    problem = f"{dates[i]} {kind} ({dates[i - 1]} on the row before)"
    raise DataError(str(path), "date", f"dates must be ascending and unique: {problem}")


def _numeric_column(
    path: Path, frame: pd.DataFrame, column: str, dates: np.ndarray
) -> np.ndarray | None:
    """A column as float64, None if absent; text that is not a number is an error."""
    if column not in frame:
        return None
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=float)
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.astype("string").str.strip()
    bad = np.flatnonzero((values.isna() & raw.notna() & (text != "")).to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataError(str(path), column, f"non-numeric value {raw.iloc[i]!r} on {dates[i]}")
    return values.to_numpy(dtype=float)


def _price_column(
    path: Path, frame: pd.DataFrame, column: str, dates: np.ndarray, lines: np.ndarray
) -> np.ndarray | None:
    """A close-type column: every row present, finite and positive. A header-only column
    (no values at all) counts as absent, so `adj_close` falls back to `close`."""
    values = _numeric_column(path, frame, column, dates)
    if values is None or (np.isnan(values).all() and _other_price_present(frame, column)):
        return None
    check_price_column(str(path), column, values, dates, lines, required=True)
    return values


def _optional_price(
    path: Path, frame: pd.DataFrame, column: str, dates: np.ndarray, lines: np.ndarray
) -> np.ndarray | None:
    """Open, high or low: may be empty (close-only sources), never infinite or <= 0."""
    values = _numeric_column(path, frame, column, dates)
    if values is not None:
        check_price_column(str(path), column, values, dates, lines, required=False)
    return values


def _other_price_present(frame: pd.DataFrame, column: str) -> bool:
    other = "close" if column == "adj_close" else "adj_close"
    return other in frame and bool(frame[other].notna().any())


def _line(series: pd.Series, i: int) -> int:
    """1-based line in the file of row `i` (the header is line 1)."""
    return int(series.index[i]) + 2


# --- macro series -------------------------------------------------------------------------


def read_macro_file(path: Path, name: str, rules: PlausibilityRules = DEFAULT_RULES) -> MacroSeries:
    """A `date,value` series as published; FRED's blank or "." days are dropped; dates
    and values checked by bot.data.plausibility."""
    frame = _read_csv(path, MACRO_HEADERS, dtype=str, keep_default_na=False)
    missing = [c for c in ("date", "value") if c not in frame]
    if missing:
        raise DataError(
            str(path), missing[0], f"needs columns date and value; has {list(frame.columns)}"
        )
    dates = _parse_dates(path, frame["date"])
    _check_ascending(path, dates)
    text = frame["value"].str.strip()
    keep = ~text.isin(_MACRO_BLANKS).to_numpy()
    values = pd.to_numeric(text[keep], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raw = text[keep].iloc[i]
        raise DataError(str(path), "value", f"non-numeric value {raw!r} on {dates[keep][i]}")
    if not values.size:
        raise DataError(str(path), "value", "no values (every row is blank)")
    series = MacroSeries(name=name, dates=dates[keep], values=values)
    lines = frame.index.to_numpy()[keep] + 2
    check_macro(str(path), series, rules, lines)
    return series
