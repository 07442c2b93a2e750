"""Macro series from FRED: the official API with a key, else the public CSV download.

With an API key (FRED_API_KEY, from the environment or the secrets file; free at
https://fredaccount.stlouisfed.org/apikeys), `GET {api}/fred/series/observations?
series_id=VIXCLS&file_type=json&api_key=...` answers the observations as JSON. Without
one, `GET {base}/graph/fredgraph.csv?id=VIXCLS` answers `observation_date,VIXCLS` lines
(older files say `DATE,VIXCLS`); FRED has refused that download to scripts with HTTP 403
since about 2026-05-30 (quantmod issue #453), and the error then says to set a key. In
both, days without a value are blank or "." and are dropped, as the CSV loader does.

A malformed answer is a DataError naming the series and the line (or observation),
because one bad line otherwise surfaces as a strange regime decision weeks later; so is
a value or a date that bot.data.plausibility finds implausible (VIX at -50, a row dated
in 2300). The key travels in the query string, as FRED requires: it is registered as a
secret (masked in every log line) and no error message carries a URL.
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
from bot.logs import mask_text
from bot.net import FRED_POLICY, RetryPolicy, describe_error, make_session
from bot.secrets import FRED_API_KEY_VAR, FRED_API_URL, FRED_URL

log = structlog.get_logger(__name__)

# Our series name -> FRED series id.
FRED_IDS = {VIX: "VIXCLS", SPREAD: "T10Y2Y", UNCERTAINTY: "USEPUINDXD", RISK_FREE: "DTB3"}
_DATE_HEADERS = ("observation_date", "date")
_BLANKS = ("", ".")
#: observations per API request (FRED's maximum); a longer series is read in pages
API_PAGE = 100_000
KEY_HINT = (f"get a free API key at https://fredaccount.stlouisfed.org/apikeys and set "
            f"{FRED_API_KEY_VAR} in the environment or the secrets file")


def fetch_series(
    series_id: str,
    *,
    base_url: str = FRED_URL,
    api_key: str | None = None,
    api_url: str = FRED_API_URL,
    start: dt.date | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    policy: RetryPolicy | None = None,
    rules: PlausibilityRules = DEFAULT_RULES,
    session: requests.Session | None = None,
) -> MacroSeries:
    """One series by our name (VIX, T10Y2Y, USEPUINDXD, DTB3) or by its FRED id; the
    result carries our name. With `api_key` from FRED's API at `api_url`, else from the
    CSV download at `base_url`. `policy` (if given) replaces timeout/retries; without it
    FRED_POLICY's budget applies (a failed download falls back to the stored series).
    `session`: one made by `fred_session`, kept open by the caller, so that several
    series share a connection (one TLS handshake, not one per series); the policy is
    then the session's."""
    name, fred_id = resolve(series_id)
    source = f"fred:{fred_id}"
    own = session is None
    if session is None:
        session = fred_session(_budget(policy, retries, timeout))
    try:
        if api_key:
            series = _from_api(session, api_url, api_key, fred_id, name, start, rules)
        else:
            series = _from_csv(session, base_url, fred_id, name, start, rules)
    except requests.RequestException as exc:
        raise DataError(source, None, f"download failed: {describe_error(exc)}") from exc
    finally:
        if own:
            session.close()
    if start is not None:  # the server may ignore the start
        keep = series.dates >= np.datetime64(start, "D")
        series = MacroSeries(series.name, series.dates[keep], series.values[keep],
                             _observed_from(series.observed, start))
        if not series.values.size:
            raise DataError(source, "value", f"no values on or after {start}")
    log.info(
        "fred_series_fetched",
        series=fred_id,
        rows=int(series.values.size),
        last=str(series.dates[-1]),
        via="api" if api_key else "csv",
    )
    return series


def _observed_from(
    observed: tuple[dt.date, dt.date] | None, start: dt.date
) -> tuple[dt.date, dt.date] | None:
    """The span an answer covers, from `start` on (the rows before it were dropped)."""
    if observed is None or observed[1] < start:
        return None
    return max(observed[0], start), observed[1]


def _from_csv(session: requests.Session, base_url: str, fred_id: str, name: str,
              start: dt.date | None, rules: PlausibilityRules) -> MacroSeries:
    params = {"id": fred_id}
    if start is not None:
        params["cosd"] = start.isoformat()
    response = session.get(base_url.rstrip("/") + "/graph/fredgraph.csv", params=params)
    if response.status_code == 403:
        raise DataError(f"fred:{fred_id}", None,
                        "download failed: HTTP 403: FRED refuses its CSV download to scripts "
                        f"without an API key; {KEY_HINT}")
    if response.status_code != 200:
        raise DataError(f"fred:{fred_id}", None, f"download failed: HTTP {response.status_code}")
    return parse_fredgraph_csv(response.text, fred_id, name, rules, start=start)


def _from_api(session: requests.Session, api_url: str, api_key: str, fred_id: str, name: str,
              start: dt.date | None, rules: PlausibilityRules) -> MacroSeries:
    """Every page of the series' observations from FRED's API, parsed and checked."""
    url = api_url.rstrip("/") + "/fred/series/observations"
    params: dict[str, str | int] = {
        "series_id": fred_id, "api_key": api_key, "file_type": "json", "limit": API_PAGE,
    }
    if start is not None:
        params["observation_start"] = start.isoformat()
    observations: list[object] = []
    while True:
        response = session.get(url, params={**params, "offset": len(observations)})
        body = _api_body(response, fred_id)
        page = body.get("observations")
        if not isinstance(page, list):
            raise DataError(f"fred:{fred_id}", "observations",
                            "expected a list of observations in FRED's answer, got "
                            f"{type(page).__name__}")
        observations.extend(page)
        count = body.get("count")
        if not page or not isinstance(count, int) or len(observations) >= count:
            break
    return parse_observations(observations, fred_id, name, rules, start=start)


def _api_body(response: requests.Response, fred_id: str) -> dict:
    """The JSON object of a FRED API answer; an error answer (FRED says why in
    `error_message`: no key, a key not registered, an unknown series) is a DataError."""
    source = f"fred:{fred_id}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        said = body.get("error_message") if isinstance(body, dict) else None
        why = f": {mask_text(str(said))[:300]}" if said else ""
        hint = f"; {KEY_HINT}" if said and "api_key" in str(said) else ""
        raise DataError(source, None, f"download failed: HTTP {response.status_code}{why}{hint}")
    if not isinstance(body, dict):
        raise DataError(source, None, "FRED's answer is not a JSON object")
    return body


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
    api_key: str | None = None,
    api_url: str = FRED_API_URL,
    start: dt.date | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    policy: RetryPolicy | None = None,
    rules: PlausibilityRules = DEFAULT_RULES,
) -> dict[str, MacroSeries]:
    """Every series in `names`, keyed by our name, over one connection."""
    with fred_session(_budget(policy, retries, timeout)) as session:
        return {
            resolve(n)[0]: fetch_series(n, base_url=base_url, api_key=api_key, api_url=api_url,
                                        start=start, rules=rules, session=session)
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
    text: str, fred_id: str, name: str | None = None, rules: PlausibilityRules = DEFAULT_RULES,
    *, start: dt.date | None = None,
) -> MacroSeries:
    """Parse a fredgraph.csv body; errors name the series and the 1-based line (`start`:
    the day it was asked from, named if the answer has no observation)."""
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
    return _checked_series(source, name or fred_id, dates, values, numbers, rules, "line", start)


def parse_observations(
    observations: list[object], fred_id: str, name: str | None = None,
    rules: PlausibilityRules = DEFAULT_RULES, *, start: dt.date | None = None,
) -> MacroSeries:
    """The API's observations ({"date": "2024-01-02", "value": "13.2"}, "." where a day
    has none); errors name the series and the observation's 1-based number (`start`: the
    day they were asked from, named if there is none)."""
    source = f"fred:{fred_id}"
    dates: list[dt.date] = []
    values: list[float] = []
    numbers: list[int] = []
    for number, item in enumerate(observations, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("date"), str) \
                or not isinstance(item.get("value"), str):
            raise DataError(source, "observation",
                            f"observation {number}: expected date and value strings, got "
                            f"{str(item)[:80]!r}")
        day = _date(source, number, item["date"], "observation")
        if dates and day <= dates[-1]:
            raise DataError(source, "date", f"observation {number}: {day} is not after {dates[-1]}")
        text = item["value"].strip()
        dates.append(day)
        numbers.append(number)
        values.append(math.nan if text in _BLANKS else _value(source, number, text, "observation"))
    return _checked_series(source, name or fred_id, dates, values, numbers, rules, "observation",
                           start)


def _checked_series(source: str, name: str, dates: list[dt.date], values: list[float],
                    numbers: list[int], rules: PlausibilityRules, rows: str,
                    start: dt.date | None = None) -> MacroSeries:
    """The parsed rows without their blank days, checked by bot.data.plausibility (an
    error names the row by its number: a file's line, an answer's observation). No row
    at all is not "every row is blank": asked from a day after the series' latest value,
    FRED answers none, and the error says so."""
    if not dates:
        since = f" on or after {start}" if start is not None else ""
        raise DataError(source, "value", f"no observations{since}: FRED has none for this "
                        f"series{since and ' (is the start after its latest value?)'}")
    array = np.array(values, dtype=float)
    keep = ~np.isnan(array)
    if not keep.any():
        raise DataError(source, "value", f"no values (every {rows} is blank)")
    series = MacroSeries(name, np.array(dates, dtype="datetime64[D]")[keep], array[keep],
                         observed=(dates[0], dates[-1]))
    check_macro(source, series, rules, np.array(numbers)[keep])
    return series


def _date(source: str, number: int, text: str, where: str = "line") -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise DataError(source, "date", f"{where} {number}: unparseable date {text[:40]!r}") from None


def _value(source: str, number: int, text: str, where: str = "line") -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            source, "value", f"{where} {number}: non-numeric value {text[:40]!r}"
        ) from None
    if not math.isfinite(value):
        raise DataError(source, "value", f"{where} {number}: non-finite value {text!r}")
    return value
