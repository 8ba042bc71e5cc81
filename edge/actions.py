"""What was done to a payment after it was taken: voids, refunds, retargets (DESIGN 5.12).

The SQL the overlay, the payment states and the documents share, and the reads of the
`payment_actions` table. Each action is an outbox entry of its own kind; a row here ties
it to the payment it acts on. The write jobs are edge.corrections'.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

import outbox

KINDS = ("void", "refund", "retarget")
TABLE = "payment_actions"
# The state a payment shows once an action on it is in force.
STATE_OF = {"void": "voided", "refund": "refunded", "retarget": "retargeted"}


def in_force(action: str, entry: str) -> str:
    """SQL: action alias `action` (its outbox entry alias `entry`) is in force.

    A void the centre refused (the payment was credited or rejected there) is not: the
    payment counts as before and shows its own state. A refund or retarget always is: the
    money left the original payment (a retarget the centre refuses is a rejected payment
    of its own, counted on its new bill).
    """
    return f"({action}.kind != 'void' OR {entry}.state != 'rejected')"


def in_force_seq(seq: str) -> str:
    """SQL: the seq of the action in force on the payment whose seq is `seq` (else NULL).

    At most one is: a resolution is refused while a void is in force, and a void of a
    rejected payment is refused (edge.corrections), so a payment has a void in force or a
    resolution, never both.
    """
    return (
        f"(SELECT a.seq FROM {TABLE} a JOIN {outbox.TABLE} ae ON ae.seq = a.seq"
        f" WHERE a.target = {seq} AND {in_force('a', 'ae')} LIMIT 1)"
    )


def acted_on(seq: str) -> str:
    """SQL: the kind of the action in force on the payment whose seq is `seq` (else NULL)."""
    return f"(SELECT kind FROM {TABLE} WHERE seq = {in_force_seq(seq)})"


class Action(NamedTuple):
    """An action on a payment, with its own entry's replay state and verdict."""

    kind: str
    target: int
    entry_id: str
    reason: str
    by: str
    at: float
    state: str  # the action entry's outbox state: pending, delivered, rejected
    verdict_reason: str | None
    in_force: bool


_SELECT = (
    f"SELECT a.kind, a.target, ae.id, a.reason, a.by, a.at, ae.state, ae.reason,"
    f" {in_force('a', 'ae')} FROM {TABLE} a JOIN {outbox.TABLE} ae ON ae.seq = a.seq"
)


def on_payments(conn: sqlite3.Connection, seqs: Iterable[int]) -> dict[int, list[Action]]:
    """The actions on each of these payments (by the payment's seq), oldest first."""
    rows = outbox.select_in(conn, _SELECT + " WHERE a.target IN ({marks})", seqs)
    found: dict[int, list[Action]] = {}
    for row in sorted(rows, key=lambda r: str(r[2])):  # entry ids sort as they were made
        found.setdefault(int(row[1]), []).append(Action._make((*row[:8], bool(row[8]))))
    return found


def in_force_of(found: list[Action]) -> Action | None:
    return next((a for a in found if a.in_force), None)


def of_kind(found: list[Action], *kinds: str) -> Action | None:
    return next((a for a in found if a.kind in kinds), None)


def unresolved(conn: sqlite3.Connection) -> int:
    """Rejected payments nobody has refunded or retargeted yet (the dashboard's alert)."""
    row = conn.execute(
        f"SELECT COUNT(*) FROM {outbox.TABLE} o JOIN payments p ON p.seq = o.seq"
        f" WHERE o.state = 'rejected' AND NOT EXISTS"
        f" (SELECT 1 FROM {TABLE} a WHERE a.target = o.seq AND a.kind != 'void')"
    ).fetchone()
    return int(row[0])
