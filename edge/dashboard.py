"""The operator's dashboard: the page and its assets (all served here), the power history and
overview it draws, and the admin-only list of rejected payments.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web

from edge import __version__, errors, history, payments
from edge.api import client_of, json_response
from edge.node import NODE

STATIC = Path(__file__).parent / "static"
ASSETS = frozenset(p.name for p in STATIC.iterdir() if p.is_file() and p.name != "index.html")
REJECTED_LIMIT = 200
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
        "from": payments.iso(since),
        "to": payments.iso(now),
        "hours": hours,
        "state": node.power.state,
        "marks": history.of(node).marks(),
    } | found
    return json_response(body)


@routes.get("/v1/overview")
async def overview(request: web.Request) -> web.Response:
    node = request.app[NODE]
    now = node.clock()
    midnight = history.start_of_day(node, now)
    past = history.of(node)
    delivered = await node.db.read_slow(lambda c: history.delivered_since(c, midnight))
    since = past.link_since
    return json_response(
        {
            "now": payments.iso(now),
            "link": {
                "state": node.link.state,
                "since": None if since is None else payments.iso(since),
                "periods": history.link_periods(past, now - 24 * 3600),
            },
            "outbox": {"delivered_today": delivered, "day_started_at": payments.iso(midnight)},
            "power": {"marks": past.marks()},
        }
    )


REJECTED_KEYS = ("seq", "payment_id", "verdict", "reason", "rejected_at", "attempts", "receipt",
                 "bill_id", "account", "amount", "method", "cashier", "channel", "accepted_at")  # fmt: skip


def rejected(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    """The newest rejected entries with their payment (no subscriber name: the bill id is enough)."""
    rows = conn.execute(
        "SELECT o.seq, o.id, o.verdict, o.reason, o.settled_at, o.attempts, p.receipt,"
        " p.bill_id, p.account, p.amount, p.method, p.cashier, p.channel, p.accepted_at"
        " FROM outbox_entries o LEFT JOIN payments p ON p.seq = o.seq"
        " WHERE o.state = 'rejected' ORDER BY o.seq DESC LIMIT ?",
        (limit,),
    ).fetchall()
    out = []
    for row in rows:
        entry = dict(zip(REJECTED_KEYS, row, strict=True))
        for key in ("rejected_at", "accepted_at"):
            entry[key] = None if entry[key] is None else payments.iso(entry[key])
        out.append(entry | {"currency": "SYP"})
    return out


@routes.get("/v1/admin/rejected")
async def admin_rejected(request: web.Request) -> web.Response:
    client_of(request, "admin")
    node = request.app[NODE]

    def read(conn: sqlite3.Connection) -> tuple[int, list[dict[str, Any]]]:
        total = conn.execute("SELECT COUNT(*) FROM outbox_entries WHERE state = 'rejected'")
        return int(total.fetchone()[0]), rejected(conn, REJECTED_LIMIT)

    total, entries = await node.db.read_slow(read)
    return json_response({"total": total, "entries": entries})


@routes.get("/static/{filename}")
async def asset(request: web.Request) -> web.FileResponse:
    # Only the files shipped in edge/static: a name can never walk out of the directory.
    name = request.match_info["filename"]
    if name not in ASSETS:
        raise errors.NotFound(f"no asset named {name[:60]!r}")
    # URLs carry ?v=<version>, so a day's caching never outlives an upgrade.
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "max-age=86400"})


def setup(app: web.Application) -> None:
    # Made now, not at first use: the link's "since" must count from the node's start.
    history.of(app[NODE])
    app.add_routes(routes)
