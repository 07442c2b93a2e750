"""Daily prices from Alpaca's market-data API, and a writer for the CSV cache.

All symbols come from one bars request (alpaca-py follows next_page_token until the last
page), split- and dividend-adjusted (adjustment=all) so returns line up with the backtest
data, on the SIP feed by default (every exchange's prints, the official opening and
closing auctions; free accounts may query SIP data older than 15 minutes, and bars end at
least 16 minutes in the past: DATA_DELAY), latest trades on IEX by default (free and
real time). The answer is checked before anything trades on it: a
missing symbol, field or number or a duplicated bar here, every price and date rule of
bot.data.plausibility when the symbols are aligned; each is a DataError naming the symbol
and field.

The client returns the API's JSON as it came (alpaca-py's raw_data): a year of bars for
six symbols is some 2,000 pydantic models, which took more time than the rest of the
daemon's decision, for four numbers and a date each, checked here anyway.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import structlog
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest, StockLatestBarRequest, StockLatestTradeRequest
from alpaca.data.timeframe import TimeFrame

from bot.broker.alpaca_orders import ANSWER_ERRORS, api_error_parts, describe_answer_error
from bot.calendar import last_closed_session
from bot.data.align import SymbolBars, align_prices
from bot.data.base import MacroSeries, PriceHistory
from bot.data.file_set import write_file_set
from bot.data.plausibility import DEFAULT_RULES, PlausibilityRules
from bot.errors import DataError
from bot.net import ALPACA_POLICY, RetryPolicy, take_over_sdk_retries
from bot.secrets import DATA_URL, Credentials, load_credentials, load_endpoints

log = structlog.get_logger(__name__)
T = TypeVar("T")

NEW_YORK = ZoneInfo("America/New_York")
#: how far back data is asked for: Alpaca serves SIP data to free keys from 15 minutes
#: back, and a minute more covers a clock a little behind Alpaca's. A session's daily bar
#: is final (closing auction included) from then on, for every caller alike.
DATA_DELAY = dt.timedelta(minutes=16)
#: a latest trade (or minute bar) older than this is not used to size orders
MAX_PRICE_AGE = dt.timedelta(minutes=30)
SOURCE = "alpaca"
#: sessions a symbol's last bar may lag the others' (a quiet day on IEX, carried and
#: marked filled); more is stale, left NaN, and the daemon refuses to decide on it
MAX_TRAILING_GAP = 1


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_data_client(
    credentials: Credentials, base_url: str, policy: RetryPolicy
) -> StockHistoricalDataClient:
    """A data client answering raw JSON, with our timeout/retry adapter (per page, so a
    failed page does not restart the download) and the SDK's own retry switched off."""
    client = StockHistoricalDataClient(
        api_key=credentials.key_id, secret_key=credentials.secret, url_override=base_url,
        raw_data=True,
    )
    take_over_sdk_retries(client, policy, "Alpaca data API")
    return client


class AlpacaMarketData:
    """Daily adjusted bars and latest prices for a list of symbols."""

    def __init__(
        self,
        client: StockHistoricalDataClient,
        *,
        feed: str = "sip",
        now: Callable[[], dt.datetime] = _utcnow,
        rules: PlausibilityRules = DEFAULT_RULES,
        latest_feed: str = "iex",
    ) -> None:
        self._client = client
        self.feed = DataFeed(feed)  # bars
        self.latest_feed = DataFeed(latest_feed)  # latest trades and bars (order sizing)
        self._now = now
        self.rules = rules

    @classmethod
    def connect(
        cls,
        credentials: Credentials,
        *,
        base_url: str = DATA_URL,
        feed: str = "sip",
        policy: RetryPolicy | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
        rules: PlausibilityRules = DEFAULT_RULES,
        latest_feed: str = "iex",
    ) -> AlpacaMarketData:
        client = make_data_client(credentials, base_url, policy or ALPACA_POLICY)
        return cls(client, feed=feed, now=now, rules=rules, latest_feed=latest_feed)

    @classmethod
    def from_env(
        cls,
        *,
        feed: str = "sip",
        policy: RetryPolicy | None = None,
        rules: PlausibilityRules = DEFAULT_RULES,
    ) -> AlpacaMarketData:
        return cls.connect(
            load_credentials(), base_url=load_endpoints().data_url, feed=feed, policy=policy,
            rules=rules,
        )

    def __repr__(self) -> str:
        return f"AlpacaMarketData(url={self._client._base_url!s}, feed={self.feed.value})"

    def daily_history(
        self, symbols: Sequence[str], start: dt.date, end: dt.date | dt.datetime | None = None
    ) -> PriceHistory:
        """Adjusted daily open/close of `symbols` from `start` through `end`, never later
        than DATA_DELAY (16 minutes) ago. The default end is the last session closed by then, so no bar
        of a session still open (not final) is returned; an explicit `end` that reaches
        into an open session gets its partial bar: the caller decides after the close."""
        symbols = _unique(symbols)
        request = StockBarsRequest(
            symbol_or_symbols=list(symbols),
            timeframe=TimeFrame.Day,
            start=dt.datetime.combine(start, dt.time(0), NEW_YORK),
            end=self._end(end),
            adjustment=Adjustment.ALL,
            feed=self.feed,
        )
        barset = self._call("bars", self._client.get_stock_bars, request)
        if not isinstance(barset, Mapping):
            raise DataError(f"{SOURCE}:bars", None, "malformed answer (bars are not keyed by symbol)")
        days_of: dict[str, np.datetime64] = {}  # the symbols share their stamps
        bars = [_checked_bars(s, barset.get(s) or [], days_of) for s in symbols]
        return align_prices(symbols, bars, carry_after_last=MAX_TRAILING_GAP, rules=self.rules)

    def latest_prices(self, symbols: Sequence[str]) -> dict[str, float]:
        """Last trade price per symbol; the latest minute bar's close where no trade is
        known or the trade is older than MAX_PRICE_AGE (a thin fund's last IEX print may
        be yesterday's). A symbol whose trade and bar are both that old is left out, with
        a warning: its orders are sized on the close. A symbol with neither in the answer,
        or a non-positive price, is a DataError."""
        symbols = _unique(symbols)
        oldest = self._now() - MAX_PRICE_AGE
        trades = self._call(
            "latest trades",
            self._client.get_stock_latest_trade,
            StockLatestTradeRequest(symbol_or_symbols=list(symbols), feed=self.latest_feed),
        )
        prices: dict[str, float] = {}
        stale: dict[str, object] = {}
        for s, t in _by_symbol(trades, "latest trades").items():
            if s not in symbols:
                continue
            price = _checked_price(s, "trade.price", _field(t, "p"))
            if _older(_field(t, "t"), oldest):
                stale[s] = _field(t, "t")
            else:
                prices[s] = price
        missing = [s for s in symbols if s not in prices]
        if missing:
            bars = self._call(
                "latest bars",
                self._client.get_stock_latest_bar,
                StockLatestBarRequest(symbol_or_symbols=missing, feed=self.latest_feed),
            )
            bars = _by_symbol(bars, "latest bars")
            for s in missing:
                if s not in bars:
                    if s in stale:
                        continue
                    raise DataError(
                        f"{SOURCE}:{s}", "price", "no latest trade or bar in the answer"
                    )
                price = _checked_price(s, "bar.close", _field(bars[s], "c"))
                if _older(_field(bars[s], "t"), oldest):
                    stale.setdefault(s, _field(bars[s], "t"))
                else:
                    prices[s] = price
                    stale.pop(s, None)
        for s, when in stale.items():
            log.warning("latest price too old to size on; sizing on the close", symbol=s,
                        at=str(when), max_age_minutes=MAX_PRICE_AGE.total_seconds() / 60)
        return {s: prices[s] for s in symbols if s in prices}

    def _end(self, end: dt.date | dt.datetime | None) -> dt.datetime:
        latest = self._now() - DATA_DELAY
        if end is None:  # a session still open would give a bar that is not final
            end = last_closed_session(latest)
        if not isinstance(end, dt.datetime):
            # Daily bars are stamped at midnight New York: 23:59 takes the day's bar and
            # not the next one, whether the API treats `end` as inclusive or not.
            end = dt.datetime.combine(end, dt.time(23, 59), NEW_YORK)
        return min(end, latest)

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """One SDK call; HTTP, transport and parse failures become DataError."""
        try:
            return fn(*args)
        except APIError as exc:
            status, code, message = api_error_parts(exc)
            detail = f"HTTP {status}" + (f" {code}" if code is not None else "") + f": {message}"
            raise DataError(f"{SOURCE}:{what}", None, detail + _hint(what, status, message)) from exc
        except ANSWER_ERRORS as exc:
            raise DataError(f"{SOURCE}:{what}", None, describe_answer_error(exc)) from exc


def _hint(what: str, status: object, message: str) -> str:
    """What to do about a refusal the data API explains badly (Alpaca's FAQ on 403s)."""
    if status != 403:
        return ""
    if "SIP" in message and what == "bars":
        # Daily bars are asked to end DATA_DELAY (16 min) before now, past the 15 minutes
        # a free key waits: refused, this machine's clock is ahead. IEX bars would only
        # trade on closes that are not the official ones.
        return ("; daily bars are asked only up to 16 minutes ago, so a free key's SIP "
                "refusal means this machine's clock is more than a minute ahead: sync it (NTP)")
    if "SIP" in message:
        return ("; a free key gets SIP data only 15 minutes old: set data.alpaca_latest_feed = "
                '"iex", or subscribe to Alpaca\'s paid plan')
    return ("; check APCA_API_KEY_ID and APCA_API_SECRET_KEY (keys of a paper account that "
            "was reset must be generated again)")


def _unique(symbols: Sequence[str]) -> tuple[str, ...]:
    if not symbols:
        raise DataError(SOURCE, "symbols", "no symbols requested")
    if len(set(symbols)) != len(symbols):
        raise DataError(SOURCE, "symbols", f"a symbol is requested twice: {list(symbols)}")
    return tuple(symbols)


def _by_symbol(answer: object, what: str) -> Mapping[str, Any]:
    if not isinstance(answer, Mapping):
        raise DataError(f"{SOURCE}:{what}", None, "malformed answer (not keyed by symbol)")
    return answer


def _older(stamp: object, oldest: dt.datetime) -> bool:
    """Whether an answer's RFC 3339 time (`2024-11-27T14:59:59.123456789Z`) is before
    `oldest`; a time missing or unreadable is not judged (the price is used)."""
    if not isinstance(stamp, str):
        return False
    text = stamp.strip().replace("Z", "+00:00")
    whole, dot, rest = text.partition(".")
    if dot:  # nanoseconds: Python reads at most six digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{whole}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when < oldest


def _field(item: object, key: str) -> object:
    """One field of a JSON object of the answer; None if absent (or not an object)."""
    return item.get(key) if isinstance(item, Mapping) else None


def _checked_price(symbol: str, field: str, value: object) -> float:
    try:
        price = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        price = math.nan
    if not math.isfinite(price) or price <= 0:
        raise DataError(f"{SOURCE}:{symbol}", field, f"unusable price {value!r}")
    return price


#: the bar fields read, by their JSON names (Alpaca's v2 bars: t, o, h, l, c, v, n, vw)
BAR_PRICES = (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close"))


def bar_day(stamp: str) -> np.datetime64:
    """The session date of a daily bar's stamp (midnight New York time, given in UTC,
    RFC 3339: '2024-11-18T05:00:00Z')."""
    moment = dt.datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        raise ValueError(f"no time zone in {stamp!r}")
    return np.datetime64(moment.astimezone(NEW_YORK).date(), "D")


def _checked_bars(
    symbol: str, bars: Sequence[Mapping[str, Any]], days_of: dict[str, np.datetime64]
) -> SymbolBars:
    """Dates and prices of one symbol, sorted; an empty answer, a bar without a stamp or
    a price, a price that is not a number or a repeated day is an error naming the field
    (the values are checked with every loader's, in align_prices). A price given as null
    becomes NaN, which those rules refuse. `days_of` keeps each stamp's date: every
    symbol's bars carry the same ones."""
    source = f"{SOURCE}:{symbol}"
    if not isinstance(bars, Sequence) or isinstance(bars, str | bytes):
        raise DataError(source, "bars", "malformed answer (the bars are not a list)")
    if not bars:
        raise DataError(source, "symbol", "no bars in the answer")
    if not all(isinstance(b, Mapping) for b in bars):
        raise DataError(source, "bars", "malformed answer (a bar is not an object)")
    days = np.empty(len(bars), dtype="datetime64[D]")
    for i, bar in enumerate(bars):
        stamp = bar.get("t")
        day = days_of.get(stamp) if isinstance(stamp, str) else None
        if day is None:
            try:
                day = days_of[stamp] = bar_day(stamp)
            except (TypeError, ValueError) as exc:
                raise DataError(source, "t", f"unusable bar time {stamp!r}") from exc
        days[i] = day
    order = np.argsort(days, kind="stable")
    days = days[order]
    dup = np.flatnonzero(np.diff(days) == np.timedelta64(0, "D"))
    if dup.size:
        raise DataError(source, "date", f"duplicate bar on {days[int(dup[0])]}")
    prices = {name: _bar_prices(source, bars, key)[order] for key, name in BAR_PRICES}
    return SymbolBars(
        source, days, prices["open"], prices["close"], prices["high"], prices["low"]
    )


def _bar_prices(source: str, bars: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    try:
        return np.array([bar[key] for bar in bars], dtype=float)
    except KeyError:
        raise DataError(source, key, "a bar without this price") from None
    except (TypeError, ValueError) as exc:
        raise DataError(source, key, f"a price that is not a number ({exc})") from None


# --- CSV cache ----------------------------------------------------------------------------

PRICE_HEADER = ("date", "open", "high", "low", "close", "adj_close", "volume")


def write_csv_directory(
    history: PriceHistory, macro: Mapping[str, MacroSeries], directory: Path | str
) -> list[Path]:
    """Write prices/<SYM>.csv and macro/<NAME>.csv in the layout load_csv_directory reads,
    as one set (bot.data.file_set: a crash never leaves half a file, nor some files new
    and others old). `bot data fetch` writes several histories at once: it joins their
    csv_files and calls write_file_set itself."""
    directory = Path(directory)
    return write_file_set(directory, csv_files(history, macro, directory))


def csv_files(
    history: PriceHistory, macro: Mapping[str, MacroSeries], directory: Path
) -> dict[Path, str]:
    """The text of each file write_csv_directory writes, by its path. Prices are
    adjusted, so close = adj_close; high, low and volume are left empty (PriceHistory
    does not carry them). Only real bars are written: a forward-filled day is left out,
    so the CSV loader sees the hole again and no order fills on it."""
    files: dict[Path, str] = {}
    real = np.isfinite(history.close)
    if history.filled is not None:
        real &= ~history.filled
    for j, symbol in enumerate(history.symbols):
        rows = []
        for t in np.flatnonzero(real[:, j]):
            o, c = history.open[t, j], history.close[t, j]
            rows.append((str(history.dates[t]), _num(o), "", "", _num(c), _num(c), ""))
        files[directory / "prices" / f"{symbol}.csv"] = _csv_text(PRICE_HEADER, rows)
    for name, series in macro.items():
        rows = [(str(d), _num(v)) for d, v in zip(series.dates, series.values, strict=True)]
        files[directory / "macro" / f"{name}.csv"] = _csv_text(("date", "value"), rows)
    return files


def _num(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ""


def _csv_text(header: Sequence[str], rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
