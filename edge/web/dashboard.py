"""The operator's dashboard: the page and its assets (all served here), the texts of every code
it may show, and the power history and overview it draws.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

import outbox
from edge import __version__, errors
from edge.node import NODE
from edge.power import history
from edge.web.http import json_response
from sync.reasons import REASONS
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


def problem_texts() -> dict[str, tuple[str, str]]:
    """code -> (English, Arabic) of every problem the node answers (edge.errors' classes)."""
    out: dict[str, tuple[str, str]] = {}
    todo: list[type[errors.ApiError]] = [errors.ApiError]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is not errors.HttpError:  # titled per instance, by aiohttp's reason
            out[cls.code] = (cls.title, cls.title_ar)
    return out


def codes_script() -> bytes:
    """`window.EDGE_CODES`: the one catalogue (edge.errors, sync.reasons) as the page reads it."""
    as_js = {
        "problem": {c: {"en": en, "ar": ar} for c, (en, ar) in sorted(problem_texts().items())},
        "centre": {c: {"en": en, "ar": ar} for c, (en, ar) in sorted(REASONS.items())},
    }
    # ASCII escapes: nothing in it can end the script or read as a line break (U+2028).
    return f"window.EDGE_CODES = {json.dumps(as_js, ensure_ascii=True)};\n".encode()


CODES_JS = codes_script()


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
async def asset(request: web.Request) -> web.StreamResponse:
    # Only the files shipped in edge/web/static: a name can never walk out of the directory.
    name = request.match_info["filename"]
    if name == "codes.js":  # built from the catalogue, not a file
        return web.Response(body=CODES_JS, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "max-age=86400"})  # fmt: skip
    if name not in ASSETS:
        raise errors.NotFound(f"no asset named {name[:60]!r}")
    # URLs carry ?v=<version>, so a day's caching never outlives an upgrade.
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "max-age=86400"})
