"""Admin routes (scope `admin`): replay now, the payments waiting for the centre, and the rejected
payments an operator must resolve (resolving one is edge.web.corrections')."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from aiohttp import web

import outbox
from edge import actions, errors, paymentquery, payments
from edge.node import NODE
from edge.web.audit import ADMIN_REJECTED, ADMIN_REPLAY, PAYMENT_LIST, audited
from edge.web.http import client_of, json_response
from sync.timefmt import iso_or_none

routes = web.RouteTableDef()
REJECTED_LIMIT = 200
REPLAY_WAIT_MAX_S = 30


def _wait_s(request: web.Request) -> int:
    """`?wait=S` (0-30, default 0): how long to wait for the centre's answer to the replay."""
    if set(request.query) - {"wait"} or len(request.query.getall("wait", [])) > 1:
        raise errors.InvalidQuery("the only parameter is wait (seconds, 0-30)")
    raw = request.query.get("wait", "0")
    if not raw.isascii() or not raw.isdigit() or int(raw) > REPLAY_WAIT_MAX_S:
        raise errors.InvalidQuery(f"wait must be whole seconds from 0 to {REPLAY_WAIT_MAX_S}")
    return int(raw)


@routes.post("/v1/admin/replay")
@audited(ADMIN_REPLAY)
async def replay_now(request: web.Request) -> web.Response:
    client_of(request, "admin")
    node = request.app[NODE]
    wait, link = _wait_s(request), node.link
    since = link.clock()
    if not node.replication.trigger():
        raise errors.NoCentre("centre.url is empty in this node's configuration")
    # Until an exchange with the centre ends after the trigger (or `wait` runs out), so the
    # caller learns whether the link carried it, not only that it was asked.
    deadline = asyncio.get_running_loop().time() + wait
    tried = False
    while not (tried := max(link.last_ok_at or -1, link.last_error_at or -1) >= since):
        if asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.05)
    pending = await node.db.read_slow(lambda c: outbox.stats(c).pending)
    shown = {"state": link.state, "tried": tried,
             "last_error": None if link.state == "up" else link.last_error}  # fmt: skip
    return json_response({"triggered": True, "pending": pending, "link": shown}, status=202)


@routes.get("/v1/admin/pending")
@audited(PAYMENT_LIST)
async def admin_pending(request: web.Request) -> web.Response:
    """Payments not yet delivered, newest first, keyset-paged like GET /v1/payments (whose
    scopes an admin token lacks): `limit` and `after` only, every channel."""
    client_of(request, "admin")
    node = request.app[NODE]
    for name, _ in request.query.items():
        if name not in ("limit", "after"):
            raise errors.InvalidQuery(f"{name[:40]}: unknown parameter; known: limit, after")
    query = [*request.query.items(), ("state", "pending_sync")]
    filters = paymentquery.parse(query, None)
    page = await node.db.read_slow(lambda c: paymentquery.search(c, filters))
    return json_response(page.as_dict())


def rejected(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    """The newest rejected entries with their payment (no subscriber name: the bill id is enough)."""
    entries = outbox.rejected(conn, limit)
    taken = payments.by_seq(conn, [e.seq for e in entries])
    acted = actions.on_payments(conn, [e.seq for e in entries])
    out = []
    for e in entries:
        p = taken.get(e.seq)
        resolved = actions.of_kind(acted.get(e.seq, []), "refund", "retarget")
        out.append({
            "seq": e.seq, "payment_id": e.id, "verdict": e.verdict, "reason": e.reason,
            "rejected_at": iso_or_none(e.settled_at), "attempts": e.attempts,
            "receipt": p.receipt if p else None, "bill_id": p.bill_id if p else None,
            "account": p.account if p else None, "amount": p.amount if p else None,
            "method": p.method if p else None, "cashier": p.cashier if p else None,
            "channel": p.channel if p else None,
            "accepted_at": iso_or_none(p.accepted_at) if p else None, "currency": "SYP",
            "kind": e.kind,
            "resolution": None if resolved is None else {
                "action": resolved.kind, "by": resolved.by, "at": iso_or_none(resolved.at),
                "reason": resolved.reason, "entry_id": resolved.entry_id,
            },
        })  # fmt: skip
    return out


@routes.get("/v1/admin/rejected")
@audited(ADMIN_REJECTED)
async def admin_rejected(request: web.Request) -> web.Response:
    client_of(request, "admin")
    node = request.app[NODE]

    def read(conn: sqlite3.Connection) -> tuple[int, int, list[dict[str, Any]]]:
        return outbox.stats(conn).rejected, actions.unresolved(conn), rejected(conn, REJECTED_LIMIT)

    total, unresolved, entries = await node.db.read_slow(read)
    return json_response({"total": total, "unresolved": unresolved, "entries": entries})
