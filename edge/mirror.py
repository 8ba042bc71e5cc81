"""The bills mirror: the centre's bills kept locally, with the local-payments overlay.

`apply_changes` replaces a row only when the incoming version is higher and stores the
cursor in the same transaction, so the cursor is never ahead of the data. The due amount
shown is `amount - paid - pending_local` (DESIGN 5.3): a local payment counts until the
mirror holds the bill at a version >= the one in the centre's verdict for it, and a void
counts (negatively, for a payment the mirror holds) until the same holds of the void.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import outbox
from edge import actions
from outbox import crashpoints
from sync.bill import ACCOUNT as ACCOUNT
from sync.bill import BILL_ID as BILL_ID
from sync.bill import FIELDS as BILL_FIELDS
from sync.bill import BadBill as BadBill
from sync.bill import validate as validate_bill

_UPSERT = (
    f"INSERT INTO bills ({', '.join(BILL_FIELDS)}) VALUES ({', '.join('?' for _ in BILL_FIELDS)})"
    " ON CONFLICT (bill_id) DO UPDATE SET "
    + ", ".join(f"{f} = excluded.{f}" for f in BILL_FIELDS[1:])
    + " WHERE excluded.version > bills.version"
)

# A local payment still counts against the bill while the centre has not confirmed it, or
# confirmed it at a version the mirror does not hold yet. Rejected payments keep counting:
# the cashier holds the money until an operator resolves the entry (refund or retarget: then
# it stops). A void in force takes a payment out at once; if the mirror's `paid` holds the
# payment already, the void gives the amount back (a negative term) until the mirror holds
# the centre's reversed bill (the void's own version). DESIGN 5.3 and 5.12.
_PENDING_LOCAL = f"""
    COALESCE((SELECT SUM(CASE
                WHEN a.seq IS NULL THEN
                    CASE WHEN {outbox.counts_locally("o", "b.version")} THEN p.amount ELSE 0 END
                WHEN a.kind = 'void' AND NOT {outbox.counts_locally("o", "b.version")}
                     AND {outbox.counts_locally("ae", "b.version")} THEN -p.amount
                ELSE 0 END)
              FROM payments p JOIN {outbox.TABLE} o ON o.seq = p.seq
              LEFT JOIN {outbox.TABLE} ae ON ae.seq = {actions.in_force_seq("p.seq")}
              LEFT JOIN {actions.TABLE} a ON a.seq = ae.seq
              WHERE p.account = b.account AND p.bill_id = b.bill_id), 0)
"""
_SELECT_VIEW = (
    "SELECT b.bill_id, b.account, b.governorate, b.cycle, b.name, b.address, b.meter, b.kwh,"
    " b.amount, b.paid, b.due_date, b.version, b.updated_at, b.credit,"
    + _PENDING_LOCAL
    + " FROM bills b"
)


class BillView(NamedTuple):
    """A bill with its overlay (a tuple: built for every row an inquiry or payment reads)."""

    bill_id: str
    account: str
    governorate: str
    cycle: str
    name: str
    address: str
    meter: str
    kwh: int
    amount: int
    paid: int
    due_date: str
    version: int
    updated_at: str
    credit: int  # the subscriber's money the centre holds on this bill (protocol 3)
    pending_local: int

    @property
    def due(self) -> int:
        return max(0, self.amount - self.paid - self.pending_local)

    @property
    def status(self) -> str:
        if self.due == 0:
            return "paid"
        return "unpaid" if self.paid + self.pending_local == 0 else "partial"


@dataclass(frozen=True)
class MirrorState:
    cursor: int | None
    as_of: float | None
    bills: int


def apply_changes(
    conn: sqlite3.Connection,
    bills: Iterable[Mapping[str, Any]],
    cursor: int | None,
    *,
    now: float | None = None,
) -> int:
    """Apply one batch of bill changes and its cursor (inside the caller's transaction).

    A bill replaces the stored one only if its version is higher. `cursor=None` (a snapshot
    batch before its end) leaves the cursor as it was. Returns the rows inserted or replaced.
    Raises BadBill before writing anything.
    """
    rows = [validate_bill(b) for b in bills]
    ids = {row[0] for row in rows}
    known = sum(
        n for (n,) in outbox.select_in(
            conn, "SELECT COUNT(*) FROM bills WHERE bill_id IN ({marks})", ids
        )
    )  # fmt: skip
    before = conn.total_changes
    conn.executemany(_UPSERT, rows)
    crashpoints.reached("mirror_batch")
    changed = conn.total_changes - before
    if cursor is None:
        conn.execute("UPDATE mirror_state SET bills = bills + ? WHERE id = 1", (len(ids) - known,))
    else:
        conn.execute(
            "UPDATE mirror_state SET cursor = ?, as_of = ?, bills = bills + ? WHERE id = 1",
            (cursor, time.time() if now is None else now, len(ids) - known),
        )
    return changed


def mark_heard(conn: sqlite3.Connection, *, now: float | None = None) -> None:
    """The centre answered (even with no changes): the mirror is current as of now."""
    conn.execute(
        "UPDATE mirror_state SET as_of = ? WHERE id = 1", (time.time() if now is None else now,)
    )


def state(conn: sqlite3.Connection) -> MirrorState:
    row = conn.execute("SELECT cursor, as_of, bills FROM mirror_state WHERE id = 1").fetchone()
    return MirrorState(cursor=row[0], as_of=row[1], bills=int(row[2]))


def bill(conn: sqlite3.Connection, bill_id: str) -> BillView | None:
    row = conn.execute(_SELECT_VIEW + " WHERE b.bill_id = ?", (bill_id,)).fetchone()
    return None if row is None else BillView._make(row)


class Due(NamedTuple):
    """What taking a payment needs of a bill: whose it is and what is still due on it."""

    bill_id: str
    account: str
    due: int


_SELECT_DUE = (
    "SELECT b.bill_id, b.account, max(0, b.amount - b.paid - " + _PENDING_LOCAL + ") FROM bills b"
)


def dues_by_id(conn: sqlite3.Connection, bill_ids: Iterable[str]) -> dict[str, Due]:
    """The due amount (with the overlay) of each known bill; the payment writer's one read."""
    sql = _SELECT_DUE + " WHERE b.bill_id IN ({marks})"
    return {row[0]: Due._make(row) for row in outbox.select_in(conn, sql, bill_ids)}


# The inquiry body's bills, built by SQLite's JSON functions in the same statement that reads
# them: the hot path then creates no Python object per bill. `due` and `status` restate
# BillView.due / BillView.status in SQL; tests/unit/test_overlay.py holds the two equal.
# One pass over the account's bills (adjacent in the table, in cycle order): `name`,
# `address` and `governorate` are bare columns beside max(cycle), so SQLite takes them from
# the latest bill. The uncorrelated "any local payment for this account?" subquery runs once
# per statement, so an account without local payments costs no per-bill overlay probe.
# The JSON comes back as UTF-8 bytes (CAST AS BLOB): it goes into the response unchanged.
_ACCOUNT_JSON = (
    "WITH w AS (SELECT *, max(0, amount - paid - pl) AS due FROM"
    " (SELECT b.*, CASE WHEN (SELECT 1 FROM payments WHERE account = ?1 LIMIT 1) IS NULL"
    "  THEN 0 ELSE " + _PENDING_LOCAL + " END AS pl"
    "  FROM bills b WHERE b.account = ?1 ORDER BY b.cycle))"
    " SELECT CAST(json_group_array(json_object("
    "'bill_id', bill_id, 'cycle', cycle, 'amount', amount, 'paid', paid, 'pending_local', pl,"
    " 'due', due, 'due_date', due_date, 'status', CASE WHEN due = 0 THEN 'paid'"
    " WHEN paid + pl = 0 THEN 'unpaid' ELSE 'partial' END, 'kwh', kwh, 'meter', meter,"
    " 'version', version, 'credit', credit)) AS BLOB), SUM(due), COUNT(*), max(cycle),"
    " CAST(json_object('name', name, 'address', address) AS BLOB),"
    " CAST(json_quote(governorate) AS BLOB), SUM(credit)"
    " FROM w"
)


@dataclass(frozen=True)
class AccountJson:
    """An account's bills as UTF-8 JSON, ready to embed in the inquiry response."""

    bills: bytes
    total_due: int
    subscriber: bytes  # {"name": ..., "address": ...} of the latest bill
    governorate: bytes  # a JSON string
    credit: int  # the sum of the bills' credit: the account's balance (sync.centre.credits)


def account_json(conn: sqlite3.Connection, account: str) -> AccountJson | None:
    bills_json, total, count, _, subscriber, governorate, credit = conn.execute(
        _ACCOUNT_JSON, (account,)
    ).fetchone()
    if not count:
        return None
    return AccountJson(bills_json, int(total), subscriber, governorate, int(credit))


def bills_for_account(conn: sqlite3.Connection, account: str) -> list[BillView]:
    rows = conn.execute(_SELECT_VIEW + " WHERE b.account = ? ORDER BY b.cycle", (account,))
    return [BillView._make(row) for row in rows]
