"""Clearing over HTTP, for `audit` or `admin` tokens: GET /v1/reports/day (the day's close)
and POST /v1/admin/reconcile (reconcile a day with the centre now).

The numbers are edge.dayreport's and edge.reconcile's, the same as `edge report day` and
`edge reconcile`; each call is in the audit trail (`report.read`, `admin.reconcile`). No
subscriber's data is in either, only cashiers' totals and entry ids.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from edge import access, config, dayprint, dayreport, errors, reconcile
from edge.node import NODE
from edge.web import audit
from edge.web.http import client_of, json_response
from sync.errors import SyncError

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


@routes.post("/v1/admin/reconcile")
@audit.audited(audit.ADMIN_RECONCILE)
async def reconcile_now(request: web.Request) -> web.Response:
    """Reconcile a day (`?date=`, default yesterday) with the centre now; the result is the
    dashboard's last reconciliation. 200 with the differences (`ok` false when any but
    pending), 503 when the centre cannot answer."""
    client_of(request, *access.REPORTS)
    node = request.app[NODE]
    daily = node.replication.reconciler
    if daily is None:
        raise errors.NoCentre("centre.url is empty in this node's configuration")
    if set(request.query) - {"date"}:
        raise errors.InvalidQuery("the only parameter is date=YYYY-MM-DD")
    now = node.clock()
    try:
        day = (
            dayreport.parse_day(request.query["date"])
            if "date" in request.query
            else datetime.fromtimestamp(now, node.settings.tz).date() - timedelta(days=1)
        )
    except dayreport.BadDay:
        raise errors.InvalidQuery("date: a local day YYYY-MM-DD (node.timezone)") from None
    try:
        result = await reconcile.run(day, daily.fetch, daily.read, now)
    except SyncError as exc:
        raise errors.CentreUnreachable(f"the centre did not answer: {exc}"[:300]) from exc
    daily.remember(result)
    return json_response(result.as_dict())
