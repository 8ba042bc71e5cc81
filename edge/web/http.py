"""What every route shares: the JSON response, the authenticated client, the body limit."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from edge import access, errors
from edge.node import NODE
from edge.tokens import Client
from edge.web.limits import LIMITER, address_of

MAX_BODY = 64 * 1024
_KEY = re.compile(r"^[\x20-\x7e]{1,255}\Z")
# The authenticated client, kept on the request for the metrics middleware (no second hash).
CLIENT = web.RequestKey("client", Client)


def client_of(request: web.Request, *scopes: str) -> Client:
    """The authenticated client; 401 without a valid token, 403 without one of `scopes`, 429
    when its address is backing off (DESIGN 5.7) or the client is over its rate.

    No scope implies another (edge/access.py): `admin` alone neither pays nor inquires.
    """
    node, limiter = request.app[NODE], request.app[LIMITER]
    address = address_of(request)
    limiter.check_auth(address)  # before the token is looked at: a guess must learn nothing
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        limiter.failed_auth(address)
        raise errors.Unauthorized(
            "send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    client = node.tokens.identify(token.strip())
    if client is None:
        limiter.failed_auth(address)
        raise errors.Unauthorized(
            "the token is not known to this node", headers={"WWW-Authenticate": "Bearer"}
        )
    request[CLIENT] = client
    node.last_used.seen(client.name)
    # Taking money, a reading or a request has its own bucket; every read (a payment's too)
    # draws on the inquiries'.
    limiter.charge(client.name, "pay" if scopes and set(scopes) <= access.WRITES else "inquire")
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


def idempotency_key(request: web.Request) -> str:
    """The request's Idempotency-Key (required on every route that writes money or its fate)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise errors.IdempotencyKeyRequired("send an Idempotency-Key header, reused on retries")
    if not _KEY.match(key):
        raise errors.InvalidIdempotencyKey()
    return key
