"""Taking a payment: one write job that checks, appends to the outbox and remembers the reply.

The job runs inside the writer's group-commit transaction: idempotency check, due amount as
the node sees it, outbox entry, payment row and stored response all commit together, so the
201 is sent only once the payment is durable and the due amount already shows it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgpack

import outbox
from edge import errors, mirror

METHODS = ("cash", "card", "transfer")
PAYMENT_STATES = {"applied": "synced", "duplicate": "synced", "credited": "credited"}


@dataclass(frozen=True)
class PaymentRequest:
    bill_id: str
    amount: int
    method: str
    cashier: str

    def fingerprint(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return outbox.fingerprint("POST /v1/payments", canonical)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    replayed: bool


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def next_receipt(conn: sqlite3.Connection, governorate: str, day: str) -> str:
    """`{GOV}-{YYYYMMDD}-{n}`: n counts this node's receipts of that local day."""
    row = conn.execute(
        "INSERT INTO receipt_counters (day, last) VALUES (?, 1)"
        " ON CONFLICT (day) DO UPDATE SET last = last + 1 RETURNING last",
        (day,),
    ).fetchone()
    return f"{governorate}-{day}-{int(row[0]):06d}"


def accept(
    conn: sqlite3.Connection,
    *,
    node: str,
    governorate: str,
    channel: str,
    key: str,
    request: PaymentRequest,
    now: float,
    tz: tzinfo,
) -> Reply:
    """Check and record one payment; raises an ApiError (nothing written) when refused."""
    fp = request.fingerprint()
    try:
        stored = outbox.idempotency.lookup(conn, channel, key, fp)
    except outbox.IdempotencyKeyReused as exc:
        raise errors.IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different body"
        ) from exc
    if stored is not None:
        return Reply(stored.status, stored.body, replayed=True)

    bill = mirror.bill(conn, request.bill_id)
    if bill is None:
        raise errors.UnknownBill(f"bill {request.bill_id} is not in this node's mirror")
    if bill.due == 0:
        raise errors.BillAlreadyPaid(f"bill {bill.bill_id} has nothing left to pay")
    if request.amount > bill.due:
        raise errors.AmountExceedsDue(
            f"amount {request.amount} is more than the {bill.due} piastres due on {bill.bill_id}"
        )

    payment_id = outbox.new_entry_id(node, now=now)
    receipt = next_receipt(conn, governorate, datetime.fromtimestamp(now, tz).strftime("%Y%m%d"))
    accepted_at = iso(now)
    payload: dict[str, Any] = {
        "payment_id": payment_id,
        "bill_id": bill.bill_id,
        "account": bill.account,
        "amount": request.amount,
        "channel": channel,
        "idempotency_key": key,
        "method": request.method,
        "cashier": request.cashier,
        "accepted_at": accepted_at,
        "receipt": receipt,
    }
    entry = outbox.append(
        conn, node, "payment", msgpack.packb(payload, use_bin_type=True),
        entry_id=payment_id, now=now,
    )  # fmt: skip
    conn.execute(
        "INSERT INTO payments (payment_id, seq, bill_id, account, amount, method, cashier,"
        " channel, receipt, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (payment_id, entry.seq, bill.bill_id, bill.account, request.amount, request.method,
         request.cashier, channel, receipt, now),
    )  # fmt: skip
    body = {
        "payment_id": payment_id,
        "receipt": receipt,
        "bill_id": bill.bill_id,
        "account": bill.account,
        "amount": request.amount,
        "due_after": bill.due - request.amount,
        "currency": "SYP",
        "method": request.method,
        "state": "pending_sync",
        "accepted_at": accepted_at,
    }
    raw = json.dumps(body, ensure_ascii=False).encode()
    outbox.idempotency.remember(conn, channel, key, fp, outbox.StoredResponse(201, raw), now=now)
    return Reply(201, raw, replayed=False)


def payment_state(state: str, verdict: str | None) -> str:
    if state == "pending":
        return "pending_sync"
    if state == "rejected":
        return "rejected"
    return PAYMENT_STATES.get(verdict or "", "synced")


def find(conn: sqlite3.Connection, payment_id: str) -> dict[str, Any] | None:
    """A payment as the API shows it, with its replay state and the centre's verdict."""
    row = conn.execute(
        "SELECT p.payment_id, p.receipt, p.bill_id, p.account, p.amount, p.method, p.cashier,"
        " p.channel, p.accepted_at, o.seq, o.state, o.verdict, o.reason, o.version,"
        " o.attempts, o.last_error, o.settled_at"
        " FROM payments p JOIN outbox_entries o ON o.seq = p.seq WHERE p.payment_id = ?",
        (payment_id,),
    ).fetchone()
    if row is None:
        return None
    (pid, receipt, bill_id, account, amount, method, cashier, channel, accepted_at, seq,
     state, verdict, reason, version, attempts, last_error, settled_at) = row  # fmt: skip
    return {
        "payment_id": pid,
        "receipt": receipt,
        "bill_id": bill_id,
        "account": account,
        "amount": amount,
        "currency": "SYP",
        "method": method,
        "cashier": cashier,
        "channel": channel,
        "accepted_at": iso(accepted_at),
        "seq": seq,
        "state": payment_state(state, verdict),
        "verdict": None
        if verdict is None
        else {"verdict": verdict, "reason": reason, "version": version, "at": iso(settled_at)},
        "attempts": attempts,
        "last_error": last_error,
    }
