"""Taking payments: the write job that checks, appends to the outbox and remembers replies.

It runs inside the writer's group-commit transaction over every payment of that commit:
idempotency check, due amount as the node sees it, outbox entry, payment row and stored
response commit together, so a 201 is sent only once the payment is durable and the due
amount already shows it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, tzinfo
from typing import Any, NamedTuple

import msgpack

import outbox
from edge import actions, credits, errors, fines, mirror, offline
from sync import receiptcode
from sync.fines import allocate
from sync.timefmt import iso, local_day

METHODS = ("cash", "card", "transfer")
OFF = offline.Limits()  # no offline limits (tests and tools that call `accept` directly)
REUSED = "this Idempotency-Key was already used with a different body"
PAYMENT_STATES = {"applied": "synced", "duplicate": "synced", "credited": "credited"}
# What payment_state can say: the replay states, then what an action in force makes it.
STATES = ("pending_sync", "synced", "credited", "rejected", "voided", "refunded", "retargeted")
CASHIER_MAX = 64  # characters of a cashier's name (edge.text's rule for free text)


@dataclass(frozen=True)
class PaymentRequest:
    bill_id: str
    amount: int
    method: str
    cashier: str

    def fingerprint(self) -> str:
        return outbox.fingerprint(
            "POST /v1/payments", self.bill_id, str(self.amount), self.method, self.cashier
        )


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    replayed: bool
    payment_id: str = ""  # set on a fresh 201 (a replayed one has it only in its body)


def stored_reply(conn: sqlite3.Connection, client: str, key: str, fingerprint: str) -> Reply | None:
    """The answer stored for `client`'s `key` (a retry gets it again), None for a new key;
    422 when the key was used with another body. Every idempotent write asks this first."""
    try:
        found = outbox.idempotency.lookup(conn, client, key, fingerprint)
    except outbox.IdempotencyKeyReused:
        raise errors.IdempotencyKeyReused(REUSED) from None
    return None if found is None else Reply(found.status, found.body, replayed=True)


@dataclass(frozen=True)
class PaymentCall:
    """One payment to take, with everything that needs no database prepared off the writer."""

    channel: str
    key: str
    request: PaymentRequest
    now: float
    fingerprint: str
    payment_id: str
    day: str
    accepted_at: str
    online: bool = False  # the link to the centre was up (offline.check: max_payment)


def prepare(
    node: str, channel: str, key: str, request: PaymentRequest, now: float, tz: tzinfo,
    *, online: bool = False,
) -> PaymentCall:  # fmt: skip
    return PaymentCall(
        channel=channel, key=key, request=request, now=now, fingerprint=request.fingerprint(),
        payment_id=outbox.new_entry_id(node, now=now),
        day=local_day(int(now), tz), accepted_at=iso(now), online=online,
    )  # fmt: skip


@dataclass(frozen=True)
class Acceptor(outbox.Batcher[PaymentCall, Reply]):
    """The write job for payments, run by the writer over every payment of one commit at once.

    Reads (idempotency records, bills with their overlay, receipt counters, chain head) are
    one query each for the whole group, checks run in Python in arrival order (so two
    payments on one bill in one commit still cannot overpay it), and writes are one
    executemany per table. A refused payment writes nothing; it gets its ApiError back.
    The offline limits are read once too and count each payment accepted before the next.
    """

    node: str
    governorate: str
    receipt_code: str = ""  # empty: the node id's default code (sync.receiptcode.default_code)
    limits: offline.Limits = OFF

    @property
    def code(self) -> str:
        return self.receipt_code or receiptcode.default_code(self.node)

    def __call__(
        self, conn: sqlite3.Connection, calls: list[PaymentCall]
    ) -> list[Reply | errors.ApiError]:
        stored = outbox.idempotency.lookup_many(conn, [(c.channel, c.key) for c in calls])
        # Each payment's fine is of its own local day: one read per day in the group (one,
        # but for a group that spans local midnight).
        bills = {
            day: mirror.dues_by_id(
                conn, [c.request.bill_id for c in calls if c.day == day], fine_day(day)
            )
            for day in dict.fromkeys(c.day for c in calls)
        }
        days = list(dict.fromkeys(c.day for c in calls))
        counters = dict(
            outbox.select_in(
                conn, "SELECT day, last FROM receipt_counters WHERE day IN ({marks})", days
            )
        )
        taken: dict[str, int] = {}  # bill_id -> amount accepted earlier in this group
        results: list[Reply | errors.ApiError] = []
        accepted: list[tuple[PaymentCall, mirror.Due, str, bytes, int]] = []
        usage = offline.read(conn) if self.limits.on else None
        for call in calls:
            result = self._one(call, stored, bills, taken, counters, accepted, usage)
            if isinstance(result, Reply) and not result.replayed and usage is not None:
                usage = usage.taken(call.request.amount, call.now)
            results.append(result)
        if accepted:
            self._write(conn, accepted, counters)
        return results

    def _one(
        self,
        call: PaymentCall,
        stored: dict[tuple[str, str], tuple[str, outbox.StoredResponse]],
        bills: dict[str, dict[str, mirror.Due]],
        taken: dict[str, int],
        counters: dict[str, int],
        accepted: list[tuple[PaymentCall, mirror.Due, str, bytes, int]],
        usage: offline.Usage | None,
    ) -> Reply | errors.ApiError:
        known = stored.get((call.channel, call.key))
        if known is not None:
            if known[0] != call.fingerprint:
                return errors.IdempotencyKeyReused(REUSED)
            return Reply(known[1].status, known[1].body, replayed=True)
        req = call.request
        bill = bills[call.day].get(req.bill_id)
        if bill is None:
            return errors.UnknownBill(f"bill {req.bill_id} is not in this node's mirror")
        before = taken.get(bill.bill_id, 0)
        due = max(0, bill.due - before)
        if due == 0:
            return errors.BillAlreadyPaid(f"bill {bill.bill_id} has nothing left to pay")
        if req.amount > due:
            return errors.AmountExceedsDue(
                f"amount {req.amount} is more than the {due} piastres due on {bill.bill_id}"
            )
        if usage is not None:
            # New money only: a retry of a payment taken already got its stored reply above.
            breach = offline.check(self.limits, usage, req.amount, call.now, call.online)
            if breach is not None:
                return breach.error()
        # The fine first (DESIGN 5.17): money taken earlier in this group paid it first too.
        to_fine, _ = allocate(req.amount, bill.fine - before)
        taken[bill.bill_id] = before + req.amount
        counters[call.day] = counters.get(call.day, 0) + 1
        # The node's code keeps receipts unique in the governorate; the per-day counter is the
        # one older receipts used, so a renumbered series never meets an old number.
        receipt = receiptcode.receipt_number(
            self.governorate, self.code, call.day, counters[call.day]
        )
        # Formatted, not json.dumps'd (a fifth of this job's Python time): every string here
        # is checked already (ids, receipt, method, ISO time); test_overlay holds it valid JSON.
        raw = (
            f'{{"payment_id":"{call.payment_id}","receipt":"{receipt}",'
            f'"bill_id":"{bill.bill_id}","account":"{bill.account}","amount":{req.amount},'
            f'"due_after":{due - req.amount},"fine":{to_fine},"currency":"SYP",'
            f'"method":"{req.method}",'
            f'"state":"pending_sync","accepted_at":"{call.accepted_at}"}}'
        ).encode()
        reply = Reply(201, raw, replayed=False, payment_id=call.payment_id)
        # A later call in this group with the same key replays this one.
        stored[(call.channel, call.key)] = (call.fingerprint, outbox.StoredResponse(201, raw))
        accepted.append((call, bill, receipt, raw, to_fine))
        return reply

    def _write(
        self,
        conn: sqlite3.Connection,
        accepted: list[tuple[PaymentCall, mirror.Due, str, bytes, int]],
        counters: dict[str, int],
    ) -> None:
        specs = []
        for call, bill, receipt, _, to_fine in accepted:
            payload = {
                "payment_id": call.payment_id, "bill_id": bill.bill_id, "account": bill.account,
                "amount": call.request.amount, "channel": call.channel,
                "idempotency_key": call.key, "method": call.request.method,
                "cashier": call.request.cashier, "accepted_at": call.accepted_at,
                "receipt": receipt, "fine": to_fine,
            }  # fmt: skip
            specs.append(
                ("payment", msgpack.packb(payload, use_bin_type=True), call.payment_id, call.now)
            )
        entries = outbox.append_many(conn, specs)
        # Multi-row VALUES (outbox.insert_rows), as the outbox's own rows: one SQLite step, so
        # one GIL hand-off with the event loop, per statement rather than per payment.
        outbox.insert_rows(
            conn,
            "INSERT INTO payments (seq, bill_id, account, amount, method, cashier, channel,"
            " receipt, accepted_at, fine) VALUES ",
            [
                (entry.seq, bill.bill_id, bill.account, call.request.amount,
                 call.request.method, call.request.cashier, call.channel, receipt, call.now,
                 to_fine)
                for entry, (call, bill, receipt, _, to_fine) in zip(entries, accepted, strict=True)
            ],
        )  # fmt: skip
        outbox.insert_rows(
            conn, "INSERT INTO receipt_counters (day, last) VALUES ", list(counters.items()),
            tail=" ON CONFLICT (day) DO UPDATE SET last = excluded.last",
        )  # fmt: skip
        outbox.idempotency.remember_many(
            conn,
            [(call.channel, call.key, call.fingerprint, outbox.StoredResponse(201, raw))
             for call, _, _, raw, _ in accepted],
            now=accepted[0][0].now,
        )  # fmt: skip


def fine_day(day: str) -> date:
    """The local day of a receipt's `YYYYMMDD` (PaymentCall.day), the day its fine is of."""
    return date(int(day[:4]), int(day[4:6]), int(day[6:]))


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
    receipt_code: str = "",
) -> Reply:
    """Check and record one payment; raises an ApiError (nothing written) when refused."""
    call = prepare(node, channel, key, request, now, tz)
    result = Acceptor(node, governorate, receipt_code)(conn, [call])[0]
    if isinstance(result, errors.ApiError):
        raise result
    return result


# SQL over the outbox's guaranteed columns (alias `o`) for each state payment_state gives;
# literals, so the partial indexes of edge.0007 serve them. tests/unit/test_payment_query.py
# holds the two in step. An action in force (edge/actions.py) decides before the replay state.
_CREDITED = "(o.verdict = 'credited' OR (o.verdict = 'duplicate' AND o.reason = 'credited'))"
_ACTED = actions.acted_on("o.seq")
_NOT_ACTED = f"{_ACTED} IS NULL"
STATE_SQL = {
    "pending_sync": f"o.state = 'pending' AND {_NOT_ACTED}",
    "rejected": f"o.state = 'rejected' AND {_NOT_ACTED}",
    "credited": f"o.state = 'delivered' AND {_CREDITED} AND {_NOT_ACTED}",
    # IS, not =: a NULL verdict or reason is still "not credited" (synced).
    "synced": "o.state = 'delivered' AND NOT (o.verdict IS 'credited'"
    f" OR (o.verdict IS 'duplicate' AND o.reason IS 'credited')) AND {_NOT_ACTED}",
    **{state: f"{_ACTED} = '{kind}'" for kind, state in actions.STATE_OF.items()},
}


def payment_state(
    state: str, verdict: str | None, reason: str | None, acted: str | None = None
) -> str:
    """The state shown; `acted` is the kind of the action in force on the payment, if any."""
    if acted is not None:
        return actions.STATE_OF[acted]
    if state == "pending":
        return "pending_sync"
    if state == "rejected":
        return "rejected"
    if verdict == "duplicate":
        # The centre repeats its first verdict in `reason` (sync/PROTOCOL.md).
        verdict = reason
    return PAYMENT_STATES.get(verdict or "", "synced")


class Taken(NamedTuple):
    """A payment row as stored beside its outbox entry (same seq)."""

    seq: int
    receipt: str
    bill_id: str
    account: str
    amount: int
    method: str
    cashier: str
    channel: str
    accepted_at: float
    credit: int | None  # what the centre's verdict credited of it (edge/credits.py)
    fine: int  # what the node took of it for the bill's late fine (DESIGN 5.17)
    fine_centre: int | None  # what the centre's verdict counted to the fine (edge/fines.py)


_TAKEN = (
    "SELECT p.seq, p.receipt, p.bill_id, p.account, p.amount, p.method, p.cashier, p.channel,"
    " p.accepted_at, c.amount, p.fine, f.amount FROM payments p"
    " LEFT JOIN payment_credits c ON c.seq = p.seq LEFT JOIN payment_fines f ON f.seq = p.seq"
)


def by_seq(conn: sqlite3.Connection, seqs: Iterable[int]) -> dict[int, Taken]:
    rows = outbox.select_in(conn, _TAKEN + " WHERE p.seq IN ({marks})", seqs)
    return {row[0]: Taken._make(row) for row in rows}


def find(conn: sqlite3.Connection, payment_id: str) -> dict[str, Any] | None:
    """A payment as the API shows it, with its replay state and the centre's verdict."""
    entry = outbox.get(conn, payment_id)
    if entry is None:
        return None
    row = conn.execute(_TAKEN + " WHERE p.seq = ?", (entry.seq,)).fetchone()
    if row is None:
        return None  # an outbox entry of another kind
    found = actions.on_payments(conn, [entry.seq]).get(entry.seq, [])
    return document(entry, Taken._make(row), found)


def _action_json(a: actions.Action) -> dict[str, Any]:
    return {
        "by": a.by, "at": iso(a.at), "reason": a.reason, "entry_id": a.entry_id,
        "state": payment_state(a.state, None, None),
        "refused": a.verdict_reason if a.state == "rejected" else None,
    }  # fmt: skip


def document(
    entry: outbox.Entry, p: Taken, acts: list[actions.Action] | None = None
) -> dict[str, Any]:
    """The one JSON shape of a payment (GET /v1/payments/{id}, the list, the CLI).

    `void` is who voided it, when and why (and whether the centre has it yet); `resolution`
    is how an admin resolved its rejection (refund or retarget).
    """
    acts = acts or []
    force = actions.in_force_of(acts)
    void, resolved = actions.of_kind(acts, "void"), actions.of_kind(acts, "refund", "retarget")
    replay = payment_state(entry.state, entry.verdict, entry.reason)
    state = replay if force is None else payment_state(entry.state, None, None, force.kind)
    return {
        "payment_id": entry.id,
        "receipt": p.receipt,
        "bill_id": p.bill_id,
        "account": p.account,
        "amount": p.amount,
        "currency": "SYP",
        "method": p.method,
        "cashier": p.cashier,
        "channel": p.channel,
        "accepted_at": iso(p.accepted_at),
        "seq": entry.seq,
        "state": state,
        "credit": credits.link(
            p.account, p.bill_id, credits.credited_amount(p.credit, replay, p.amount)
        ),
        "fine": fines.document(p.fine, p.fine_centre),
        "verdict": None
        if entry.verdict is None or entry.settled_at is None
        else {
            "verdict": entry.verdict,
            "reason": entry.reason,
            "version": entry.version,
            "at": iso(entry.settled_at),
        },
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "void": None if void is None else _action_json(void),
        "resolution": None
        if resolved is None
        else {"action": resolved.kind, **_action_json(resolved)},
    }
