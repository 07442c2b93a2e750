"""A fake FRED serving `GET /graph/fredgraph.csv?id=SERIES[&cosd=YYYY-MM-DD]` and the
API's `GET /fred/series/observations?series_id=SERIES&api_key=KEY&file_type=json
[&observation_start=YYYY-MM-DD][&limit=N&offset=M]` from memory, as FRED answers them:
the API refuses a missing or unregistered key, or an unknown series, with HTTP 400 and
an `error_message`; since 2026-05 the real CSV download answers 403 to scripts
(`csv_refused = True` here).

Test control:
    fake.series["VIXCLS"] = [(date, 12.3), (date, None), ...]   None is written as "."
    fake.header = "DATE"          the older header style (default "observation_date")
    fake.raw["VIXCLS"] = "..."    serve this exact body instead (malformed files)
    fake.inject("GET", "/graph/fredgraph.csv", Fault...)         scripted faults
    fake.api_key = "..."          the one key the API accepts (API_KEY by default)
    fake.csv_refused = True       the CSV download answers 403, as FRED's does now
"""

from __future__ import annotations

import datetime as dt

from tests.fakes import FakeServer, Fault, Request, Response

__all__ = ["API_KEY", "FakeFred", "Fault"]

API_KEY = "0123456789abcdef0123456789abcdef"  # 32 lower-case letters and digits, as FRED's
_READ_ABOUT_KEYS = "Read https://fred.stlouisfed.org/docs/api/api_key.html for more information."


class FakeFred(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.series: dict[str, list[tuple[dt.date, float | None]]] = {}
        self.raw: dict[str, str] = {}
        self.header = "observation_date"
        self.api_key = API_KEY
        self.csv_refused = False
        self.route("GET", "/graph/fredgraph.csv", self._csv)
        self.route("GET", "/fred/series/observations", self._observations)

    def _observations(self, request: Request) -> Response:
        query = request.query
        key = query.get("api_key")
        if not key:
            return _api_error(f"Bad Request.  Variable api_key is not set.  {_READ_ABOUT_KEYS}")
        if key != self.api_key:
            return _api_error("Bad Request.  The value for variable api_key is not registered.  "
                              + _READ_ABOUT_KEYS)
        series_id = query.get("series_id", "")
        if series_id not in self.series:
            return _api_error("Bad Request.  The series does not exist.")
        start = query.get("observation_start")
        first = dt.date.fromisoformat(start) if start else dt.date.min
        rows = [{"realtime_start": "2024-12-02", "realtime_end": "2024-12-02",
                 "date": day.isoformat(), "value": "." if value is None else repr(value)}
                for day, value in self.series[series_id] if day >= first]
        limit, offset = int(query.get("limit", 100_000)), int(query.get("offset", 0))
        return Response(200, {
            "realtime_start": "2024-12-02", "realtime_end": "2024-12-02",
            "observation_start": start or "1600-01-01", "observation_end": "9999-12-31",
            "units": "lin", "output_type": 1, "file_type": "json", "order_by": "observation_date",
            "sort_order": "asc", "count": len(rows), "offset": offset, "limit": limit,
            "observations": rows[offset:offset + limit],
        })

    def _csv(self, request: Request) -> Response:
        if self.csv_refused:
            return Response(403, "<html><body>Forbidden</body></html>", content_type="text/html")
        series_id = request.query.get("id", "")
        if series_id in self.raw:
            return Response(200, self.raw[series_id], content_type="text/csv")
        if series_id not in self.series:
            return Response(
                404, "<html><body>Series not found</body></html>", content_type="text/html"
            )
        start = request.query.get("cosd")
        first = dt.date.fromisoformat(start) if start else dt.date.min
        lines = [f"{self.header},{series_id}"]
        for day, value in self.series[series_id]:
            if day >= first:
                lines.append(f"{day.isoformat()},{'.' if value is None else repr(value)}")
        return Response(200, "\n".join(lines) + "\n", content_type="text/csv")


def _api_error(message: str) -> Response:
    return Response(400, {"error_code": 400, "error_message": message})
