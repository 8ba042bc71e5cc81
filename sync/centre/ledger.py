"""The ledger of node entries in SQLite: recording one outbox batch (a write job), and
listing entries.

`record_batch` reads what sync.centre.verdicts asks for, lets it decide, and writes its plan:
the chain check comes before anything is written, and the batch's entries, verdicts, bill
changes and chain head are one write transaction (a `CentreStore.write` job).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from outbox.chain import GENESIS
from outbox.lookup import select_in
from sync import protocol
from sync.centre import corrections, readings, receipts, requests, verdicts
from sync.centre import fines as centre_fines
from sync.centre.config import Limits
from sync.centre.store import ChangeSeq
from sync.timefmt import iso

log = logging.getLogger(__name__)


def _known(conn: sqlite3.Connection, ids: list[str]) -> dict[str, verdicts.Stored]:
    # An entry's credit is its row in `credits` (source = the entry id), so a resend is
    # answered with the credit its first verdict gave.
    sql = (
        "SELECT e.id, e.node, e.hash, e.verdict, e.reason, e.version, COALESCE(c.amount, 0),"
        " e.fine FROM entries e LEFT JOIN credits c ON c.source = e.id WHERE e.id IN ({marks})"
    )
    return {row[0]: verdicts.Stored(*row[1:]) for row in select_in(conn, sql, ids)}


def _bills(conn: sqlite3.Connection, bill_ids: list[str]) -> dict[str, verdicts.BillState]:
    sql = (
        "SELECT bill_id, governorate, account, amount, paid, version, credit, due_date,"
        " fine_paid FROM bills WHERE bill_id IN ({marks})"
    )
    return {row[0]: [*row[1:6], False, *row[6:]] for row in select_in(conn, sql, bill_ids)}


def _facts(conn: sqlite3.Connection, found: verdicts.Scan, governorate: str) -> verdicts.Facts:
    originals = corrections.originals(conn, found.original_ids())
    meters_of: dict[str, set[str]] = {}
    sql = "SELECT account, meter FROM bills WHERE governorate = ? AND account IN ({marks})"
    for account, meter in select_in(conn, sql, found.accounts(), before=(governorate,)):
        meters_of.setdefault(account, set()).add(meter)
    sql = "SELECT bill_id, account FROM bills WHERE governorate = ? AND bill_id IN ({marks})"
    owners = dict(select_in(conn, sql, found.request_bills(), before=(governorate,)))
    # Oldest first: the dict keeps each meter's newest applied reading.
    sql = (
        "SELECT meter, reading FROM meter_readings WHERE governorate = ? AND verdict = 'applied'"
        " AND meter IN ({marks}) ORDER BY rowid"
    )
    last = dict(select_in(conn, sql, found.meters(), before=(governorate,)))
    return verdicts.Facts(
        originals, _bills(conn, found.bill_ids(originals)),
        centre_fines.rules_of(conn, governorate), meters_of, owners, last,
    )  # fmt: skip


def record_batch(
    conn: sqlite3.Connection,
    node: str,
    governorate: str,
    entries: Sequence[protocol.WireEntry],
    now: float,
    limits: Limits = verdicts.NO_LIMITS,
    duplicate_codes: frozenset[str] = frozenset(),
) -> protocol.Reply:
    """Record one batch from `node` (a write job); raises Refused with nothing written."""
    row = conn.execute("SELECT seq, hash FROM chain_heads WHERE node = ?", (node,)).fetchone()
    head: tuple[int, str] = (0, GENESIS) if row is None else (row[0], row[1])
    found = verdicts.scan(node, head, _known(conn, [e.id for e in entries]), entries)
    # Before anything is written: a code another node holds refuses the whole batch.
    receipts.claim_codes(
        conn, node, governorate, [p.receipt for p in found.payments.values() if p], now,
        duplicate_codes,
    )  # fmt: skip
    plan = verdicts.decide(found, _facts(conn, found, governorate), node, governorate, entries,
                           now, limits)  # fmt: skip
    _write(conn, node, plan, now)
    log.debug("node %s: %d entries, %d new, head %d", node, len(entries), len(plan.entries),
              plan.head[0])  # fmt: skip
    return plan.reply


def _insert(table: str, columns: Sequence[str]) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})")  # fmt: skip


def _write(conn: sqlite3.Connection, node: str, plan: verdicts.Plan, now: float) -> None:
    if plan.corrected:
        conn.executemany(
            "INSERT INTO corrections (target, entry, kind, created_at) VALUES (?, ?, ?, ?)",
            plan.corrected,
        )
    if plan.entries:
        conn.executemany(_insert("entries", verdicts.ENTRY_COLUMNS), plan.entries)
        conn.execute(
            "INSERT INTO chain_heads (node, seq, hash) VALUES (?, ?, ?)"
            " ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (node, *plan.head),
        )
    if plan.credits:
        conn.executemany(_insert("credits", verdicts.CREDIT_COLUMNS), plan.credits)
    if plan.readings:
        conn.executemany(_insert("meter_readings", readings.COLUMNS), plan.readings)
    if plan.requests:
        conn.executemany(_insert("requests", requests.COLUMNS), plan.requests)
    counter = ChangeSeq(conn)
    if plan.history:
        conn.executemany(
            _insert("request_history", requests.HISTORY_COLUMNS),
            [(*h, counter.next()) for h in plan.history],
        )
    if plan.bills:
        stamp = iso(now)
        conn.executemany(
            "UPDATE bills SET paid = ?, version = ?, credit = ?, fine_paid = ?, change_seq = ?,"
            " updated_at = ? WHERE bill_id = ?",
            [
                (state[3], state[4], state[6], state[8], counter.next(), stamp, bill_id)
                for bill_id, state in plan.bills
            ],
        )
    counter.save()


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
