"""Correcting a payment after it was taken: a supervisor's void, an admin's refund or retarget.

Each is one writer job (BEGIN IMMEDIATE with the others of its commit): the idempotency
check, the checks on the payment, the action's outbox entry, its `payment_actions` row (a
retarget's new payment row too) and the stored answer commit together. A refusal raises an
ApiError inside the job, so its savepoint rolls back and nothing is written. Corrections
are rare, so they are plain jobs rather than a Batcher (DESIGN 5.12).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import msgpack

import outbox
from edge import actions, errors, mirror, payments
from sync import fines, receiptcode
from sync.timefmt import iso, local_day

REASON_MAX = 200  # characters of a void's or a resolution's reason (edge.text's rule)


@dataclass(frozen=True)
class Correction:
    """One correction to make, prepared off the writer (ids and times)."""

    kind: str  # void, refund or retarget
    payment_id: str
    reason: str
    by: str  # the token's name: who did it, and the scope of its Idempotency-Key
    key: str
    now: float
    entry_id: str
    bill_id: str | None = None  # retarget: the corrected bill

    def fingerprint(self) -> str:
        return outbox.fingerprint(
            f"POST {self.kind} {self.payment_id}", self.reason, self.bill_id or ""
        )


def prepare(
    node: str, kind: str, payment_id: str, reason: str, by: str, key: str, now: float,
    bill_id: str | None = None,
) -> Correction:  # fmt: skip
    return Correction(
        kind=kind, payment_id=payment_id, reason=reason, by=by, key=key, now=now,
        entry_id=outbox.new_entry_id(node, now=now), bill_id=bill_id,
    )  # fmt: skip


@dataclass(frozen=True)
class Rules:
    """What the node's settings decide about corrections."""

    node: str
    governorate: str
    receipt_code: str
    tz: tzinfo
    void_window_s: float


def run(conn: sqlite3.Connection, rules: Rules, c: Correction) -> payments.Reply:
    """The write job: a stored answer for a retried key, else check, write and answer 200."""
    fp = c.fingerprint()
    known = payments.stored_reply(conn, c.by, c.key, fp)
    if known is not None:
        return known
    entry = outbox.get(conn, c.payment_id)
    if entry is not None and entry.kind == "void" and c.kind == "void":
        raise errors.AlreadyVoided(f"{c.payment_id} is a void itself")
    taken = None if entry is None else payments.by_seq(conn, [entry.seq]).get(entry.seq)
    if entry is None or taken is None:
        raise errors.UnknownPayment(f"payment {c.payment_id} is not known to this node")
    found = actions.on_payments(conn, [entry.seq]).get(entry.seq, [])
    if c.kind == "void":
        _check_void(rules, c, entry, taken, found)
        body = _void(conn, c, entry, taken)
    else:
        _check_resolve(c, entry, found)
        body = _resolve(conn, rules, c, entry, taken)
    outbox.idempotency.remember(conn, c.by, c.key, fp, outbox.StoredResponse(200, body), now=c.now)
    return payments.Reply(200, body, replayed=False, payment_id=c.payment_id)


def _check_void(
    rules: Rules, c: Correction, entry: outbox.Entry, taken: payments.Taken,
    found: list[actions.Action],
) -> None:  # fmt: skip
    earlier = actions.of_kind(found, "void")
    if earlier is not None:
        raise errors.AlreadyVoided(f"{c.payment_id} was voided already ({earlier.entry_id})")
    if entry.state == outbox.REJECTED or actions.of_kind(found, "refund", "retarget"):
        raise errors.PaymentRejected(
            f"{c.payment_id} was rejected by the centre: resolve it (refund or retarget) instead"
        )
    credited = payments.payment_state(entry.state, entry.verdict, entry.reason) == "credited"
    if credited or taken.credit:  # all of it, or the part beyond what was due (protocol 3)
        raise errors.PaymentCredited(
            f"{c.payment_id} became the subscriber's credit at the centre: the centre corrects it"
        )
    if c.now - taken.accepted_at > rules.void_window_s:
        hours = rules.void_window_s / 3600
        raise errors.VoidWindowPassed(
            f"{c.payment_id} was taken at {iso(taken.accepted_at)}, more than {hours:g} h ago"
        )


def _check_resolve(c: Correction, entry: outbox.Entry, found: list[actions.Action]) -> None:
    earlier = actions.of_kind(found, "refund", "retarget")
    if earlier is not None:
        raise errors.AlreadyResolved(
            f"{c.payment_id} was resolved already ({earlier.kind}, {earlier.entry_id})"
        )
    if entry.state != outbox.REJECTED:
        raise errors.NotRejected(f"{c.payment_id} is not a rejected payment")
    void = actions.in_force_of(found)
    if void is not None:
        raise errors.AlreadyVoided(
            f"{c.payment_id} has a void ({void.entry_id}) the centre has not answered yet"
        )


def _append(conn: sqlite3.Connection, c: Correction, target: int, payload: dict[str, Any]) -> int:
    raw = msgpack.packb(payload, use_bin_type=True)
    (appended,) = outbox.append_many(conn, [(c.kind, raw, c.entry_id, c.now)])
    conn.execute(
        f"INSERT INTO {actions.TABLE} (seq, kind, target, reason, by, at) VALUES (?, ?, ?, ?, ?, ?)",
        (appended.seq, c.kind, target, c.reason, c.by, c.now),
    )
    return appended.seq


def _reference(c: Correction, taken: payments.Taken) -> dict[str, Any]:
    """The payload fields every correction carries about the payment it corrects."""
    return {
        "payment_id": c.payment_id, "bill_id": taken.bill_id, "account": taken.account,
        "amount": taken.amount, "reason": c.reason, "by": c.by, "at": iso(c.now),
    }  # fmt: skip


def _void(
    conn: sqlite3.Connection, c: Correction, entry: outbox.Entry, taken: payments.Taken
) -> bytes:
    _append(conn, c, entry.seq, _reference(c, taken))
    shown = payments.find(conn, c.payment_id)
    return json.dumps(shown, ensure_ascii=False).encode()


def _resolve(
    conn: sqlite3.Connection, rules: Rules, c: Correction, entry: outbox.Entry,
    taken: payments.Taken,
) -> bytes:  # fmt: skip
    if c.kind == "refund":
        _append(conn, c, entry.seq, _reference(c, taken))
        moved = None
    else:
        moved = _retarget(conn, rules, c, entry, taken)
    body = {
        "action": c.kind, "entry_id": c.entry_id,
        "payment": payments.find(conn, c.payment_id),
        "new_payment": None if moved is None else payments.find(conn, moved),
    }  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


def _retarget(
    conn: sqlite3.Connection, rules: Rules, c: Correction, entry: outbox.Entry,
    taken: payments.Taken,
) -> str:  # fmt: skip
    """A new payment of the same money on the corrected bill, linked to the original."""
    assert c.bill_id is not None
    if c.bill_id == taken.bill_id:
        raise errors.InvalidField("bill_id must be another bill than the rejected payment's")
    # The retarget is a payment on the corrected bill today: its late fine first (5.17).
    today = fines.local_day(c.now, rules.tz)
    bill = mirror.dues_by_id(conn, [c.bill_id], today).get(c.bill_id)
    if bill is None:
        raise errors.UnknownBill(f"bill {c.bill_id} is not in this node's mirror")
    if bill.due == 0:
        raise errors.BillAlreadyPaid(f"bill {bill.bill_id} has nothing left to pay")
    if taken.amount > bill.due:
        raise errors.AmountExceedsDue(
            f"the {taken.amount} piastres are more than the {bill.due} due on {bill.bill_id}"
        )
    to_fine, _ = fines.allocate(taken.amount, bill.fine)
    day = local_day(int(c.now), rules.tz)
    row = conn.execute("SELECT last FROM receipt_counters WHERE day = ?", (day,)).fetchone()
    n = (0 if row is None else int(row[0])) + 1
    code = rules.receipt_code or receiptcode.default_code(rules.node)
    receipt = receiptcode.receipt_number(rules.governorate, code, day, n)
    # A payment payload (PROTOCOL 5) of the original's money, channel and cashier, and the
    # original's id: the centre applies it like a payment, the chain keeps both.
    payload = {
        "payment_id": c.entry_id, "bill_id": bill.bill_id, "account": bill.account,
        "amount": taken.amount, "channel": taken.channel, "idempotency_key": c.key,
        "method": taken.method, "cashier": taken.cashier, "accepted_at": iso(c.now),
        "receipt": receipt, "original": c.payment_id, "reason": c.reason, "by": c.by,
        "fine": to_fine,
    }  # fmt: skip
    seq = _append(conn, c, entry.seq, payload)
    conn.execute(
        "INSERT INTO payments (seq, bill_id, account, amount, method, cashier, channel,"
        " receipt, accepted_at, fine) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, bill.bill_id, bill.account, taken.amount, taken.method, taken.cashier,
         taken.channel, receipt, c.now, to_fine),
    )  # fmt: skip
    conn.execute(
        "INSERT INTO receipt_counters (day, last) VALUES (?, ?)"
        " ON CONFLICT (day) DO UPDATE SET last = excluded.last",
        (day, n),
    )
    return c.entry_id
