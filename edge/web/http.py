"""What every route shares: the JSON response, the authenticated client, the body limit."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from edge import errors
from edge.node import NODE
from edge.tokens import Client

MAX_BODY = 64 * 1024
# The authenticated client, kept on the request for the metrics middleware (no second hash).
CLIENT = web.RequestKey("client", Client)


def client_of(request: web.Request, scope: str, *others: str) -> Client:
    """The authenticated client; 401 without a valid token, 403 without any of the scopes."""
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
    if client.scopes.isdisjoint((scope, *others)) and "admin" not in client.scopes:
        raise errors.Forbidden(f"this token lacks the '{scope}' scope")
    return client


def visible_channel(client: Client) -> str | None:
    """Whose payments this client may read: None for every channel (scope `audit`), else
    only those its own channel took (the channel is the token's name, payments.channel)."""
    return None if "audit" in client.scopes else client.name


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
