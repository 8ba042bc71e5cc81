"""Corrections at the centre: a node's void, refund and retarget entries (PROTOCOL 5.2).

A void reverses a payment the centre applied (the bill's `paid` goes back down, its version
rises so the feed carries it); a refund records that the cash of a rejected payment went
back (no bill changes); a retarget is a payment of a rejected payment's money to another
bill. Each names the payment it corrects, which must be this node's and corrected at most
once (table `corrections`). The ledger (sync.centre.ledger) decides them in chain order, so
a payment sent in the same batch as its void is applied before it is reversed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from outbox.lookup import select_in
from sync import bill

KINDS = ("void", "refund", "retarget")
# The ledger's verdict column for a correction the centre accepted.
SHOWN = {"void": "reversed", "refund": "refunded"}
REFERENCE_FIELDS = ("payment_id", "bill_id", "account", "amount", "reason", "by", "at")

MIGRATION_SQL = """
-- Each payment corrected (voided, refunded or retargeted) and the entry that did it: at most
-- one correction per payment, so a redelivered or repeated void changes nothing.
CREATE TABLE corrections (
    target     TEXT PRIMARY KEY,
    entry      TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Reference:
    """What a correction says of the payment it corrects."""

    payment_id: str
    bill_id: str
    account: str
    amount: int


@dataclass
class Original:
    """A payment as the centre recorded it, as far as correcting it needs."""

    node: str
    bill_id: str | None
    amount: int | None
    verdict: str
    credited: bool  # all or part of it became credit
    corrected: bool
    fine: int = 0  # the part the centre counted to the bill's late fine (protocol 4)


def reference(payload: bytes, kind: str) -> Reference | None:
    """The payment a correction names, None if malformed. For a retarget only its `original`
    is read here (the rest is a payment payload, which the ledger reads as one)."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:  # any msgpack failure means the same thing: a malformed payload
        return None
    if not isinstance(data, dict):
        return None
    if kind == "retarget":
        original = data.get("original")
        return Reference(original, "", "", 0) if isinstance(original, str) else None
    if any(field not in data for field in REFERENCE_FIELDS):
        return None
    amount = data["amount"]
    if type(amount) is not int or not 0 < amount <= bill.MAX_INT:
        return None
    if any(not isinstance(data[f], str) for f in REFERENCE_FIELDS if f != "amount"):
        return None
    return Reference(data["payment_id"], data["bill_id"], data["account"], amount)


def originals(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, Original]:
    """The recorded payments among `ids`, with whether credit came of them or they were corrected."""
    wanted = sorted(set(ids))
    sql = (
        "SELECT e.id, e.node, e.bill_id, e.amount, e.verdict,"
        " EXISTS (SELECT 1 FROM credits c WHERE c.source = e.id),"
        " EXISTS (SELECT 1 FROM corrections k WHERE k.target = e.id), COALESCE(e.fine, 0)"
        " FROM entries e WHERE e.kind IN ('payment', 'retarget') AND e.id IN ({marks})"
    )
    return {
        row[0]: Original(row[1], row[2], row[3], row[4], bool(row[5]), bool(row[6]), row[7])
        for row in select_in(conn, sql, wanted)
    }


def check(
    kind: str, node: str, ref: Reference | None, original: Original | None
) -> tuple[str, str] | None:
    """("rejected", reason) when the correction cannot stand, else None (checks before money)."""
    if ref is None:
        return "rejected", "bad_payload"
    if original is None or original.node != node:
        return "rejected", "unknown_payment"
    # A void or refund names the payment's bill and money; a retarget moves that money.
    same_bill = kind == "retarget" or ref.bill_id == original.bill_id
    if ref.amount != original.amount or not same_bill:
        return "rejected", "bad_payload"
    if original.corrected:
        return "rejected", "already_voided" if kind == "void" else "already_resolved"
    if kind == "void":
        if original.verdict == "rejected":
            return "rejected", "payment_rejected"
        if original.credited or original.verdict == "credited":
            # Reversing credit a subscriber may have used already is the centre's own call.
            return "rejected", "payment_credited"
    elif original.verdict != "rejected":
        return "rejected", "not_rejected"
    return None


def reverse(
    ref: Reference, bills: dict[str, list[Any]], fine: int = 0
) -> tuple[str, str | None, int | None]:
    """Take a voided payment back off its bill (the cached state the ledger writes): its
    `fine` part off the bill's `fine_paid`, the rest off `paid` (PROTOCOL 5.5: the fine came first)."""
    state = bills.get(ref.bill_id)
    if state is None or state[3] < ref.amount - fine or state[8] < fine:
        return "rejected", "unknown_bill", None
    state[3], state[4], state[5] = state[3] - (ref.amount - fine), state[4] + 1, True
    state[8] -= fine
    return "applied", None, state[4]


def refund_version(ref: Reference, bills: dict[str, list[Any]]) -> int:
    """The version a refund's `applied` names: its bill's as it is (0 for a bill unknown here)."""
    state = bills.get(ref.bill_id)
    return 0 if state is None else int(state[4])
