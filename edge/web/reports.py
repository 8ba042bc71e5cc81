"""Clearing over HTTP: GET /v1/reports/day (the day's close) for `audit` or `admin` tokens.

The numbers are edge.dayreport's, the same as `edge report day`; every read is in the
audit trail (`report.read`). No subscriber's data is in a report, only cashiers' totals.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from edge import access, config, dayprint, dayreport, errors
from edge.node import NODE
from edge.web import audit
from edge.web.http import client_of, json_response

routes = web.RouteTableDef()
_TYPES = {"csv": "text/csv", "html": "text/html"}


@routes.get("/v1/reports/day")
@audit.audited(audit.REPORT_READ)
async def day_report(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client_of(request, *access.REPORTS)
    unknown = set(request.query) - {"date", "format"}
    if unknown:
        raise errors.InvalidQuery(f"unknown parameter(s): {', '.join(sorted(unknown))[:100]}")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", *_TYPES):
        raise errors.InvalidQuery("format: json, csv or html")
    now = node.clock()
    if "date" in request.query:
        try:
            day = dayreport.parse_day(request.query["date"])
        except dayreport.BadDay:
            raise errors.InvalidQuery("date: a local day YYYY-MM-DD (node.timezone)") from None
    else:
        day = datetime.fromtimestamp(now, node.settings.tz).date()
    s = node.settings
    report = await node.db.read_slow(
        lambda c: dayreport.build(
            c,
            node=s.node_id,
            governorate=s.node_governorate,
            timezone=s.node_timezone,
            day=day,
            now=now,
        )
    )
    if fmt == "json":
        return json_response(report.as_dict())
    text = (
        dayprint.csv_text(report)
        if fmt == "csv"
        else dayprint.html_page(report, config.GOVERNORATES[s.node_governorate][1])
    )
    return web.Response(text=text, content_type=_TYPES[fmt], charset="utf-8")
