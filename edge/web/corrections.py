"""Correcting payments over HTTP: a supervisor's void and an admin's resolution of a rejection.

Both take a reason and an Idempotency-Key and go through the writer as one job each
(edge.corrections). Both routes are in the audit trail (`@audited`: every answer kept, the
payment's account once known); `made` is the one place a correction that was made passes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

import outbox
from edge import access, audit, corrections, errors, mirror, payments, text
from edge.node import NODE
from edge.tokens import Client
from edge.web.audit import ACCOUNT, ACTION, ADMIN_RESOLVE, PAYMENT_VOID, audited
from edge.web.cashier import read_json, reply_response
from edge.web.http import client_of, idempotency_key
from outbox.ids import ENTRY_ID

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
ACTIONS = {"refund": audit.ADMIN_REFUND, "retarget": audit.ADMIN_RETARGET}


def made(request: web.Request, done: corrections.Correction, reply: payments.Reply) -> None:
    """A void, refund or retarget answered: the trail learns whose payment it was (the
    decorator records the row), and a correction made now is logged."""
    doc = json.loads(reply.body)
    request[ACCOUNT] = str((doc if done.kind == "void" else doc["payment"])["account"])
    if reply.replayed:
        return
    log.info(
        "%s of payment %s by %s (entry %s, bill %s): %s",
        done.kind, done.payment_id, done.by, done.entry_id, done.bill_id or "-", done.reason,
    )  # fmt: skip


def _fields(doc: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise errors.InvalidBody("the body must be a JSON object")
    missing, extra = required - doc.keys(), doc.keys() - allowed
    if missing:
        raise errors.InvalidBody(f"missing field(s): {', '.join(sorted(missing))}")
    if extra:
        raise errors.InvalidBody(
            f"unknown field(s): {', '.join(sorted(str(k)[:40] for k in extra))}"
        )
    return doc


def _payment_id(request: web.Request) -> str:
    payment_id = request.match_info["payment_id"]
    if not ENTRY_ID.match(payment_id):
        raise errors.InvalidPaymentId(f"{payment_id[:60]!r} is not a payment id")
    return payment_id


async def _run(
    request: web.Request, client: Client, key: str, kind: str, reason: str,
    bill_id: str | None = None,
) -> web.Response:  # fmt: skip
    node = request.app[NODE]
    s = node.settings
    rules = corrections.Rules(
        s.node_id, s.node_governorate, s.receipt_code, s.tz, s.payments_void_window_h * 3600
    )
    call = corrections.prepare(
        s.node_id, kind, _payment_id(request), reason, client.name, key, node.clock(), bill_id
    )
    try:
        reply: payments.Reply = await node.db.write(lambda c: corrections.run(c, rules, call))
    except outbox.StorageError as exc:
        raise (errors.StorageFull if exc.full else errors.StorageFailed)(str(exc)) from exc
    made(request, call, reply)
    if not reply.replayed:
        node.outbox_changed.set()
    return reply_response(reply)


@routes.post("/v1/payments/{payment_id}/void")
@audited(PAYMENT_VOID)
async def void_payment(request: web.Request) -> web.Response:
    client = client_of(request, *access.VOID)
    key = idempotency_key(request)
    _payment_id(request)
    doc = _fields(await read_json(request), {"reason"}, {"reason"})
    reason = text.field("reason", doc["reason"], max_chars=corrections.REASON_MAX)
    return await _run(request, client, key, "void", reason)


@routes.post("/v1/admin/rejected/{payment_id}/resolve")
@audited(ADMIN_RESOLVE)
async def resolve_rejected(request: web.Request) -> web.Response:
    client = client_of(request, "admin")
    key = idempotency_key(request)
    _payment_id(request)
    doc = _fields(await read_json(request), {"action", "reason", "bill_id"}, {"action", "reason"})
    action = doc["action"]
    if not isinstance(action, str) or action not in ACTIONS:
        raise errors.InvalidField(f"action must be one of {', '.join(ACTIONS)}")
    request[ACTION] = ACTIONS[action]
    reason = text.field("reason", doc["reason"], max_chars=corrections.REASON_MAX)
    bill_id = doc.get("bill_id")
    if action == "refund" and bill_id is not None:
        raise errors.InvalidBody("bill_id is only for a retarget")
    if action == "retarget" and (not isinstance(bill_id, str) or not mirror.BILL_ID.match(bill_id)):
        raise errors.InvalidField("bill_id must be a bill id like DAM-2026-05-0100234567")
    return await _run(request, client, key, action, reason, bill_id)
