"""A fake FRED serving `GET /graph/fredgraph.csv?id=SERIES[&cosd=YYYY-MM-DD]` from memory.

Test control:
    fake.series["VIXCLS"] = [(date, 12.3), (date, None), ...]   None is written as "."
    fake.header = "DATE"          the older header style (default "observation_date")
    fake.raw["VIXCLS"] = "..."    serve this exact body instead (malformed files)
    fake.inject("GET", "/graph/fredgraph.csv", Fault...)         scripted faults
"""

from __future__ import annotations

import datetime as dt

from tests.fakes import FakeServer, Fault, Request, Response

__all__ = ["FakeFred", "Fault"]


class FakeFred(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.series: dict[str, list[tuple[dt.date, float | None]]] = {}
        self.raw: dict[str, str] = {}
        self.header = "observation_date"
        self.route("GET", "/graph/fredgraph.csv", self._csv)

    def _csv(self, request: Request) -> Response:
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
