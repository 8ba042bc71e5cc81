"""The centre's SQLite database: schema, the one writer (outbox.Writer), readers, bill feeds.

Writes go through `CentreStore.write` (group commit, WAL, synchronous=FULL); reads run on a
small pool of query-only aiosqlite connections, each on its own thread. A snapshot has its
own connection holding one read transaction for its whole stream, so it is consistent with
the cursor it ends with.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

import outbox
from outbox import readers
from sync import bill, protocol
from sync.centre import corrections, credits, feeds, fines, nonces, readings, receipts, requests
from sync.errors import SyncError

log = logging.getLogger(__name__)
T = TypeVar("T")

BILL_COLUMNS = ", ".join(bill.FIELDS)
SNAPSHOT_PAGE = 5_000

CENTRE_MIGRATIONS: tuple[outbox.Migration, ...] = (
    outbox.Migration(
        "centre.0001_bills",
        """
        CREATE TABLE bills (
            bill_id     TEXT PRIMARY KEY,
            account     TEXT NOT NULL,
            governorate TEXT NOT NULL,
            cycle       TEXT NOT NULL,
            name        TEXT NOT NULL,
            address     TEXT NOT NULL,
            meter       TEXT NOT NULL,
            kwh         INTEGER NOT NULL CHECK (kwh >= 0),
            amount      INTEGER NOT NULL CHECK (amount >= 0),
            paid        INTEGER NOT NULL CHECK (paid >= 0 AND paid <= amount),
            due_date    TEXT NOT NULL,
            version     INTEGER NOT NULL CHECK (version >= 1),
            updated_at  TEXT NOT NULL,
            change_seq  INTEGER NOT NULL  -- unique by construction: change_counter hands it out
        ) WITHOUT ROWID;
        CREATE INDEX bills_changes ON bills (governorate, change_seq);
        CREATE INDEX bills_account ON bills (governorate, account, cycle);
        CREATE TABLE change_counter (
            id   INTEGER PRIMARY KEY CHECK (id = 1),
            last INTEGER NOT NULL
        );
        INSERT INTO change_counter (id, last) VALUES (1, 0);
        CREATE TABLE credits (
            id          INTEGER PRIMARY KEY,
            source      TEXT NOT NULL UNIQUE,
            governorate TEXT NOT NULL,
            account     TEXT NOT NULL,
            bill_id     TEXT NOT NULL,
            amount      INTEGER NOT NULL CHECK (amount > 0),
            created_at  REAL NOT NULL
        );
        CREATE INDEX credits_account ON credits (governorate, account);
        CREATE TABLE online_payments (
            id       INTEGER PRIMARY KEY,
            bill_id  TEXT NOT NULL,
            amount   INTEGER NOT NULL CHECK (amount > 0),
            credit   INTEGER NOT NULL,
            version  INTEGER NOT NULL,
            paid_at  REAL NOT NULL
        );
        """,
    ),
    outbox.Migration(
        "centre.0002_entries",
        """
        CREATE TABLE chain_heads (
            node TEXT PRIMARY KEY,
            seq  INTEGER NOT NULL,
            hash TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE entries (
            id          TEXT NOT NULL UNIQUE,
            node        TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            payload     BLOB NOT NULL,
            prev_hash   TEXT NOT NULL,
            hash        TEXT NOT NULL,
            bill_id     TEXT,
            amount      INTEGER,
            verdict     TEXT NOT NULL CHECK (verdict IN ('applied', 'credited', 'rejected')),
            reason      TEXT,
            version     INTEGER,
            received_at REAL NOT NULL,
            UNIQUE (node, seq)
        );
        """,
    ),
    outbox.Migration("centre.nonces", nonces.MIGRATION_SQL),
    outbox.Migration("centre.receipts", receipts.MIGRATION_SQL),
    outbox.Migration("centre.bill_credit", credits.MIGRATION_SQL),
    outbox.Migration("centre.corrections", corrections.MIGRATION_SQL),
    outbox.Migration(
        "centre.clearing",
        """
        -- The clearing report reads a recording day; reconciliation one node's days since.
        CREATE INDEX entries_received ON entries (received_at);
        CREATE INDEX entries_node_received ON entries (node, received_at);
        """,
    ),
    outbox.Migration("centre.meter_readings", readings.MIGRATION_SQL),
    outbox.Migration("centre.requests", requests.MIGRATION_SQL),
    outbox.Migration("centre.fines", fines.MIGRATION_SQL),
)


class ChangeSeq:
    """Hands out change_seq values inside one write transaction; `save` stores the high mark."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.last = int(conn.execute("SELECT last FROM change_counter WHERE id = 1").fetchone()[0])
        self._start = self.last

    def next(self) -> int:
        self.last += 1
        return self.last

    def save(self) -> None:
        if self.last != self._start:
            self._conn.execute("UPDATE change_counter SET last = ? WHERE id = 1", (self.last,))


def migrate(conn: sqlite3.Connection) -> None:
    # Every batch updates hundreds of bills scattered over the table: a larger cache and a
    # rarer checkpoint halve the cost of each commit (measured: 38 ms -> 15 ms per 500).
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    outbox.apply_migrations(conn, CENTRE_MIGRATIONS)


def read_changes(
    conn: sqlite3.Connection, governorate: str, since: int, limit: int
) -> protocol.Changes:
    """Bills of `governorate` changed after `since`, in change_seq order, at most `limit`."""
    rows = conn.execute(
        f"SELECT {BILL_COLUMNS}, change_seq FROM bills WHERE governorate = ? AND change_seq > ?"
        " ORDER BY change_seq LIMIT ?",
        (governorate, since, limit + 1),
    ).fetchall()
    return feeds.changes_page(
        rows, requests.feed(conn, governorate, since, limit + 1), since, limit
    )


def _begin_snapshot(conn: sqlite3.Connection, governorate: str) -> tuple[int, sqlite3.Cursor]:
    # The counter and the bills are read in one transaction: nothing committed later is in
    # the stream, and everything committed later has a change_seq above the cursor.
    conn.execute("BEGIN")
    last = int(conn.execute("SELECT last FROM change_counter WHERE id = 1").fetchone()[0])
    # Every bill id starts with "{GOV}-": a range on the primary key reads the table in order,
    # twice as fast as walking the change index (1M bills: 6 s against 12 s). The unary +
    # keeps the planner off the governorate indexes.
    cursor = conn.execute(
        f"SELECT {BILL_COLUMNS} FROM bills WHERE bill_id > ? AND bill_id < ? AND +governorate = ?"
        " ORDER BY bill_id",
        (f"{governorate}-", f"{governorate}.", governorate),
    )
    return last, cursor


def _snapshot_page(cursor: sqlite3.Cursor, size: int) -> tuple[bytes, int]:
    rows = cursor.fetchmany(size)
    return feeds.pack_bills(rows), len(rows)


class CentreStore:
    """`await open()`, then `write(job)` for grouped write jobs, `read(fn)` for queries."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", readers: int = 2) -> None:
        self.path = path
        self.writer = outbox.Writer(
            str(path), synchronous=synchronous, on_open=migrate, name="centre-writer"
        )
        self._size = readers
        self._readers: list[aiosqlite.Connection] = []
        # The readers not running a read: a read waits here for one, as a job waited for a
        # worker of the thread pool this replaces.
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self.writer.start()
            for _ in range(self._size):
                conn = await readers.connect(str(self.path))
                self._readers.append(conn)
                self._idle.put_nowait(conn)
        except (OSError, sqlite3.Error, outbox.OutboxError) as exc:
            await self.close()
            raise SyncError(f"cannot open the centre database {self.path}: {exc}") from exc
        log.info("centre database %s open", self.path)

    async def close(self) -> None:
        await self.writer.close()
        conns, self._readers = self._readers, []
        self._idle = asyncio.Queue()
        for conn in conns:
            # Waits for a read still queued on it (its caller may have gone away).
            await conn.close()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.submit(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` on the first idle reader's thread."""
        if not self._readers:
            raise SyncError(f"the centre database {self.path} is not open")
        conn = await self._idle.get()
        try:
            return await readers.run(conn, fn)
        finally:
            # Back even if our caller was cancelled: a read still running on that thread
            # only delays the next one queued behind it there.
            self._idle.put_nowait(conn)

    async def changes_body(self, governorate: str, since: int, limit: int) -> bytes:
        """The encoded change-feed frame (read and packed off the event loop)."""

        def run(conn: sqlite3.Connection) -> bytes:
            found = read_changes(conn, governorate, since, limit)
            return protocol.encode_changes(found.changes, found.cursor, found.more, found.requests)

        return await self.read(run)

    async def snapshot(
        self, governorate: str, page: int = SNAPSHOT_PAGE
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        """The snapshot in pages: (packed bills, how many), then (b"", cursor) at the end.

        Use with `contextlib.aclosing` so an abandoned stream ends its read transaction.
        """
        # One connection (and so one thread) per stream, not a pooled reader: its read
        # transaction lasts as long as the client reads, and must not hold up other reads.
        conn = await readers.connect(str(self.path))
        try:
            last, cursor = await readers.run(conn, lambda c: _begin_snapshot(c, governorate))
            count = 0
            while True:
                chunk, n = await readers.run(conn, lambda _: _snapshot_page(cursor, page))
                if n == 0:
                    break
                count += n
                yield chunk, n
            yield b"", last
            log.info("snapshot of %s: %d bills, cursor %d", governorate, count, last)
        finally:
            # Queued behind a page still being read if the client went away; closing the
            # connection ends its read transaction.
            await conn.close()


def fetch_bill(conn: sqlite3.Connection, bill_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {BILL_COLUMNS} FROM bills WHERE bill_id = ?", (bill_id,)).fetchone()
    return None if row is None else dict(zip(bill.FIELDS, row, strict=True))
