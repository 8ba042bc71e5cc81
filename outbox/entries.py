"""Outbox entries: append inside the caller's transaction, claim in seq order, settle verdicts.

Every function takes an open sqlite3 connection; the caller owns the transaction, so a
payment and its outbox entry commit (or vanish) together.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from outbox.chain import GENESIS, Linked, entry_hash, verify_link
from outbox.ids import new_entry_id
from outbox.lookup import select_in
from outbox.retry import RetryPolicy

PENDING, DELIVERED, REJECTED = "pending", "delivered", "rejected"
VERDICTS = {
    "applied": DELIVERED,
    "duplicate": DELIVERED,
    "credited": DELIVERED,
    "rejected": REJECTED,
}

_SELECT = (
    "SELECT seq, id, kind, payload, created_at, state, attempts, next_attempt_at, last_error,"
    " verdict, reason, version, settled_at, prev_hash, hash FROM outbox_entries"
)


@dataclass(frozen=True)
class Entry:
    seq: int
    id: str
    kind: str
    payload: bytes
    created_at: float
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    verdict: str | None
    reason: str | None
    version: int | None
    settled_at: float | None
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[object, ...]) -> Entry:
        return cls(*row)


@dataclass(frozen=True)
class Result:
    """The centre's verdict on one entry."""

    seq: int
    id: str
    verdict: str
    reason: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class Stats:
    pending: int
    oldest_pending_age_s: float | None
    rejected: int
    delivered: int
    last_seq: int


def append(
    conn: sqlite3.Connection,
    node: str,
    kind: str,
    payload: bytes,
    *,
    entry_id: str | None = None,
    now: float | None = None,
) -> Entry:
    """Add an entry after the last one, chained to it. Must run inside a write transaction."""
    created = time.time() if now is None else now
    return append_many(
        conn, [(kind, payload, entry_id or new_entry_id(node, now=created), created)]
    )[0]


def append_many(
    conn: sqlite3.Connection, specs: Sequence[tuple[str, bytes, str, float]]
) -> list[Entry]:
    """Append `(kind, payload, entry_id, created_at)` entries in order, each chained to the last.

    One read of the chain head and one executemany, however many entries: this is what lets
    a group commit of hundreds of payments cost little more than one.
    """
    if not conn.in_transaction:
        raise RuntimeError("outbox.append must run inside the caller's write transaction")
    last = conn.execute("SELECT seq, hash FROM outbox_entries ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
    out: list[Entry] = []
    for kind, payload, eid, created in specs:
        seq += 1
        digest = entry_hash(prev_hash, seq, eid, kind, payload)
        out.append(Entry(seq, eid, kind, payload, created, PENDING, 0, 0.0, None, None, None,
                         None, None, prev_hash, digest))  # fmt: skip
        prev_hash = digest
    conn.executemany(
        "INSERT INTO outbox_entries (seq, id, kind, payload, created_at, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(e.seq, e.id, e.kind, e.payload, e.created_at, e.prev_hash, e.hash) for e in out],
    )
    return out


def adopt(conn: sqlite3.Connection, entries: Iterable[Linked], now: float) -> int:
    """Append entries made elsewhere (another copy of this outbox), pending, after the last one.

    Each must chain onto the one before it exactly (ChainBroken otherwise): their hashes are
    kept, so the chain goes on as it was. For a restore that continues after the centre's
    head; the caller settles them in the same transaction.
    """
    if not conn.in_transaction:
        raise RuntimeError("outbox.adopt must run inside the caller's write transaction")
    last = conn.execute("SELECT seq, hash FROM outbox_entries ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
    rows = []
    for entry in entries:
        verify_link(prev_hash, seq, entry)
        seq, prev_hash = entry.seq, entry.hash
        rows.append((entry.seq, entry.id, entry.kind, entry.payload, now, entry.prev_hash,
                     entry.hash))  # fmt: skip
    conn.executemany(
        "INSERT INTO outbox_entries (seq, id, kind, payload, created_at, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)


def get(conn: sqlite3.Connection, entry_id: str) -> Entry | None:
    row = conn.execute(_SELECT + " WHERE id = ?", (entry_id,)).fetchone()
    return None if row is None else Entry.from_row(row)


def get_many(conn: sqlite3.Connection, seqs: Iterable[int]) -> dict[int, Entry]:
    """The entries with these seqs, by seq (chunked IN lists: any number of them)."""
    rows = select_in(conn, _SELECT + " WHERE seq IN ({marks})", seqs)
    return {int(row[0]): Entry.from_row(row) for row in rows}


def oldest_pending_at(conn: sqlite3.Connection) -> float | None:
    """When the oldest pending entry was made (None: nothing pending); the head of an index."""
    row = conn.execute(
        "SELECT created_at FROM outbox_entries WHERE state = 'pending' ORDER BY seq LIMIT 1"
    ).fetchone()
    return None if row is None else float(row[0])


def claim(conn: sqlite3.Connection, limit: int, *, after_seq: int = 0) -> list[Entry]:
    """The next pending entries in seq order (the centre needs them in order, no gaps);
    `after_seq` pages through them (a transfer file takes all of them)."""
    rows = conn.execute(
        _SELECT + " WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [Entry.from_row(row) for row in rows]


def pending_range(conn: sqlite3.Connection) -> tuple[int, int, int, str]:
    """(how many, first seq, last seq, hash of the last) of the pending entries; zeros and ""
    when none are."""
    count, first, last = conn.execute(
        "SELECT COUNT(*), MIN(seq), MAX(seq) FROM outbox_entries WHERE state = 'pending'"
    ).fetchone()
    if not count:
        return 0, 0, 0, ""
    return int(count), int(first), int(last), hash_at(conn, int(last)) or ""


def pending_through(conn: sqlite3.Connection, seq: int) -> int:
    """How many entries up to `seq` are still pending (of a range handed over, what remains)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending' AND seq <= ?", (seq,)
    ).fetchone()
    return int(row[0])


def next_attempt_at(conn: sqlite3.Connection) -> float | None:
    """When the head of the queue may be tried again (None: nothing pending)."""
    row = conn.execute(
        "SELECT next_attempt_at FROM outbox_entries WHERE state = 'pending' ORDER BY seq LIMIT 1"
    ).fetchone()
    return None if row is None else float(row[0])


def settle(conn: sqlite3.Connection, results: Iterable[Result], *, now: float | None = None) -> int:
    """Record the centre's verdicts; return how many entries changed state.

    An entry already settled keeps its first verdict: a late or repeated answer changes nothing.
    """
    settled_at = time.time() if now is None else now
    rows = []
    for result in results:
        state = VERDICTS.get(result.verdict)
        if state is None:
            raise ValueError(f"unknown verdict {result.verdict!r} for seq {result.seq}")
        rows.append(
            (
                state,
                result.verdict,
                result.reason,
                result.version,
                settled_at,
                result.seq,
                result.id,
            )
        )
    # rowcount, not total_changes: rows that triggers of the caller's schema change too
    # (the node's offline totals) are not entries settled.
    cur = conn.executemany(
        "UPDATE outbox_entries SET state = ?, verdict = ?, reason = ?, version = ?,"
        " settled_at = ?, last_error = NULL WHERE seq = ? AND id = ? AND state = 'pending'",
        rows,
    )
    return max(0, cur.rowcount)


def reopen(conn: sqlite3.Connection, after_seq: int) -> int:
    """Make every settled entry after `after_seq` pending again, its verdict cleared, so the
    replayer sends it once more: for a centre that lost them (its database put back older).
    The centre records each by id, so an entry it does hold still counts once."""
    if not conn.in_transaction:
        raise RuntimeError("outbox.reopen must run inside the caller's write transaction")
    cur = conn.execute(
        "UPDATE outbox_entries SET state = 'pending', verdict = NULL, reason = NULL,"
        " version = NULL, settled_at = NULL, attempts = 0, next_attempt_at = 0,"
        " last_error = NULL WHERE seq > ? AND state != 'pending'",
        (after_seq,),
    )
    return max(0, cur.rowcount)


def record_failure(
    conn: sqlite3.Connection,
    seqs: Iterable[int],
    error: str,
    policy: RetryPolicy,
    *,
    now: float | None = None,
    delay: float | None = None,
) -> float:
    """Count a failed attempt on these entries; return when the next attempt is due."""
    at = time.time() if now is None else now
    seq_list = list(seqs)
    if not seq_list:
        return at
    row = conn.execute(
        "SELECT attempts FROM outbox_entries WHERE seq = ?", (min(seq_list),)
    ).fetchone()
    failures = (int(row[0]) if row else 0) + 1
    due = at + (policy.delay(failures) if delay is None else delay)
    conn.executemany(
        "UPDATE outbox_entries SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
        " WHERE seq = ? AND state = 'pending'",
        [(error[:500], due, seq) for seq in seq_list],
    )
    return due


def stats(conn: sqlite3.Connection, *, now: float | None = None) -> Stats:
    """Counts from the partial indexes; seq is dense (never deleted), so delivered is the rest."""
    at = time.time() if now is None else now
    pending = conn.execute("SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'").fetchone()
    rejected = conn.execute(
        "SELECT COUNT(*) FROM outbox_entries WHERE state = 'rejected'"
    ).fetchone()
    oldest = oldest_pending_at(conn)
    last_seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox_entries").fetchone()[0])
    return Stats(
        pending=int(pending[0]),
        oldest_pending_age_s=None if oldest is None else max(0.0, at - oldest),
        rejected=int(rejected[0]),
        delivered=last_seq - int(pending[0]) - int(rejected[0]),
        last_seq=last_seq,
    )


def iter_entries(
    conn: sqlite3.Connection, *, after_seq: int = 0, chunk: int = 1000
) -> Iterator[Entry]:
    """Every entry in seq order, read in chunks (for chain verification and audits)."""
    while True:
        rows = conn.execute(
            _SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, chunk),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            entry = Entry.from_row(row)
            yield entry
        after_seq = int(rows[-1][0])


def rejected(conn: sqlite3.Connection, limit: int) -> list[Entry]:
    """The newest rejected entries first (an operator's queue)."""
    rows = conn.execute(
        _SELECT + " WHERE state = 'rejected' ORDER BY seq DESC LIMIT ?", (limit,)
    ).fetchall()
    return [Entry.from_row(row) for row in rows]


def delivered_since(conn: sqlite3.Connection, since: float) -> int:
    """How many entries the centre settled as delivered at or after `since`."""
    row = conn.execute(
        "SELECT COUNT(*) FROM outbox_entries WHERE state = 'delivered' AND settled_at >= ?",
        (since,),
    ).fetchone()
    return int(row[0])


def hash_at(conn: sqlite3.Connection, seq: int) -> str | None:
    """The chain hash of entry `seq` (None: no such entry)."""
    row = conn.execute("SELECT hash FROM outbox_entries WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else str(row[0])


def first_id(conn: sqlite3.Connection) -> str | None:
    """The id of the first entry ever appended (names the node that made this outbox)."""
    row = conn.execute("SELECT id FROM outbox_entries ORDER BY seq LIMIT 1").fetchone()
    return None if row is None else str(row[0])


TABLE = "outbox_entries"


def counts_locally(entry: str, version: str) -> str:
    """SQL condition: entry alias `entry` is not yet confirmed at the bill version `version`.

    A local payment keeps counting against its bill until the centre has delivered it and
    the mirror holds a version at least the one the centre's verdict named. Rejected
    entries keep counting: the cashier holds the money until an operator resolves them.
    For joins: `{TABLE} {entry} ON {entry}.seq = <your seq column>`.
    """
    return (
        f"({entry}.state != 'delivered' OR {entry}.version IS NULL OR {entry}.version > {version})"
    )
