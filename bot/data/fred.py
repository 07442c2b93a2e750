"""Macro series from FRED's public CSV download (no API key needed).

`GET {base}/graph/fredgraph.csv?id=VIXCLS` answers `observation_date,VIXCLS` lines (older
files say `DATE,VIXCLS`); days without a value are blank or "." and are dropped, as the CSV
loader does. A malformed file is a DataError naming the series and the line, because one
bad line otherwise surfaces as a strange regime decision weeks later; so is a value or a
date that bot.data.plausibility finds implausible (VIX at -50, a row dated in 2300).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import requests
import structlog

from bot.data.base import MACRO_SERIES, RISK_FREE, SPREAD, UNCERTAINTY, VIX, MacroSeries
from bot.data.plausibility import DEFAULT_RULES, PlausibilityRules, check_macro
from bot.errors import DataError
from bot.net import FRED_POLICY, RetryPolicy, describe_error, make_session
from bot.secrets import FRED_URL

log = structlog.get_logger(__name__)

# Our series name -> FRED series id.
FRED_IDS = {VIX: "VIXCLS", SPREAD: "T10Y2Y", UNCERTAINTY: "USEPUINDXD", RISK_FREE: "DTB3"}
_DATE_HEADERS = ("observation_date", "date")
_BLANKS = ("", ".")


def fetch_series(
    series_id: str,
    *,
    base_url: str = FRED_URL,
    start: dt.date | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    policy: RetryPolicy | None = None,
    rules: PlausibilityRules = DEFAULT_RULES,
    session: requests.Session | None = None,
) -> MacroSeries:
    """One series by our name (VIX, T10Y2Y, USEPUINDXD, DTB3) or by its FRED id; the
    result carries our name. `policy` (if given) replaces timeout/retries; without it
    FRED_POLICY's budget applies (a failed download falls back to the stored series).
    `session`: one made by `fred_session`, kept open by the caller, so that several
    series share a connection (one TLS handshake, not one per series); the policy is
    then the session's."""
    name, fred_id = resolve(series_id)
    params = {"id": fred_id}
    if start is not None:
        params["cosd"] = start.isoformat()
    url = base_url.rstrip("/") + "/graph/fredgraph.csv"
    source = f"fred:{fred_id}"
    own = session is None
    if session is None:
        session = fred_session(_budget(policy, retries, timeout))
    try:
        response = session.get(url, params=params)
    except requests.RequestException as exc:
        raise DataError(source, None, f"download failed: {describe_error(exc)}") from exc
    finally:
        if own:
            session.close()
    if response.status_code != 200:
        raise DataError(source, None, f"download failed: HTTP {response.status_code}")
    series = parse_fredgraph_csv(response.text, fred_id, name, rules)
    if start is not None:  # the server may ignore cosd
        keep = series.dates >= np.datetime64(start, "D")
        series = MacroSeries(series.name, series.dates[keep], series.values[keep])
        if not series.values.size:
            raise DataError(source, "value", f"no values on or after {start}")
    log.info(
        "fred_series_fetched",
        series=fred_id,
        rows=int(series.values.size),
        last=str(series.dates[-1]),
    )
    return series


def fred_session(policy: RetryPolicy = FRED_POLICY) -> requests.Session:
    """An HTTP session with `policy`'s timeouts and retries, for `fetch_series`."""
    return make_session(policy, "FRED")


def _budget(policy: RetryPolicy | None, retries: int, timeout: float) -> RetryPolicy:
    """`policy`, or FRED_POLICY with `retries` retries and `timeout`."""
    return policy or replace(FRED_POLICY, attempts=retries + 1, timeout=timeout)


def fetch_macro(
    names: Sequence[str] = MACRO_SERIES,
    *,
    base_url: str = FRED_URL,
    start: dt.date | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    policy: RetryPolicy | None = None,
    rules: PlausibilityRules = DEFAULT_RULES,
) -> dict[str, MacroSeries]:
    """Every series in `names`, keyed by our name, over one connection."""
    with fred_session(_budget(policy, retries, timeout)) as session:
        return {
            resolve(n)[0]: fetch_series(n, base_url=base_url, start=start, rules=rules, session=session)
            for n in names
        }


def resolve(series: str) -> tuple[str, str]:
    """(our name, FRED id) for either spelling; an unknown id is used as both."""
    if series in FRED_IDS:
        return series, FRED_IDS[series]
    for name, fred_id in FRED_IDS.items():
        if fred_id == series:
            return name, fred_id
    return series, series


def parse_fredgraph_csv(
    text: str, fred_id: str, name: str | None = None, rules: PlausibilityRules = DEFAULT_RULES
) -> MacroSeries:
    """Parse a fredgraph.csv body; errors name the series and the 1-based line."""
    source = f"fred:{fred_id}"
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or not lines[0].strip():
        raise DataError(source, None, "empty answer")
    header = [h.strip() for h in lines[0].split(",")]
    if len(header) != 2 or header[0].lower() not in _DATE_HEADERS or header[1] != fred_id:
        raise DataError(
            source,
            "header",
            f"line 1: expected 'observation_date,{fred_id}', got {lines[0][:80]!r}",
        )
    dates: list[dt.date] = []
    values: list[float] = []
    numbers: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            raise DataError(source, "line", f"line {number}: expected 2 fields, got {len(parts)}")
        day = _date(source, number, parts[0])
        if dates and day <= dates[-1]:
            raise DataError(source, "date", f"line {number}: {day} is not after {dates[-1]}")
        dates.append(day)
        numbers.append(number)
        values.append(math.nan if parts[1] in _BLANKS else _value(source, number, parts[1]))
    array = np.array(values, dtype=float)
    keep = ~np.isnan(array)
    if not keep.any():
        raise DataError(source, "value", "no values (every line is blank)")
    day_array = np.array(dates, dtype="datetime64[D]")
    series = MacroSeries(name=name or fred_id, dates=day_array[keep], values=array[keep])
    check_macro(source, series, rules, np.array(numbers)[keep])
    return series


def _date(source: str, number: int, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise DataError(source, "date", f"line {number}: unparseable date {text[:40]!r}") from None


def _value(source: str, number: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            source, "value", f"line {number}: non-numeric value {text[:40]!r}"
        ) from None
    if not math.isfinite(value):
        raise DataError(source, "value", f"line {number}: non-finite value {text!r}")
    return value
