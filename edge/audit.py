"""The audit trail: who read which subscriber, and every admin action (DESIGN 5.10).

A request appends one tuple to an in-memory buffer (no await, no I/O); one loop writes the
buffer through the writer, one write job per flush, and prunes rows past `keep_days`.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, NamedTuple

from edge.db import Database
from edge.tasks import Supervisor
from outbox import RetryPolicy
from sync.loop import Loop
from sync.timefmt import iso, parse_iso

log = logging.getLogger(__name__)

# Every action the trail records (DESIGN 5.10 lists what each one means).
ACCOUNT_READ, BILL_READ, PAYMENT_READ = "account.read", "bill.read", "payment.read"
PAYMENT_LIST = "payment.list"
RECEIPT_READ = "receipt.read"  # the printable receipt names the subscriber
ADMIN_REPLAY, ADMIN_REJECTED = "admin.replay", "admin.rejected.list"
AUDIT_READ = "audit.read"
# Corrections (DESIGN 5.12): a void, and an admin's resolution of a rejected payment (its
# action once the body named it; `admin.rejected.resolve` for one refused before that).
PAYMENT_VOID = "payment.void"
ADMIN_RESOLVE, ADMIN_REFUND = "admin.rejected.resolve", "admin.rejected.refund"
ADMIN_RETARGET = "admin.rejected.retarget"
REPORT_READ, ADMIN_RECONCILE = "report.read", "admin.reconcile"
# Subscribers' requests (DESIGN 5.16): one read, and the list of an account's.
REQUEST_READ, REQUEST_LIST = "request.read", "request.list"
# `edge restore --resync` and `edge resend` (DESIGN 5.20): the entries recorded from the
# centre, and those made pending again for a centre that lost them.
RESTORE_RESYNC, OUTBOX_RESEND = "restore.resync", "outbox.resend"
ACTIONS = (ACCOUNT_READ, BILL_READ, PAYMENT_READ, PAYMENT_LIST, RECEIPT_READ, ADMIN_REPLAY,
           ADMIN_REJECTED, AUDIT_READ, PAYMENT_VOID, ADMIN_RESOLVE, ADMIN_REFUND,
           ADMIN_RETARGET, REPORT_READ, ADMIN_RECONCILE, REQUEST_READ,
           REQUEST_LIST, RESTORE_RESYNC, OUTBOX_RESEND)  # fmt: skip

FLUSH_EVERY_S = 0.5
FLUSH_ROWS = 1000  # a buffer this full wakes the loop before its timer
MAX_BUFFERED = 50_000  # ~15 s of a busy node's inquiries, ~12 MB; beyond, rows are dropped
PRUNE_EVERY_S = 3600.0
PRUNE_CHUNK = 2000  # rows per delete transaction: the writer is never held for long
PRUNE_CHUNKS_PER_STEP = 50
DROPS_LOGGED_EVERY_S = 60.0
MAX_SEQ = 2**63 - 1
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")

# (at, token, address, action, object, account, status): what a request appends.
Row = tuple[float, str, str, str, str | None, str | None, int]

_INSERT = "INSERT INTO audit_log (at, token, address, action, object, account, status) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
# Rows per statement: 896 parameters, under the 999 of SQLite builds older than 3.32.
CHUNK = 128
_INSERT_CHUNK = _INSERT + ", ".join([_ROW] * CHUNK)


def insert(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """All `rows`, in order (so `seq` follows the buffer's order).

    CHUNK rows a statement, the rest through executemany: half the CPU of executemany alone
    (1.0 against 2.0 µs a row), and the writer thread gives up and takes back the GIL once
    per statement, not once per row, so it interrupts the event loop far less often.
    """
    whole = len(rows) - len(rows) % CHUNK
    for start in range(0, whole, CHUNK):
        conn.execute(_INSERT_CHUNK, [value for row in rows[start : start + CHUNK] for value in row])
    if whole < len(rows):
        conn.executemany(_INSERT + _ROW, rows[whole:])


def prune_chunk(conn: sqlite3.Connection, cutoff: float, limit: int = PRUNE_CHUNK) -> int:
    """Delete up to `limit` rows recorded before `cutoff`; the number deleted."""
    # By time, not by seq: one row stamped by a clock far in the future (after a power cut)
    # must not hold back the pruning of every row after it.
    cur = conn.execute(
        "DELETE FROM audit_log WHERE seq IN"
        " (SELECT seq FROM audit_log WHERE at < ? ORDER BY at LIMIT ?)",
        (cutoff, limit),
    )
    return cur.rowcount


@dataclass(frozen=True)
class Query:
    """A filter over the trail; rows come in `seq` order, after `after`."""

    since: float = -math.inf
    until: float = math.inf
    token: str | None = None
    account: str | None = None
    after: int = 0
    limit: int | None = None


class Entry(NamedTuple):
    """One stored row (`at` as a Unix time)."""

    seq: int
    at: float
    token: str
    address: str
    action: str
    object: str | None
    account: str | None
    status: int

    def as_json(self) -> dict[str, Any]:
        return self._asdict() | {"at": iso(self.at)}


def seq_window(conn: sqlite3.Connection, q: Query) -> tuple[int, int] | None:
    """(first, last) seq that can match `q`'s time window (None: none can), from the `at`
    index: the scan then reads only that range, whatever the clock did in between."""
    first, last = q.after + 1, MAX_SEQ
    if q.since != -math.inf:
        row = conn.execute("SELECT min(seq) FROM audit_log WHERE at >= ?", (q.since,)).fetchone()
        if row[0] is None:
            return None
        first = max(first, row[0])
    if q.until != math.inf:
        row = conn.execute("SELECT max(seq) FROM audit_log WHERE at < ?", (q.until,)).fetchone()
        if row[0] is None:
            return None
        last = row[0]
    return (first, last) if first <= last else None


def select(conn: sqlite3.Connection, q: Query) -> Iterator[Entry]:
    """The rows matching `q`, in `seq` order."""
    window = seq_window(conn, q)
    if window is None:
        return
    where, args = ["seq BETWEEN ? AND ?"], list[object](window)
    if q.since != -math.inf:
        where.append("at >= ?")
        args.append(q.since)
    if q.until != math.inf:
        where.append("at < ?")
        args.append(q.until)
    if q.token is not None:
        where.append("token = ?")
        args.append(q.token)
    if q.account is not None:
        where.append("account = ?")
        args.append(q.account)
    sql = (
        f"SELECT {', '.join(Entry._fields)} FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq"
    )
    if q.limit is not None:
        sql += " LIMIT ?"
        args.append(q.limit)
    for row in conn.execute(sql, args):
        yield Entry._make(row)


def parse_time(value: str, tz: tzinfo, *, end: bool = False) -> float:
    """`YYYY-MM-DD` (a local day in `tz`; `end`: the moment it ends) or ISO 8601 (naive: UTC).

    ValueError when it is neither, or is out of range.
    """
    try:
        if _DAY.match(value):
            day = datetime.fromisoformat(value).replace(tzinfo=tz)
            return (day + timedelta(days=1) if end else day).timestamp()
        return parse_iso(value)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"{value!r} is out of range") from exc


class Trail:
    """The buffer and its counters; `record()` is the request path, `flush()` the loop's.

    Made without I/O; `start()` (after the database opens) starts the loop under the
    supervisor, `close()` (before the database closes) stops it and flushes the tail.
    """

    def __init__(
        self, db: Database, tasks: Supervisor, *, enabled: bool = True, keep_days: int = 400,
        clock: Callable[[], float] = time.time, max_buffered: int = MAX_BUFFERED,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:  # fmt: skip
        self.db, self.tasks, self.clock = db, tasks, clock
        self.enabled, self.keep_days = enabled, keep_days
        self.max_buffered, self.flush_rows = max_buffered, flush_rows
        self.rows: list[Row] = []
        self.written = 0
        self.dropped = 0
        self.loop: AuditLoop | None = None
        self._unlogged_drops = 0
        self._drops_logged_at = -math.inf
        self._pruned_at = -math.inf  # monotonic
        self._prune_pending = False

    # --- the request path: no await, no I/O, one tuple -------------------------------------

    def record(
        self, token: str, address: str, action: str, obj: str | None, account: str | None,
        status: int, *, urgent: bool = False,
    ) -> None:  # fmt: skip
        if not self.enabled:
            return
        rows = self.rows
        if len(rows) >= self.max_buffered:
            self._drop(1)
            return
        rows.append((self.clock(), token, address, action, obj, account, status))
        if (urgent or len(rows) == self.flush_rows) and self.loop is not None:
            self.loop.wake()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._unlogged_drops += count
        self.report_drops()

    def report_drops(self) -> None:
        """One line a minute at most while rows are dropped (the writer is stuck or slow)."""
        now = time.monotonic()
        if self._unlogged_drops and now - self._drops_logged_at >= DROPS_LOGGED_EVERY_S:
            log.warning(
                "audit buffer full (%d rows): dropped %d audit rows since the last report,"
                " %d in all", self.max_buffered, self._unlogged_drops, self.dropped,
            )  # fmt: skip
            self._unlogged_drops, self._drops_logged_at = 0, now

    # --- the loop's side ---------------------------------------------------------------------

    @property
    def behind(self) -> bool:
        """A full buffer or an unfinished prune: the loop's next step starts at once."""
        return len(self.rows) >= self.flush_rows or self._prune_pending

    async def flush(self) -> int:
        """Write every buffered row in one write job; the number written."""
        rows, self.rows = self.rows, []
        if not rows:
            return 0
        try:
            await self.db.write(lambda c: insert(c, rows))
        except Exception:
            # Not written (the transaction rolled back): back in front, still bounded.
            self.rows[:0] = rows
            if len(self.rows) > self.max_buffered:
                over = len(self.rows) - self.max_buffered
                del self.rows[self.max_buffered :]
                self._drop(over)
            raise
        self.written += len(rows)
        return len(rows)

    async def prune(self, *, force: bool = False) -> int:
        """Delete rows older than keep_days, at most once an hour, in bounded chunks."""
        if not self.keep_days:
            return 0
        mono = time.monotonic()
        if not (force or self._prune_pending or mono - self._pruned_at >= PRUNE_EVERY_S):
            return 0
        self._pruned_at, self._prune_pending = mono, False
        cutoff = self.clock() - self.keep_days * 86400.0
        deleted = 0
        for _ in range(PRUNE_CHUNKS_PER_STEP):
            n = await self.db.write(lambda c: prune_chunk(c, cutoff))
            deleted += n
            if n < PRUNE_CHUNK:
                break
        else:
            self._prune_pending = True  # more to delete: the next step goes on
        if deleted:
            log.info("pruned %d audit rows older than %d days", deleted, self.keep_days)
        return deleted

    async def start(self) -> None:
        if not self.enabled:
            log.warning("audit.enabled is false: reads of personal data are not recorded")
            return
        self.loop = AuditLoop(self)
        self.tasks.start("audit", self.loop.run)

    async def close(self) -> None:
        """Stop the loop, then flush once more (litestream's rule): nothing buffered is lost."""
        loop, self.loop = self.loop, None
        if loop is None:
            return
        loop.stop()
        await self.tasks.stop("audit", cancel=False)
        try:
            written = await self.flush()
        except Exception as exc:
            self._drop(len(self.rows))
            self.rows = []
            log.error("the last audit flush failed; its rows are lost: %s", exc)
            return
        log.info("audit closed; %d rows written in the last flush", written)


class AuditLoop(Loop[int]):
    """Flush every FLUSH_EVERY_S (sooner when the buffer fills or an admin acts), prune hourly."""

    def __init__(self, trail: Trail) -> None:
        # A failed flush is retried within seconds: the buffer holds only ~15 s of reads.
        super().__init__("audit", policy=RetryPolicy(base_s=0.5, cap_s=5.0), logger=log)
        self.trail = trail

    async def step(self) -> int:
        written = await self.trail.flush()
        await self.trail.prune()
        self.trail.report_drops()
        return written

    def pace(self, result: int) -> float:
        trail = self.trail
        return 0.0 if trail.behind else FLUSH_EVERY_S
