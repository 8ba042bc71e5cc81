"""The ledger of node entries: recording one outbox batch (a write job), and listing entries.

`record_batch` checks the whole batch against the node's chain before writing anything,
then records every new entry with its verdict, applies payments to bills and moves the
chain head, all in the caller's one write transaction (a `CentreStore.write` job).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from outbox.chain import GENESIS, entry_hash
from outbox.lookup import select_in
from sync import bill, protocol
from sync.centre import corrections, readings, receipts, requests
from sync.centre import fines as centre_fines
from sync.centre.config import Limits
from sync.centre.store import ChangeSeq
from sync.errors import Refused
from sync.fines import MISMATCH, Rule, allocate
from sync.timefmt import iso

log = logging.getLogger(__name__)

NO_LIMITS = Limits()
# (verdict, reason, version, credit, fine): what the ledger decides of one new entry.
Decision = tuple[str, str | None, int | None, int, int | None]
PAYMENT_FIELDS = (
    "payment_id", "bill_id", "account", "amount", "channel", "idempotency_key", "method",
    "cashier", "accepted_at", "receipt",
)  # fmt: skip


@dataclass(frozen=True)
class Stored:
    node: str
    hash: str
    verdict: str
    reason: str | None
    version: int | None
    credit: int
    fine: int | None


@dataclass(frozen=True)
class Payment:
    bill_id: str
    account: str
    amount: int
    receipt: str = ""
    accepted_at: str = ""
    fine: int | None = None  # the node's figure of the fine in it (protocol 4); None: not sent


def _known(conn: sqlite3.Connection, ids: list[str]) -> dict[str, Stored]:
    # An entry's credit is its row in `credits` (source = the entry id), so a resend is
    # answered with the credit its first verdict gave.
    sql = (
        "SELECT e.id, e.node, e.hash, e.verdict, e.reason, e.version, COALESCE(c.amount, 0),"
        " e.fine FROM entries e LEFT JOIN credits c ON c.source = e.id WHERE e.id IN ({marks})"
    )
    return {row[0]: Stored(*row[1:]) for row in select_in(conn, sql, ids)}


def _bills(conn: sqlite3.Connection, bill_ids: set[str]) -> dict[str, list[Any]]:
    """bill_id -> [governorate, account, amount, paid, version, changed, credit, due_date,
    fine_paid] for the batch."""
    sql = (
        "SELECT bill_id, governorate, account, amount, paid, version, credit, due_date,"
        " fine_paid FROM bills WHERE bill_id IN ({marks})"
    )
    return {row[0]: [*row[1:6], False, *row[6:]] for row in select_in(conn, sql, sorted(bill_ids))}


def parse_payment(payload: bytes, entry_id: str) -> Payment | None:
    """The accounting fields of a payment payload, or None when it is malformed."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:  # any msgpack failure means the same thing: a malformed payload
        return None
    if not isinstance(data, dict) or any(field not in data for field in PAYMENT_FIELDS):
        return None
    amount = data["amount"]
    if type(amount) is not int or not 0 < amount <= bill.MAX_INT:
        return None
    if any(not isinstance(data[f], str) for f in PAYMENT_FIELDS if f != "amount"):
        return None
    if data["payment_id"] != entry_id:
        return None
    fine = data.get("fine")
    if fine is not None and (type(fine) is not int or not 0 <= fine <= amount):
        return None
    return Payment(
        bill_id=data["bill_id"], account=data["account"], amount=amount,
        receipt=data["receipt"], accepted_at=data["accepted_at"], fine=fine,
    )  # fmt: skip


def _check_chain(
    conn: sqlite3.Connection, node: str, entries: Sequence[protocol.WireEntry]
) -> tuple[dict[str, Stored], tuple[int, str]]:
    """Refuse the batch (409, nothing written) unless every entry is known or continues the chain."""
    head_row = conn.execute("SELECT seq, hash FROM chain_heads WHERE node = ?", (node,)).fetchone()
    head: tuple[int, str] = (0, GENESIS) if head_row is None else (head_row[0], head_row[1])
    known = _known(conn, [e.id for e in entries])
    seq, prev = head
    sent: dict[str, str] = {}
    for e in entries:
        stored_hash = known[e.id].hash if e.id in known else sent.get(e.id)
        if stored_hash is not None:
            if stored_hash != e.hash or (e.id in known and known[e.id].node != node):
                raise Refused(
                    409, "chain_broken",
                    f"entry {e.id} (seq {e.seq}) was already recorded with other content",
                )  # fmt: skip
            continue
        if e.seq > seq + 1:
            raise Refused(
                409, "chain_gap",
                f"entry {e.id} has seq {e.seq} but node {node}'s chain at the centre ends at"
                f" seq {seq}: seq {seq + 1}..{e.seq - 1} are missing or out of order",
            )  # fmt: skip
        if e.seq <= seq:
            raise Refused(
                409, "chain_broken",
                f"entry {e.id} has seq {e.seq}, which the centre holds for another entry id",
            )  # fmt: skip
        if e.prev_hash != prev:
            raise Refused(
                409, "chain_broken",
                f"entry {e.id} (seq {e.seq}): prev_hash does not match the hash of seq {seq}",
            )  # fmt: skip
        if entry_hash(prev, e.seq, e.id, e.kind, e.payload) != e.hash:
            raise Refused(
                409, "chain_broken",
                f"entry {e.id} (seq {e.seq}): hash does not match the entry's content",
            )  # fmt: skip
        seq, prev = e.seq, e.hash
        sent[e.id] = e.hash
    return known, (seq, prev)


def record_batch(
    conn: sqlite3.Connection,
    node: str,
    governorate: str,
    entries: Sequence[protocol.WireEntry],
    now: float,
    limits: Limits = NO_LIMITS,
    duplicate_codes: frozenset[str] = frozenset(),
) -> protocol.Reply:
    """Record one batch from `node` (a write job); raises Refused with nothing written."""
    known, (head_seq, head_hash) = _check_chain(conn, node, entries)
    fresh = [e for e in entries if e.id not in known]
    payments: dict[str, Payment | None] = {}
    refs: dict[str, corrections.Reference | None] = {}
    for e in fresh:
        if e.kind in ("payment", "retarget") and e.id not in payments:
            payments[e.id] = parse_payment(e.payload, e.id)
        if e.kind in corrections.KINDS and e.id not in refs:
            refs[e.id] = _reference(e, payments.get(e.id))
    # Before anything is written: a code another node holds refuses the whole batch.
    receipts.claim_codes(
        conn,
        node,
        governorate,
        [p.receipt for p in payments.values() if p is not None],
        now,
        duplicate_codes,
    )
    outcomes = corrections.originals(conn, [r.payment_id for r in refs.values() if r])
    bills = _bills(
        conn,
        {p.bill_id for p in payments.values() if p is not None}
        | {o.bill_id for o in outcomes.values() if o.bill_id is not None},
    )

    rules = centre_fines.rules_of(conn, governorate)
    results: list[protocol.Verdict] = []
    decided: dict[str, protocol.Verdict] = {}
    rows: list[tuple[Any, ...]] = []
    credits: list[tuple[Any, ...]] = []
    corrected: list[tuple[Any, ...]] = []
    for e in entries:
        stored = known.get(e.id)
        if stored is not None or e.id in decided:
            first = (
                decided[e.id]
                if stored is None
                else protocol.Verdict(
                    e.seq,
                    e.id,
                    stored.verdict,
                    stored.reason,
                    stored.version,
                    stored.credit,
                    stored.fine,
                )
            )
            results.append(_repeat(e, first))
            continue
        payment = payments.get(e.id)
        ref = refs.get(e.id)
        decision: Decision
        if e.kind == readings.KIND:
            verdict, reason = readings.decide(conn, node, governorate, e.id, e.payload, now)
            # No bill changes: an applied reading names version 0 (PROTOCOL 5.3).
            decision = (verdict, reason, 0 if verdict == "applied" else None, 0, None)
        elif e.kind == requests.KIND:
            counter = ChangeSeq(conn)  # saved at once: the bills' counter below reads it again
            verdict, reason = requests.decide(
                conn, counter.next, node, governorate, e.id, e.payload, now
            )
            counter.save()
            decision = (verdict, reason, 0 if verdict == "applied" else None, 0, None)
        elif e.kind not in ("payment", *corrections.KINDS):
            decision = ("rejected", "unknown_kind", None, 0, None)
        elif e.kind == "payment":
            decision = _apply(payment, governorate, bills, limits, rules, now)
        else:
            original = None if ref is None else outcomes.get(ref.payment_id)
            decision = _correct(
                e, node, ref, original, payment, governorate, bills, limits, rules, now
            )
            if original is not None and ref is not None and decision[1] not in _STANDING:
                original.corrected = True
                corrected.append((ref.payment_id, e.id, e.kind, now))
        verdict, reason, version, credit, fine = decision
        if e.kind in ("payment", "retarget"):
            # A payment decided now can be corrected later in this very batch (chain order).
            outcomes[e.id] = corrections.Original(
                node, payment.bill_id if payment else None, payment.amount if payment else None,
                verdict, credit > 0, False, fine or 0,
            )  # fmt: skip
        result = protocol.Verdict(e.seq, e.id, verdict, reason, version, credit, fine)
        decided[e.id] = result
        results.append(result)
        shown = payment or ref
        bill_id, amount = (shown.bill_id, shown.amount) if shown else (None, None)
        rows.append((e.id, node, e.seq, e.kind, e.payload, e.prev_hash, e.hash, bill_id, amount,
                     verdict, reason, version, now, fine))  # fmt: skip
        if credit and payment is not None:
            gov, account = bills[payment.bill_id][0], bills[payment.bill_id][1]
            credits.append((e.id, gov, account, payment.bill_id, credit, now))

    if corrected:
        conn.executemany(
            "INSERT INTO corrections (target, entry, kind, created_at) VALUES (?, ?, ?, ?)",
            corrected,
        )
    if rows:
        conn.executemany(
            "INSERT INTO entries (id, node, seq, kind, payload, prev_hash, hash, bill_id, amount,"
            " verdict, reason, version, received_at, fine)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "INSERT INTO chain_heads (node, seq, hash) VALUES (?, ?, ?)"
            " ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (node, head_seq, head_hash),
        )
    if credits:
        conn.executemany(
            "INSERT INTO credits (source, governorate, account, bill_id, amount, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            credits,
        )
    changed = [(bill_id, state) for bill_id, state in bills.items() if state[5]]
    if changed:
        counter = ChangeSeq(conn)
        stamp = iso(now)
        conn.executemany(
            "UPDATE bills SET paid = ?, version = ?, credit = ?, fine_paid = ?, change_seq = ?,"
            " updated_at = ? WHERE bill_id = ?",
            [
                (state[3], state[4], state[6], state[8], counter.next(), stamp, bill_id)
                for bill_id, state in changed
            ],
        )
        counter.save()
    log.debug("node %s: %d entries, %d new, head %d", node, len(entries), len(rows), head_seq)
    return protocol.Reply(results=results, acked_seq=head_seq)


def _repeat(e: protocol.WireEntry, first: protocol.Verdict) -> protocol.Verdict:
    # A rejected entry stays rejected on every resend, so a lost reply can never turn it into
    # "delivered" at the node; otherwise `duplicate` names the first verdict in `reason`.
    if first.verdict == "rejected":
        return protocol.Verdict(e.seq, e.id, "rejected", first.reason, first.version)
    return protocol.Verdict(
        e.seq, e.id, "duplicate", first.verdict, first.version, first.credit, first.fine
    )


# The refusals of a correction that leave the payment it names uncorrected; any other
# verdict (a retarget the payment checks reject included) settles that payment's fate.
_STANDING = frozenset({
    "bad_payload", "unknown_payment", "already_voided", "already_resolved", "payment_rejected",
    "payment_credited", "not_rejected", "reversal_failed",
})  # fmt: skip


def _reference(e: protocol.WireEntry, payment: Payment | None) -> corrections.Reference | None:
    ref = corrections.reference(e.payload, e.kind)
    if e.kind != "retarget" or ref is None:
        return ref
    # A retarget is a payment of the original's money to another bill.
    if payment is None:
        return None
    return corrections.Reference(ref.payment_id, payment.bill_id, payment.account, payment.amount)


def _correct(
    e: protocol.WireEntry, node: str, ref: corrections.Reference | None,
    original: corrections.Original | None, payment: Payment | None, governorate: str,
    bills: dict[str, list[Any]], limits: Limits, rules: list[Rule], now: float,
) -> Decision:  # fmt: skip
    """(verdict, reason, version, credit) of a void, refund or retarget (PROTOCOL 5.2)."""
    refused = corrections.check(e.kind, node, ref, original)
    if refused is not None or ref is None:
        verdict, reason = refused or ("rejected", "bad_payload")
        return verdict, reason, None, 0, None
    if e.kind == "void":
        fine = 0 if original is None else original.fine  # check() refused a void of none
        verdict, why, version = corrections.reverse(ref, bills, fine)
        return verdict, None if why is None else "reversal_failed", version, 0, None
    if e.kind == "refund":
        return "applied", None, corrections.refund_version(ref, bills), 0, None
    return _apply(payment, governorate, bills, limits, rules, now)


def _apply(
    payment: Payment | None,
    governorate: str,
    bills: dict[str, list[Any]],
    limits: Limits,
    rules: Sequence[Rule] = (),
    now: float = 0.0,
) -> Decision:
    """(verdict, reason, version, credit, fine) for one new payment; updates the cached bill
    state."""
    if payment is None:
        return "rejected", "bad_payload", None, 0, None
    bill = bills.get(payment.bill_id)
    if bill is None:
        return "rejected", "unknown_bill", None, 0, None
    bill_gov, account, amount, paid, version, _, held, due_date, fine_paid = bill
    if bill_gov != governorate:
        return "rejected", "governorate_mismatch", None, 0, None
    if account != payment.account:
        return "rejected", "account_mismatch", None, 0, None
    # A node lets a cashier take at most what it sees due, which is never above the bill's
    # amount: more is a bug or a forged entry, and must not become anyone's credit.
    # The fine comes first out of the money (sync.fines.allocate), by the centre's own figure;
    # the node's figure only decides whether the verdict names a mismatch (PROTOCOL 5.5).
    remaining = max(0, amount - paid)
    owed = centre_fines.judge(
        list(rules), payment.accepted_at, now, amount, due_date, remaining, fine_paid
    )
    to_fine, principal = allocate(payment.amount, owed)
    reason = None if payment.fine == to_fine or (payment.fine is None and not to_fine) else MISMATCH
    # The node's own split bounds what it took for the amount: a node whose clock or rule
    # differs took its fine figure on top, which becomes credit, never a rejection.
    ceiling = limits.max_payment
    beyond = payment.amount - (payment.fine or 0) > amount
    if beyond or (ceiling is not None and payment.amount > ceiling):
        return "rejected", "amount_implausible", None, 0, None
    taken = min(remaining, principal)
    if limits.max_credit is not None and principal - taken > limits.max_credit:
        return "rejected", "credit_over_cap", None, 0, None
    credit = principal - taken
    # Credit is published on the bill (its `credit`, protocol 3): the bill changes, so its
    # version rises and it enters the change feed, and nodes pull the subscriber's credit.
    bill[3], bill[4], bill[5], bill[6] = paid + taken, version + 1, True, held + credit
    bill[8] = fine_paid + to_fine
    return ("applied" if taken or to_fine else "credited"), reason, version + 1, credit, to_fine


# The verdict column as the ledger and the clearing report show it (sync.centre.clearing).
SHOWN_VERDICT = "CASE {} ELSE verdict END".format(
    " ".join(
        f"WHEN verdict = 'applied' AND kind = '{kind}' THEN '{word}'"
        for kind, word in corrections.SHOWN.items()
    )
)


def ledger_rows(conn: sqlite3.Connection, node: str | None = None) -> Iterator[tuple[Any, ...]]:
    """(id, node, seq, bill_id, amount, verdict) in (node, seq) order; a void the centre
    applied shows `reversed`, a refund `refunded` (its amount is the money given back)."""
    sql = f"SELECT id, node, seq, bill_id, amount, {SHOWN_VERDICT} FROM entries"
    if node is None:
        yield from conn.execute(sql + " ORDER BY node, seq")
    else:
        yield from conn.execute(sql + " WHERE node = ? ORDER BY seq", (node,))
