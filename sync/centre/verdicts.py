"""The ledger's decisions, written once for both stores: the chain check, and the verdict of
every new entry of a batch from the facts its store read (sync.centre.stores).

A store reads the node's chain head (locked) and the entries the batch names, `scan`s them
(refusing the batch, nothing written, on a broken chain), reads the `Facts` the scan asks
for, then writes the `Plan` that `decide` returns in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from outbox.chain import entry_hash
from sync import bill, protocol
from sync.centre import corrections, readings, receipts, requests
from sync.centre import fines as centre_fines
from sync.centre.config import Limits
from sync.errors import Refused
from sync.fines import MISMATCH, Rule, allocate
from sync.timefmt import iso

NO_LIMITS = Limits()
# (verdict, reason, version, credit, fine): what the ledger decides of one new entry.
Decision = tuple[str, str | None, int | None, int, int | None]
PAYMENT_FIELDS = (
    "payment_id", "bill_id", "account", "amount", "channel", "idempotency_key", "method",
    "cashier", "accepted_at", "receipt",
)  # fmt: skip
# A bill's state as the ledger caches it for a batch: [governorate, account, amount, paid,
# version, changed, credit, due_date, fine_paid] (corrections.reverse writes it too).
BillState = list[Any]


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


def check_chain(
    node: str, head: tuple[int, str], known: dict[str, Stored],
    entries: Sequence[protocol.WireEntry],
) -> tuple[int, str]:  # fmt: skip
    """The chain head after the batch; Refused (409) unless every entry is known or continues
    the node's chain from `head`."""
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
    return seq, prev


@dataclass
class Scan:
    """A batch that continues its node's chain, its new entries parsed: what to read next."""

    known: dict[str, Stored]
    head: tuple[int, str]
    payments: dict[str, Payment | None] = field(default_factory=dict)
    refs: dict[str, corrections.Reference | None] = field(default_factory=dict)
    readings: dict[str, readings.Reading | None] = field(default_factory=dict)
    requests: dict[str, requests.Request | None] = field(default_factory=dict)

    def codes(self, allowed: frozenset[str]) -> list[str]:
        """The receipt codes the batch's payments carry (the `allowed` duplicates left out)."""
        return receipts.codes_of([p.receipt for p in self.payments.values() if p], allowed)

    def original_ids(self) -> list[str]:
        return sorted({r.payment_id for r in self.refs.values() if r})

    def bill_ids(self, originals: dict[str, corrections.Original]) -> list[str]:
        return sorted(
            {p.bill_id for p in self.payments.values() if p is not None}
            | {o.bill_id for o in originals.values() if o.bill_id is not None}
        )

    def accounts(self) -> list[str]:
        """The accounts named by the batch's readings and requests."""
        named = [r.account for r in self.readings.values() if r]
        return sorted({*named, *(r.account for r in self.requests.values() if r)})

    def meters(self) -> list[str]:
        return sorted({r.meter for r in self.readings.values() if r})

    def request_bills(self) -> list[str]:
        return sorted({r.bill_id for r in self.requests.values() if r and r.bill_id})


def scan(
    node: str, head: tuple[int, str], known: dict[str, Stored],
    entries: Sequence[protocol.WireEntry],
) -> Scan:  # fmt: skip
    """Check the chain (Refused, nothing written) and parse every new entry once."""
    found = Scan(known, check_chain(node, head, known, entries))
    for e in entries:
        if e.id in known:
            continue
        if e.kind in ("payment", "retarget") and e.id not in found.payments:
            found.payments[e.id] = parse_payment(e.payload, e.id)
        if e.kind in corrections.KINDS and e.id not in found.refs:
            found.refs[e.id] = _reference(e, found.payments.get(e.id))
        if e.kind == readings.KIND:
            found.readings[e.id] = readings.parse(e.payload, e.id)
        if e.kind == requests.KIND:
            found.requests[e.id] = requests.parse(e.payload, e.id)
    return found


@dataclass
class Facts:
    """What the store read for a scanned batch (each keyed by what the scan named)."""

    originals: dict[str, corrections.Original]
    bills: dict[str, BillState]  # bill_id -> BillState (BillState's changed flag False)
    rules: list[Rule]
    meters_of: dict[str, set[str]]  # account of the governorate -> its meters
    owners: dict[str, str]  # bill_id of the governorate -> its account
    last_reading: dict[str, int]  # meter -> its newest applied reading


@dataclass
class Plan:
    """Everything one batch writes, in one transaction; `history` then `bills` take the
    next change_seq values in order."""

    reply: protocol.Reply
    head: tuple[int, str]
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    credits: list[tuple[Any, ...]] = field(default_factory=list)
    corrected: list[tuple[Any, ...]] = field(default_factory=list)
    readings: list[tuple[Any, ...]] = field(default_factory=list)
    requests: list[tuple[Any, ...]] = field(default_factory=list)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    bills: list[tuple[str, BillState]] = field(default_factory=list)


ENTRY_COLUMNS = (
    "id", "node", "seq", "kind", "payload", "prev_hash", "hash", "bill_id", "amount", "verdict",
    "reason", "version", "received_at", "fine",
)  # fmt: skip
CREDIT_COLUMNS = ("source", "governorate", "account", "bill_id", "amount", "created_at")


def decide(
    found: Scan, facts: Facts, node: str, governorate: str,
    entries: Sequence[protocol.WireEntry], now: float, limits: Limits = NO_LIMITS,
) -> Plan:  # fmt: skip
    """The verdict of every entry in chain order, and the rows that record them."""
    plan = Plan(protocol.Reply(results=[], acked_seq=found.head[0]), found.head)
    bills, outcomes = facts.bills, facts.originals
    decided: dict[str, protocol.Verdict] = {}
    stamp = iso(now)
    for e in entries:
        stored = found.known.get(e.id)
        if stored is not None or e.id in decided:
            first = decided[e.id] if stored is None else protocol.Verdict(
                e.seq, e.id, stored.verdict, stored.reason, stored.version, stored.credit,
                stored.fine,
            )  # fmt: skip
            plan.reply.results.append(_repeat(e, first))
            continue
        payment = found.payments.get(e.id)
        ref = found.refs.get(e.id)
        decision: Decision
        if e.kind == readings.KIND:
            verdict, reason = _reading(e, found, facts, node, governorate, plan, now)
            # No bill changes: an applied reading names version 0 (PROTOCOL 5.3).
            decision = (verdict, reason, 0 if verdict == "applied" else None, 0, None)
        elif e.kind == requests.KIND:
            verdict, reason = _request(e, found, facts, node, governorate, plan, stamp)
            decision = (verdict, reason, 0 if verdict == "applied" else None, 0, None)
        elif e.kind not in ("payment", *corrections.KINDS):
            decision = ("rejected", "unknown_kind", None, 0, None)
        elif e.kind == "payment":
            decision = _apply(payment, governorate, bills, limits, facts.rules, now)
        else:
            original = None if ref is None else outcomes.get(ref.payment_id)
            decision = _correct(
                e, node, ref, original, payment, governorate, bills, limits, facts.rules, now
            )
            if original is not None and ref is not None and decision[1] not in _STANDING:
                original.corrected = True
                plan.corrected.append((ref.payment_id, e.id, e.kind, now))
        verdict, reason, version, credit, fine = decision
        if e.kind in ("payment", "retarget"):
            # A payment decided now can be corrected later in this very batch (chain order).
            outcomes[e.id] = corrections.Original(
                node, payment.bill_id if payment else None, payment.amount if payment else None,
                verdict, credit > 0, False, fine or 0,
            )  # fmt: skip
        result = protocol.Verdict(e.seq, e.id, verdict, reason, version, credit, fine)
        decided[e.id] = result
        plan.reply.results.append(result)
        shown = payment or ref
        bill_id, amount = (shown.bill_id, shown.amount) if shown else (None, None)
        plan.entries.append((e.id, node, e.seq, e.kind, e.payload, e.prev_hash, e.hash, bill_id,
                             amount, verdict, reason, version, now, fine))  # fmt: skip
        if credit and payment is not None:
            gov, account = bills[payment.bill_id][0], bills[payment.bill_id][1]
            plan.credits.append((e.id, gov, account, payment.bill_id, credit, now))
    plan.bills = sorted((b, state) for b, state in bills.items() if state[5])
    return plan


def _reading(
    e: protocol.WireEntry, found: Scan, facts: Facts, node: str, governorate: str, plan: Plan,
    now: float,
) -> tuple[str, str | None]:  # fmt: skip
    r = found.readings.get(e.id)
    if r is None:
        return "rejected", "bad_payload"
    verdict, reason = readings.judge(r, facts.meters_of, facts.last_reading)
    if verdict == "applied":
        facts.last_reading[r.meter] = r.reading  # the next reading of the batch follows it
    plan.readings.append(readings.row(e.id, node, governorate, r, verdict, reason, now))
    return verdict, reason


def _request(
    e: protocol.WireEntry, found: Scan, facts: Facts, node: str, governorate: str, plan: Plan,
    stamp: str,
) -> tuple[str, str | None]:  # fmt: skip
    r = found.requests.get(e.id)
    if r is None:
        return "rejected", "bad_payload"
    verdict, reason = requests.judge(r, facts.meters_of, facts.owners)
    if verdict == "applied":
        plan.requests.append(requests.row(e.id, node, governorate, r, stamp))
        plan.history.append((e.id, 1, "received", None, stamp, governorate))
    return verdict, reason


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
