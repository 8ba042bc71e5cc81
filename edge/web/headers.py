"""Headers every response carries: no sniffing, no server version, no caching of the API.

Set as the response is prepared, so they reach problems, static files and /metrics alike.
"""

from __future__ import annotations

from aiohttp import web

SERVER = "edge"  # aiohttp would say "Python/3.11 aiohttp/3.x": a scanner's first clue
API_PREFIX = "/v1/"


async def secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path.startswith(API_PREFIX):
        # Bills carry names and addresses: no browser, proxy or disk cache may keep them.
        response.headers["Cache-Control"] = "no-store"


def install(app: web.Application) -> None:
    app.on_response_prepare.append(secure)
