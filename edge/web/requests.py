"""Subscribers' requests over HTTP (DESIGN 5.16): `POST /v1/requests` (scope `request`),
`GET /v1/requests?account=` and `GET /v1/requests/{request_id}` (`request` or `audit`).

The reads show a subscriber's text and phone, so they are in the audit trail (`@audited`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

import outbox
from edge import access, audit, errors, mirror, requests, text
from edge.node import NODE
from edge.payments import Reply
from edge.web.audit import ACCOUNT, Audited, audited
from edge.web.cashier import MAX_AMOUNT, read_json
from edge.web.http import client_of, idempotency_key, json_response
from edge.web.readings import account_field, fields
from outbox.ids import ENTRY_ID

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
FIELDS = {"kind", "account", "bill_id", "text", "contact_phone", "amount"}
REQUIRED = {"kind", "account", "text"}
READERS = (*access.REQUEST, "audit")  # who may read requests: every channel's, like `audit`
NUMBER = re.compile(r"^[A-Z]{3}-[A-Z0-9]{1,8}-R[0-9]{8}-[0-9]{4,6}\Z")
REQUEST_ID = re.compile(f"(?:{ENTRY_ID.pattern})|(?:{NUMBER.pattern})")  # the id or its number
REQUEST_READ = Audited(audit.REQUEST_READ, "request_id", REQUEST_ID, told=True)
REQUEST_LIST = Audited(audit.REQUEST_LIST, told=True)


def parse(doc: Any) -> requests.Filed:
    doc = fields(doc, FIELDS, REQUIRED)
    kind = doc["kind"]
    if not isinstance(kind, str) or kind not in requests.KINDS:
        raise errors.InvalidField(f"kind must be one of {', '.join(requests.KINDS)}")
    account = account_field(doc["account"])
    bill_id = doc.get("bill_id")
    if bill_id is not None and (not isinstance(bill_id, str) or not mirror.BILL_ID.match(bill_id)):
        raise errors.InvalidField("bill_id must be a bill id like DAM-2026-05-0100234567")
    body = doc["text"]
    # The one free-text rule, with line breaks allowed: a complaint runs over lines.
    text.field("text", body.replace("\n", " ") if isinstance(body, str) else body,
               max_chars=requests.TEXT_MAX)  # fmt: skip
    phone = doc.get("contact_phone")
    if phone is not None and (not isinstance(phone, str) or not requests.PHONE.match(phone)):
        raise errors.InvalidField("contact_phone must be 6-15 digits, with an optional leading +")
    amount = doc.get("amount")
    if kind == "complaint":
        if amount is not None:
            raise errors.InvalidField("a complaint has no amount")
    else:
        if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
            raise errors.InvalidAmount(
                f"an {kind} request needs amount: a positive whole number of piastres"
            )
        if bill_id is None:
            raise errors.InvalidField(f"an {kind} request needs the bill_id it is about")
    return requests.Filed(kind, account, bill_id, body, phone, amount)


@routes.post("/v1/requests")
async def create_request(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client = client_of(request, *access.REQUEST)
    key = idempotency_key(request)
    filed = parse(await read_json(request))
    if node.shutting_down:
        raise errors.NodeShuttingDown(
            node.shutdown_reason or "the node is stopping",
            headers={"Retry-After": str(node.settings.power_retry_after_s)},
        )
    s = node.settings
    now = node.clock()
    rules = requests.Rules(s.node_id, s.node_governorate, s.receipt_code, s.tz)
    call = requests.RequestCall(
        client.name, key, filed, now, outbox.new_entry_id(s.node_id, now=now)
    )
    try:
        reply: Reply = await node.db.write(lambda c: requests.take(c, rules, call))
    except outbox.StorageError as exc:
        raise (errors.StorageFull if exc.full else errors.StorageFailed)(str(exc)) from exc
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
    if not reply.replayed:
        node.outbox_changed.set()
        log.info("%s request %s by %s", filed.kind, call.entry_id, client.name)
        headers["Location"] = f"/v1/requests/{call.entry_id}"
    return web.Response(
        status=reply.status, body=reply.body, content_type="application/json", charset="utf-8",
        headers=headers,
    )  # fmt: skip


@routes.get("/v1/requests")
@audited(REQUEST_LIST)
async def list_requests(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client_of(request, *READERS)
    unknown = set(request.query) - {"account"}
    if unknown:
        raise errors.InvalidQuery(f"unknown parameter(s): {', '.join(sorted(unknown))[:100]}")
    account = request.query.get("account")
    if account is None or not mirror.ACCOUNT.match(account):
        raise errors.InvalidQuery("account is required: 1-20 digits")
    request[ACCOUNT] = account
    found = node.db.read(lambda c: requests.of_account(c, account))
    return json_response({"account": account, "items": found})


@routes.get("/v1/requests/{request_id}")
@audited(REQUEST_READ)
async def get_request(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client_of(request, *READERS)
    request_id = request.match_info["request_id"]
    if not REQUEST_ID.match(request_id):
        raise errors.InvalidRequestId(f"{request_id[:60]!r} is not a request id or number")
    found = node.db.read(lambda c: requests.find(c, request_id))
    if found is None:
        raise errors.UnknownRequest(f"request {request_id} is not known to this node")
    request[ACCOUNT] = found["account"]
    return json_response(found)
