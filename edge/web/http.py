"""What every route shares: the JSON response, the authenticated client, the body limit."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from edge import access, errors
from edge.node import NODE
from edge.tokens import Client

MAX_BODY = 64 * 1024
# The authenticated client, kept on the request for the metrics middleware (no second hash).
CLIENT = web.RequestKey("client", Client)


def client_of(request: web.Request, *scopes: str) -> Client:
    """The authenticated client; 401 without a valid token, 403 without one of `scopes`.

    No scope implies another (edge/access.py): `admin` alone neither pays nor inquires.
    """
    node = request.app[NODE]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized(
            "send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    client = node.tokens.identify(token.strip())
    if client is None:
        raise errors.Unauthorized(
            "the token is not known to this node", headers={"WWW-Authenticate": "Bearer"}
        )
    request[CLIENT] = client
    node.last_used.seen(client.name)
    if not access.has_any(client, scopes):
        raise errors.Forbidden(f"this token needs the {' or '.join(map(repr, scopes))} scope")
    return client


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )
