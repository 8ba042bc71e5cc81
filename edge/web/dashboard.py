"""The operator's dashboard: the page and its assets (all served here), and the power history
and overview it draws.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

import outbox
from edge import __version__, errors
from edge.node import NODE
from edge.power import history
from edge.web.http import json_response
from sync.timefmt import iso, iso_or_none, start_of_day

STATIC = Path(__file__).parent / "static"
ASSETS = frozenset(p.name for p in STATIC.iterdir() if p.is_file() and p.name != "index.html")
# Everything from the node itself: a page that tried the internet would hang offline.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

routes = web.RouteTableDef()


@routes.get("/")
async def page(request: web.Request) -> web.Response:
    # The version in asset URLs makes browsers fetch new assets after an upgrade.
    html = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{version}}", __version__)
    return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)


def hours_of(request: web.Request) -> int:
    raw = request.query.get("hours", "24")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= history.MAX_HOURS):
        raise errors.InvalidQuery(f"hours must be a whole number from 1 to {history.MAX_HOURS}")
    return int(raw)


@routes.get("/v1/power/history")
async def power_history(request: web.Request) -> web.Response:
    node = request.app[NODE]
    hours = hours_of(request)
    now = node.clock()
    since = now - hours * 3600
    found = await node.db.read_slow(lambda c: history.power_history(c, since, now))
    body = {
        "from": iso(since),
        "to": iso(now),
        "hours": hours,
        "state": node.power.state,
        "marks": node.history.marks(),
    } | found
    return json_response(body)


@routes.get("/v1/overview")
async def overview(request: web.Request) -> web.Response:
    node = request.app[NODE]
    now = node.clock()
    midnight = start_of_day(now, node.settings.tz)
    past = node.history
    delivered = await node.db.read_slow(lambda c: outbox.delivered_since(c, midnight))
    since = past.link_since
    return json_response(
        {
            "now": iso(now),
            "link": {
                "state": node.link.state,
                "since": iso_or_none(since),
                "periods": history.link_periods(past, now - 24 * 3600),
            },
            "outbox": {"delivered_today": delivered, "day_started_at": iso(midnight)},
            "power": {"marks": past.marks()},
        }
    )


@routes.get("/static/{filename}")
async def asset(request: web.Request) -> web.FileResponse:
    # Only the files shipped in edge/web/static: a name can never walk out of the directory.
    name = request.match_info["filename"]
    if name not in ASSETS:
        raise errors.NotFound(f"no asset named {name[:60]!r}")
    # URLs carry ?v=<version>, so a day's caching never outlives an upgrade.
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "max-age=86400"})
