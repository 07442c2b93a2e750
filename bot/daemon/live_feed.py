"""Paper/live market history: Alpaca daily bars for the universe and FRED's macro
series, the latter stored in the trade-log database so a FRED outage falls back to the
last values known (and the regime rule's staleness check decides what they are worth).

Nothing is cached in memory between calls: each job asks for history once, and a copy
kept from an earlier job (Friday's close) would hide what was published since (FRED's
Friday values, read by Monday's regime job). A series already stored is downloaded from a
year before its newest stored day (FRED's `cosd`), not from its first observation: the
stored copy holds the rest, and a year back still takes in every revision FRED makes to
these daily series (the policy-uncertainty index's are days old). The first download of
a series takes all of it. A decision gets each series from the first day downloaded:
the regime rule reads only the latest values, and reading decades of stored
observations back cost more than the download (0.3 s a job for FRED's four series)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import requests
import structlog

from bot.data.alpaca import AlpacaMarketData
from bot.data.base import MACRO_SERIES, MacroSeries, MarketData
from bot.data.fred import KEY_HINT, fetch_series, fred_session
from bot.errors import BotError
from bot.net import FRED_POLICY, RetryPolicy
from bot.secrets import FRED_API_KEY_VAR, FRED_API_URL, FRED_URL, SecretsError, base_url
from bot.store.tradelog import TradeLog

log = structlog.get_logger(__name__)

#: how far before its newest stored day a stored macro series is downloaded again
REFETCH_DAYS = 366


def require_fred_key(fred_url: str, fred_api_key: str | None) -> None:
    """Refuse to read the macro series from FRED itself without an API key: every download
    would fail (HTTP 403) and each job fall back to the stored series, with a warning
    only, so the regime would never be decided again. A mirror may serve them keyless."""
    if fred_api_key is None and base_url(fred_url) == base_url(FRED_URL):
        raise SecretsError(
            f"{FRED_API_KEY_VAR} is not set: the macro series come from FRED, which "
            f"refuses its keyless download to scripts (HTTP 403 since 2026-05); {KEY_HINT}"
        )


class AlpacaFeed:
    """MarketFeed over Alpaca bars and FRED series, downloaded afresh on every call."""

    def __init__(
        self,
        data: AlpacaMarketData,
        tradelog: TradeLog,
        symbols: tuple[str, ...],
        fred_url: str,
        clock,
        lookback_days: int,
        macro_names: tuple[str, ...] = MACRO_SERIES,
        fred_policy: RetryPolicy = FRED_POLICY,
        fred_api_key: str | None = None,
        fred_api_url: str = FRED_API_URL,
    ) -> None:
        self.data = data
        self.tradelog = tradelog
        self.symbols = symbols
        self.fred_url = fred_url
        self.clock = clock
        self.lookback_days = lookback_days  # the target model's history_calendar_days
        self.macro_names = macro_names
        self.fred_policy = fred_policy
        self.fred_api_key = fred_api_key  # None: FRED's CSV download (refused since 2026-05)
        self.fred_api_url = fred_api_url
        if macro_names:
            require_fred_key(fred_url, fred_api_key)

    def history(self, through: dt.date) -> MarketData:
        """Bars through `through` (a later partial bar is dropped) and the macro series
        as FRED has them now; both downloaded on every call (a few requests per job)."""
        start = through - dt.timedelta(days=self.lookback_days)
        prices = self.data.daily_history(self.symbols, start, through)
        prices = prices.between(None, np.datetime64(through))
        return MarketData(prices, self.macro(), source="alpaca+fred", synthetic=False)

    def sizing_prices(self, symbols: tuple[str, ...]) -> np.ndarray | None:
        """Latest trade prices; if they cannot be had, None (size on the close) and a
        warning: sizing on yesterday's close is worse than on a live price, not wrong."""
        try:
            latest = self.data.latest_prices(symbols)
        except BotError as exc:
            log.warning("latest prices unavailable; sizing on the close", error=str(exc))
            return None
        return np.array([latest.get(s, np.nan) for s in symbols])

    def macro(self) -> dict[str, MacroSeries]:
        """Each series refreshed from FRED; a series that cannot be downloaded falls back
        to the copy stored by an earlier call, with a warning (never a crash, never
        invented values; the regime rule flags stale inputs and keeps its regime)."""
        out = {}
        with fred_session(self.fred_policy) as session:  # one connection for every series
            refreshed = [(name, self._refresh(name, session)) for name in self.macro_names]
        for name, (dates, values) in refreshed:
            if dates:
                out[name] = MacroSeries(
                    name, np.array(dates, dtype="datetime64[D]"), np.array(values, dtype=float)
                )
        return out

    def _refresh(self, name: str, session: requests.Session) -> tuple[list[dt.date], list[float]]:
        """Download one series (from REFETCH_DAYS before its newest stored day, if any) and
        store what is new or revised, deleting the stored days in the span downloaded that
        FRED no longer has a value for (withdrawn); returns the stored series from the
        first day downloaded. On failure log and return the stored copy over the same span."""
        last = self.tradelog.last_macro_day(name)
        start = None if last is None else last - dt.timedelta(days=REFETCH_DAYS)
        try:
            series = fetch_series(
                name, base_url=self.fred_url, api_key=self.fred_api_key, api_url=self.fred_api_url,
                start=start, rules=self.data.rules, session=session,
            )
        except BotError as exc:
            log.warning(
                "FRED download failed; using the stored series", series=name, error=str(exc)
            )
            return self.tradelog.load_macro(name, since=start)
        days = series.dates.astype("datetime64[D]").astype(object).tolist()
        return self.tradelog.save_macro(name, days, series.values.tolist(), self.clock.now(),
                                        covers=series.observed)
