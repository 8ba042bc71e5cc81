"""The subscriber's credit at the node: what each verdict credited, and how a payment links to it.

The centre publishes each bill's credit in the feed (the mirror's `bills.credit`, protocol
3) and names in its verdict how much of a payment became credit; the replayer hands the
verdicts to `record` in the write job that settles them, so the two commit together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from sync import protocol

# A payment row only: a verdict on another kind of entry credits no payment.
_RECORD = (
    "INSERT OR IGNORE INTO payment_credits (seq, amount)"
    " SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM payments WHERE seq = ?1)"
)


def record(conn: sqlite3.Connection, verdicts: Iterable[protocol.Verdict]) -> None:
    """Keep the credit each verdict names (the first one kept, as outbox.settle keeps verdicts)."""
    rows = [(v.seq, v.credit) for v in verdicts if v.credit > 0 and v.verdict != "rejected"]
    if rows:
        conn.executemany(_RECORD, rows)


def credited_amount(recorded: int | None, state: str, amount: int) -> int | None:
    """How much of a payment became credit: the verdict's figure; for a `credited` payment
    settled under protocol 2 (no figure), its whole amount, which is what `credited` meant."""
    if recorded:
        return recorded
    return amount if state == "credited" else None


def link(account: str, bill_id: str, credited: int | None) -> dict[str, Any] | None:
    """The payment document's `credit`: how much it credited and where the balance shows."""
    if credited is None:
        return None
    return {
        "amount": credited,
        "account": account,
        "bill_id": bill_id,
        "href": f"/v1/accounts/{account}/bills",
    }
