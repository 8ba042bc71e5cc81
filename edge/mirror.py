"""The bills mirror: the centre's bills kept locally, with the local-payments overlay.

`apply_changes` replaces a row only when the incoming version is higher and stores the
cursor in the same transaction, so the cursor is never ahead of the data. The due amount
shown is `amount - paid - pending_local` (DESIGN 5.3): a local payment counts until the
mirror holds the bill at a version >= the one in the centre's verdict for it, and a void
counts (negatively, for a payment the mirror holds) until the same holds of the void.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import outbox
from edge import actions
from outbox import crashpoints
from sync import fines
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


def _overlay(money: str) -> str:
    """The sum of `money` (an expression over payment `p`) of the local payments that still
    count against bill `b`; `amount - fine` is what counts against its amount, `fine` what
    counts against its fine (DESIGN 5.17): both parts follow the one rule."""
    return f"""
    COALESCE((SELECT SUM(CASE
                WHEN a.seq IS NULL THEN
                    CASE WHEN {outbox.counts_locally("o", "b.version")} THEN {money} ELSE 0 END
                WHEN a.kind = 'void' AND NOT {outbox.counts_locally("o", "b.version")}
                     AND {outbox.counts_locally("ae", "b.version")} THEN -({money})
                ELSE 0 END)
              FROM payments p JOIN {outbox.TABLE} o ON o.seq = p.seq
              LEFT JOIN {outbox.TABLE} ae ON ae.seq = {actions.in_force_seq("p.seq")}
              LEFT JOIN {actions.TABLE} a ON a.seq = ae.seq
              WHERE p.account = b.account AND p.bill_id = b.bill_id), 0)
"""


_PENDING_LOCAL = _overlay("p.amount - p.fine")
_PENDING_FINE = _overlay("p.fine")
# The fine still owed (sync.fines.owed, through the edge_fine function) given the rule of the
# day in ?2-?7 (NULL ?3: no rule in force) and the bill's amount still due `pdue`.
_FINE = (
    "CASE WHEN ?3 IS NULL OR {pdue} <= 0 THEN 0 ELSE"
    " edge_fine(?2, ?3, ?4, ?5, ?6, ?7, amount, due_date, {pdue}, fine_paid + {pf}) END"
)
_SELECT_VIEW = (
    "SELECT *, "
    + _FINE.format(pdue="max(0, amount - paid - pending_local)", pf="pending_fine")
    + " FROM (SELECT b.bill_id, b.account, b.governorate, b.cycle, b.name, b.address, b.meter,"
    " b.kwh, b.amount, b.paid, b.due_date, b.version, b.updated_at, b.credit, b.fine_paid,"
    + _PENDING_LOCAL
    + " AS pending_local,"
    + _PENDING_FINE
    + " AS pending_fine FROM bills b WHERE {where})"
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
    fine_paid: int  # what the centre counted towards fines on it (protocol 4)
    pending_local: int  # local payments still counting against the amount
    pending_fine: int  # local payments still counting against the fine
    fine: int  # the fine still owed on the inquiry's day (sync.fines.owed)

    @property
    def due(self) -> int:
        return max(0, self.amount - self.paid - self.pending_local) + self.fine

    @property
    def status(self) -> str:
        if self.due == 0:
            return "paid"
        paid = self.paid + self.pending_local + self.fine_paid + self.pending_fine
        return "unpaid" if paid == 0 else "partial"


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


def bill(
    conn: sqlite3.Connection,
    bill_id: str,
    day: date | None = None,
    published: list[fines.Rule] | None = None,
) -> BillView | None:
    """One bill with its overlay; its fine as of local `day` (None: no fine shown), under
    the `published` rules (None: as stored)."""
    sql = _SELECT_VIEW.format(where="b.bill_id = ?1")
    row = _run(conn, sql, (bill_id, *_rule_params(conn, day, published))).fetchone()
    return None if row is None else BillView._make(row)


class Due(NamedTuple):
    """What taking a payment needs of a bill: whose it is, what is due on it (the fine
    included) and how much of that is the fine (a payment covers it first)."""

    bill_id: str
    account: str
    due: int
    fine: int


_SELECT_DUE = (
    "WITH f AS MATERIALIZED (SELECT *, "
    + _FINE.format(pdue="pdue", pf="pf")
    + " AS fine FROM (SELECT b.bill_id, b.account, b.amount, b.due_date, b.fine_paid,"
    " max(0, b.amount - b.paid - " + _PENDING_LOCAL + ") AS pdue, " + _PENDING_FINE + " AS pf"
    " FROM bills b WHERE b.bill_id IN ({marks})))"
    " SELECT bill_id, account, pdue + fine, fine FROM f"
)


def dues_by_id(
    conn: sqlite3.Connection, bill_ids: Iterable[str], day: date | None = None
) -> dict[str, Due]:
    """The due amount (with the overlay and the fine of local `day`) of each known bill;
    the payment writer's one read."""
    # Numbered marks: ?1-?7 are the rule's (select_in numbers the ids after them).
    params = _rule_params(conn, day)
    ids = list(bill_ids)
    found: dict[str, Due] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join(f"?{8 + i}" for i in range(len(chunk)))
        for row in _run(conn, _SELECT_DUE.format(marks=marks), (None, *params, *chunk)):
            found[row[0]] = Due._make(row)
    return found


# The inquiry body's bills, built by SQLite's JSON functions in the same statement that reads
# them: the hot path then creates no Python object per bill. `due` and `status` restate
# BillView.due / BillView.status in SQL; tests/unit/test_overlay.py holds the two equal.
# One pass over the account's bills (adjacent in the table, in cycle order): `name`,
# `address` and `governorate` are bare columns beside max(cycle), so SQLite takes them from
# the latest bill. The uncorrelated "any local payment for this account?" subquery runs once
# per statement, so an account without local payments costs no per-bill overlay probe.
# The JSON comes back as UTF-8 bytes (CAST AS BLOB): it goes into the response unchanged.
_ACCOUNT_JSON = (
    "WITH v AS (SELECT *, max(0, amount - paid - pl) AS pdue FROM"
    " (SELECT b.*, CASE WHEN (SELECT 1 FROM payments WHERE account = ?1 LIMIT 1) IS NULL"
    "  THEN 0 ELSE " + _PENDING_LOCAL + " END AS pl,"
    "  CASE WHEN (SELECT 1 FROM payments WHERE account = ?1 LIMIT 1) IS NULL"
    "  THEN 0 ELSE " + _PENDING_FINE + " END AS pf"
    "  FROM bills b WHERE b.account = ?1 ORDER BY b.cycle)),"
    # LIMIT -1 keeps SQLite from flattening f into w (the fine's function would then run once
    # per reference to it) without MATERIALIZED's temporary table: f runs as a co-routine.
    " f AS (SELECT *, " + _FINE.format(pdue="pdue", pf="pf") + " AS fine FROM v LIMIT -1),"
    " w AS (SELECT *, pdue + fine AS due FROM f)"
    " SELECT CAST(json_group_array(json_object("
    "'bill_id', bill_id, 'cycle', cycle, 'amount', amount, 'paid', paid, 'pending_local', pl,"
    " 'fine', fine, 'due', due, 'due_date', due_date, 'status', CASE WHEN due = 0 THEN 'paid'"
    " WHEN paid + pl + fine_paid + pf = 0 THEN 'unpaid' ELSE 'partial' END, 'kwh', kwh,"
    " 'meter', meter, 'version', version, 'credit', credit)) AS BLOB), SUM(due), COUNT(*),"
    " max(cycle),"
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


def account_json(
    conn: sqlite3.Connection,
    account: str,
    day: date | None = None,
    published: list[fines.Rule] | None = None,
) -> AccountJson | None:
    """The account's bills; each bill's fine as of local `day` (None: no fine shown), under
    the `published` rules (None: as stored)."""
    bills_json, total, count, _, subscriber, governorate, credit = _run(
        conn, _ACCOUNT_JSON, (account, *_rule_params(conn, day, published))
    ).fetchone()
    if not count:
        return None
    return AccountJson(bills_json, int(total), subscriber, governorate, int(credit))


def bills_for_account(
    conn: sqlite3.Connection, account: str, day: date | None = None
) -> list[BillView]:
    sql = _SELECT_VIEW.format(where="b.account = ?1") + " ORDER BY cycle"
    rows = _run(conn, sql, (account, *_rule_params(conn, day)))
    return [BillView._make(row) for row in rows]


# --- late fines (DESIGN 5.17) ------------------------------------------------------------

_CHUNK = 500  # bill ids per dues query, far below SQLite's 32,766 variables
_RULES = (
    "SELECT governorate, version, effective, grace_days, fixed, percent_bp, cap FROM fine_rules"
)


def rules(conn: sqlite3.Connection) -> list[fines.Rule]:
    """Every version of the governorate's fine rule the centre published (fine_rules)."""
    return [
        fines.Rule(gov, version, date.fromisoformat(eff), grace, fixed, bp, cap)
        for gov, version, eff, grace, fixed, bp, cap in conn.execute(_RULES)
    ]


def store_rules(conn: sqlite3.Connection, published: list[fines.Rule]) -> bool:
    """Replace the stored rules with the centre's (a write job); False when nothing changed."""
    if sorted(rules(conn), key=lambda r: r.version) == sorted(published, key=lambda r: r.version):
        return False
    conn.execute("DELETE FROM fine_rules")
    conn.executemany(
        "INSERT INTO fine_rules (governorate, version, effective, grace_days, fixed,"
        " percent_bp, cap) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(r.governorate, r.version, r.effective.isoformat(), r.grace_days, r.fixed,
          r.percent_bp, r.cap) for r in published],
    )  # fmt: skip
    return True


def _rule_params(
    conn: sqlite3.Connection, day: date | None, published: list[fines.Rule] | None = None
) -> tuple[Any, ...]:
    """?2-?7 of the queries above: the day and the rule in force on it (NULLs: no fine);
    the rules as `published` (a caller's cached copy), else read here."""
    if day is None:
        return (None,) * 6
    rule = fines.rule_on(rules(conn) if published is None else published, day)
    if day is None or rule is None:
        return (None,) * 6
    return (day.isoformat(), rule.effective.isoformat(), rule.grace_days, rule.fixed,
            rule.percent_bp, rule.cap)  # fmt: skip


def _edge_fine(
    day: str, effective: str, grace: int, fixed: int, bp: int, cap: int | None, amount: int,
    due_date: str, principal_due: int, fine_paid: int,
) -> int:  # fmt: skip
    rule = _rule_of(effective, grace, fixed, bp, cap)
    return fines.owed(rule, _day_of(day), amount, due_date, principal_due, fine_paid)


# Every bill of a query passes the same rule and day: parse them once.
@functools.lru_cache(maxsize=16)
def _rule_of(effective: str, grace: int, fixed: int, bp: int, cap: int | None) -> fines.Rule:
    return fines.Rule("", 1, date.fromisoformat(effective), grace, fixed, bp, cap)


@functools.lru_cache(maxsize=16)
def _day_of(day: str) -> date:
    return date.fromisoformat(day)


def _run(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
    # sqlite3 connections take no weak references, so the function is registered the first
    # time a connection lacks it (any connection: the writer's, the reader's, a test's).
    try:
        return conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        if "no such function: edge_fine" not in str(exc):
            raise
        conn.create_function("edge_fine", 10, _edge_fine, deterministic=True)
        return conn.execute(sql, params)
