"""Power routes: the stored power events, by id or time (no token, no personal data)."""

from __future__ import annotations

from aiohttp import web

from edge import errors
from edge.node import NODE
from edge.power import history
from edge.web.http import json_response
from sync.timefmt import parse_iso

routes = web.RouteTableDef()
MAX_EVENT_ID = 2**63 - 1


def parse_since(value: str | None) -> tuple[int | None, float | None]:
    """(event id, time) from `since`: digits are an id, anything else an ISO 8601 time."""
    if value is None:
        return None, None
    if value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_EVENT_ID:
        return int(value), None
    try:
        return None, parse_iso(value)
    except ValueError:
        raise errors.InvalidQuery(
            "since must be an event id or an ISO 8601 time such as 2026-06-01T00:00:00Z"
        ) from None


@routes.get("/v1/power/events")
async def power_events(request: web.Request) -> web.Response:
    node = request.app[NODE]
    since_id, since_at = parse_since(request.query.get("since"))
    found = node.db.read(lambda c: history.events(c, since_id=since_id, since_at=since_at))
    return json_response({"events": found})
