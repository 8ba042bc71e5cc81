"""The cashier-facing API: bill inquiries and payments (DESIGN 6.3).

Inquiries read the mirror on the event loop (indexed lookups, microseconds); payments go
through the group-commit writer and are answered only after their commit.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from aiohttp import web

import outbox
from edge import access, errors, mirror, payments, text
from edge.node import NODE, Node
from edge.web import audit
from edge.web.http import MAX_BODY, client_of, idempotency_key, json_response
from outbox import crashpoints
from outbox.ids import ENTRY_ID
from sync import fines
from sync.timefmt import iso

PAYMENT_FIELDS = {"bill_id", "amount", "method", "cashier"}
MAX_AMOUNT = 10**12  # 10 billion SYP: far above any bill, far below SQLite's integer limit

routes = web.RouteTableDef()


def freshness(node: Node, state: mirror.MirrorState) -> tuple[str | None, bool]:
    if state.as_of is None:
        return None, True
    age = node.clock() - state.as_of
    return iso(state.as_of), age > node.settings.mirror_stale_after_s


BOOTSTRAP_RETRY_S = 5


def refuse_while_bootstrapping(node: Node) -> None:
    """Nothing is judged against a half-loaded mirror: an account whose bills are not in yet
    would read as unknown (404), or show part of what it owes."""
    progress = node.bootstrap()
    if progress is None:
        return
    source = (
        "the centre's snapshot" if node.settings.centre_url else "a bills file (edge import bills)"
    )
    of = "?" if progress["of"] is None else f"{progress['of']:,}"
    raise errors.MirrorBootstrapping(
        f"the mirror is loading from {source}: {progress['bills']:,} of {of} bills so far",
        headers={"Retry-After": str(BOOTSTRAP_RETRY_S)}, extra={"progress": progress},
    )  # fmt: skip


def bill_json(view: mirror.BillView) -> dict[str, Any]:
    return {
        "bill_id": view.bill_id,
        "cycle": view.cycle,
        "amount": view.amount,
        "paid": view.paid,
        "pending_local": view.pending_local,
        "fine": view.fine,
        "due": view.due,
        "due_date": view.due_date,
        "status": view.status,
        "kwh": view.kwh,
        "meter": view.meter,
        "version": view.version,
        "credit": view.credit,
    }


@routes.get("/v1/accounts/{account}/bills")
@audit.audited(audit.ACCOUNT_READ)
async def account_bills(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client_of(request, "inquire")
    refuse_while_bootstrapping(node)
    account = request.match_info["account"]
    if not mirror.ACCOUNT.match(account):
        raise errors.InvalidAccount(f"{account[:40]!r} is not an account number")
    today = fines.local_day(node.clock(), node.settings.tz)
    published = node.fine_rules()
    found = node.db.read(lambda c: mirror.account_json(c, account, today, published))
    if found is None:
        raise errors.UnknownAccount(f"no bills for account {account} in this node's mirror")
    as_of, stale = freshness(node, node.mirror_state())
    # The bills, subscriber and governorate are UTF-8 JSON already (built by SQLite).
    body = b"".join((
        b'{"account":"', account.encode(), b'","governorate":', found.governorate,
        b',"subscriber":', found.subscriber, b',"bills":', found.bills,
        b',"total_due":', str(found.total_due).encode(), b',"credit":', str(found.credit).encode(),
        b',"currency":"SYP","as_of":',
        b"null" if as_of is None else b'"' + as_of.encode() + b'"',  # ISO: nothing to escape
        b',"stale":', b"true" if stale else b"false", b"}",
    ))  # fmt: skip
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@routes.get("/v1/bills/{bill_id}")
@audit.audited(audit.BILL_READ)
async def one_bill(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client_of(request, "inquire")
    refuse_while_bootstrapping(node)
    bill_id = request.match_info["bill_id"]
    if not mirror.BILL_ID.match(bill_id):
        raise errors.InvalidBillId(f"{bill_id[:60]!r} is not a bill id like DAM-2026-05-0100234567")
    today = fines.local_day(node.clock(), node.settings.tz)
    published = node.fine_rules()
    view = node.db.read(lambda c: mirror.bill(c, bill_id, today, published))
    if view is None:
        raise errors.UnknownBill(f"bill {bill_id} is not in this node's mirror")
    as_of, stale = freshness(node, node.mirror_state())
    body = bill_json(view) | {
        "account": view.account,
        "governorate": view.governorate,
        "subscriber": {"name": view.name, "address": view.address},
        "currency": "SYP",
        "as_of": as_of,
        "stale": stale,
    }
    return json_response(body)


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise errors.UnsupportedMediaType(f"got {request.content_type or 'no content type'}")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise errors.BodyTooLarge(f"{request.content_length} bytes is over the 64 KiB limit")
    try:
        raw = await request.read()
    except ConnectionResetError:
        raise errors.BodyIncomplete("the connection closed before the body was complete") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise errors.MalformedJson("the body could not be parsed as JSON") from None


def parse_payment(doc: Any) -> payments.PaymentRequest:
    if not isinstance(doc, dict):
        raise errors.InvalidBody("the body must be a JSON object")
    missing, extra = PAYMENT_FIELDS - doc.keys(), doc.keys() - PAYMENT_FIELDS
    if missing:
        raise errors.InvalidBody(f"missing field(s): {', '.join(sorted(missing))}")
    if extra:
        raise errors.InvalidBody(
            f"unknown field(s): {', '.join(sorted(str(k)[:40] for k in extra))}"
        )
    bill_id, amount, method, cashier = doc["bill_id"], doc["amount"], doc["method"], doc["cashier"]
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_AMOUNT:
        raise errors.InvalidAmount("amount must be a positive whole number of piastres")
    if not isinstance(bill_id, str) or not mirror.BILL_ID.match(bill_id):
        raise errors.InvalidField("bill_id must be a bill id like DAM-2026-05-0100234567")
    if method not in payments.METHODS:
        raise errors.InvalidField(f"method must be one of {', '.join(payments.METHODS)}")
    cashier = text.field("cashier", cashier, max_chars=payments.CASHIER_MAX)
    return payments.PaymentRequest(bill_id=bill_id, amount=amount, method=method, cashier=cashier)


def disk_low(node: Node) -> bool:
    """True below the free-space floor: refusing money there keeps the WAL from wedging."""
    floor = node.settings.storage_min_free_mb * 1024 * 1024
    return bool(floor) and shutil.disk_usage(node.settings.node_data_dir).free < floor


@routes.post("/v1/payments")
async def create_payment(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client = client_of(request, "pay")
    key = idempotency_key(request)
    req = parse_payment(await read_json(request))
    booting = node.bootstrap() is not None
    if booting or node.shutting_down or disk_low(node):
        # A retry of a payment already taken still gets its receipt; new money is refused.
        stored = stored_reply(node, client.name, key, req)
        if stored is not None:
            return reply_response(stored)
        refuse_while_bootstrapping(node)
        if node.shutting_down:
            raise errors.NodeShuttingDown(
                node.shutdown_reason or "the node is stopping",
                headers={"Retry-After": str(node.settings.power_retry_after_s)},
            )
        if disk_low(node):
            raise errors.StorageFull(
                f"less than {node.settings.storage_min_free_mb} MB free on the data disk"
            )
    settings = node.settings
    call = payments.prepare(
        settings.node_id, client.name, key, req, node.clock(), settings.tz,
        online=node.link.state == "up",
    )  # fmt: skip
    try:
        reply: payments.Reply = await node.db.write_batched(node.acceptor, call)
    except outbox.StorageError as exc:
        raise (errors.StorageFull if exc.full else errors.StorageFailed)(str(exc)) from exc
    crashpoints.reached("after_commit")
    if not reply.replayed:
        node.outbox_changed.set()
    return reply_response(reply)


def reply_response(reply: payments.Reply) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
    if reply.status == 201:
        payment_id = reply.payment_id or json.loads(reply.body)["payment_id"]
        headers["Location"] = f"/v1/payments/{payment_id}"
    return web.Response(
        status=reply.status, body=reply.body, content_type="application/json", charset="utf-8",
        headers=headers,
    )  # fmt: skip


def stored_reply(
    node: Node, client: str, key: str, req: payments.PaymentRequest
) -> payments.Reply | None:
    return node.db.read(lambda c: payments.stored_reply(c, client, key, req.fingerprint()))


def readable_payment(request: web.Request) -> dict[str, Any]:
    """The payment named in the path, as `payments.find` shows it, if this client may read it.

    The one lookup and permission path of every route that shows a payment (the payment,
    its printable receipt): a change of policy here applies to all of them.
    """
    node = request.app[NODE]
    client = client_of(request, *access.READ_PAYMENTS)
    payment_id = request.match_info["payment_id"]
    if not ENTRY_ID.match(payment_id):
        raise errors.InvalidPaymentId(f"{payment_id[:60]!r} is not a payment id")
    found = node.db.read(lambda c: payments.find(c, payment_id))
    # Another channel's payment answers exactly like an unknown one: no oracle for ids.
    if found is None or not access.may_read_payment(client, found["channel"]):
        raise errors.UnknownPayment(f"payment {payment_id} is not known to this node")
    request[audit.ACCOUNT] = found["account"]
    return found


@routes.get("/v1/payments/{payment_id}")
@audit.audited(audit.PAYMENT_READ)
async def get_payment(request: web.Request) -> web.Response:
    return json_response(readable_payment(request))
