"""The node's one SQLite database: the writer (group commit, FULL sync) and the readers.

Point reads (inquiries) run on the event loop through one sqlite3 connection: on a 200k-bill
mirror an inquiry costs 48 µs there against 143 µs through aiosqlite, a bill by id 33 against
118 (tests/bench/bench_reads.py, medians). Heavier reads (status counts, reports) use
`read_slow`, on an aiosqlite connection's thread. Writes and fsyncs run on the writer thread.

The loop's reader holds one read transaction (a snapshot) across many reads: SQLite then
takes and drops its WAL read lock once per snapshot, not twice per statement. The snapshot
ends when the writer ends a transaction (before any of its callers is answered: a 201 is
sent only once the next read sees its payment) and at the latest `SNAPSHOT_S` after it began
(commits of other processes). A held snapshot keeps checkpoints from restarting the WAL, so
once the WAL passes `WAL_LIMIT` the readers let go for one TRUNCATE checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

import outbox
from edge.errors import DatabaseError
from edge.schema import EDGE_MIGRATIONS
from outbox import readers

log = logging.getLogger(__name__)
T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

DB_NAME = "edge.db"
SNAPSHOT_S = 0.1  # the longest the loop's reader keeps one snapshot (others' commits)
# The WAL's size past which the readers step aside for a TRUNCATE checkpoint: twice what
# SQLite's own checkpoint (every 1,000 pages) leaves when nothing holds it back.
WAL_LIMIT = 8 * 1024 * 1024
MIGRATIONS = (*outbox.OUTBOX_MIGRATIONS, *EDGE_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> None:
    # Each step that can take seconds on a big mirror is logged with its time: no silent
    # gap between "starting" and "serving on".
    started = time.monotonic()
    applied = outbox.apply_migrations(conn, MIGRATIONS)
    log.info("migrations: %d applied in %.1f s", len(applied), time.monotonic() - started)
    started = time.monotonic()
    result = conn.execute("PRAGMA quick_check").fetchone()
    if result is None or result[0] != "ok":
        raise DatabaseError(f"the database failed its integrity check: {result}")
    log.info("integrity check (quick_check) ok in %.1f s", time.monotonic() - started)


def _reader(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA query_only=ON")
    return conn


class Database:
    """Open with `await db.open()`; `write` for grouped write jobs, `read` for point reads."""

    def __init__(
        self, data_dir: Path, *, synchronous: str = "FULL", max_batch: int = 512,
        snapshot_s: float = SNAPSHOT_S, wal_limit: int = WAL_LIMIT,
    ) -> None:  # fmt: skip
        self.path = data_dir / DB_NAME
        self.data_dir = data_dir
        self.writer = outbox.Writer(
            str(self.path), synchronous=synchronous, max_batch=max_batch, on_open=migrate,
            on_answer=self._writes_ended,
        )  # fmt: skip
        self.snapshot_s = snapshot_s
        self.wal_limit = wal_limit
        self.snapshots = 0  # read transactions begun (tests and benchmarks read it)
        self.wal_checkpoints = 0  # TRUNCATE checkpoints the WAL's size asked for
        self._wal = f"{self.path}-wal"
        self._reader: sqlite3.Connection | None = None
        self._slow: aiosqlite.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._snapshot: asyncio.TimerHandle | None = None  # ends the held snapshot
        self._held_off = 1  # > 0: reads run in autocommit (not open; a checkpoint running)
        self._truncate: asyncio.Task[None] | None = None
        self._wal_retry_at = 0  # after a failed checkpoint: the size that asks again
        self._wal_trouble = ""  # the last failure logged (one line per new kind of failure)

    async def open(self) -> None:
        started = time.monotonic()
        log.info("opening the database %s", self.path)
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the data directory {self.data_dir}: {exc}") from exc
        try:
            await self.writer.start()
        except (OSError, sqlite3.Error, outbox.OutboxError, DatabaseError) as exc:
            raise DatabaseError(f"cannot open or migrate the database {self.path}: {exc}") from exc
        self._reader = _reader(str(self.path))
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._held_off -= 1
        # Last: aiosqlite's thread is not a daemon, so nothing may fail once it runs (a failed
        # connect stops it itself) or the process could not exit without close().
        self._slow = await readers.connect(str(self.path))
        log.info("database %s open in %.1f s", self.path, time.monotonic() - started)

    async def close(self) -> None:
        self._held_off += 1
        self._end_snapshot()
        if self._truncate is not None:
            await asyncio.wait([self._truncate])
        await self.writer.close()
        if self._slow is not None:
            slow, self._slow = self._slow, None
            await slow.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.submit(fn)

    async def write_batched(self, batcher: outbox.Batcher[ItemT, ResultT], item: ItemT) -> ResultT:
        """Hand `item` to `batcher(conn, items)` together with the others of its commit."""
        return await self.writer.submit_batched(batcher, item)

    async def exclusive(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.exclusive(fn)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A short read on the event loop (indexed lookups only), in the held snapshot."""
        conn = self._reader
        if conn is None:
            raise DatabaseError("the database is not open")
        if self._snapshot is None and not self._held_off:
            self._begin_snapshot(conn)
        return fn(conn)

    def _begin_snapshot(self, conn: sqlite3.Connection) -> None:
        if threading.get_ident() != self._loop_thread or self._loop is None:
            return  # a read from another thread: autocommit, as it cannot own the timer
        # Deferred: the snapshot is taken by the first SELECT inside, now.
        conn.execute("BEGIN")
        self._snapshot = self._loop.call_later(self.snapshot_s, self._end_snapshot)
        self.snapshots += 1

    def _end_snapshot(self) -> None:
        if self._snapshot is None:
            return
        self._snapshot.cancel()
        self._snapshot = None
        if self._reader is not None and self._reader.in_transaction:
            self._reader.execute("COMMIT")  # a read transaction: releases the read lock only

    def _writes_ended(self) -> None:
        """The writer's hook, on the loop before it answers a transaction's callers."""
        self._end_snapshot()
        if self._truncate is None and not self._held_off:
            size = self._wal_size()
            if size > max(self.wal_limit, self._wal_retry_at):
                self._truncate = asyncio.ensure_future(self._truncate_wal(size))

    def _wal_size(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except OSError:
            return 0

    async def _truncate_wal(self, size: int) -> None:
        kind = detail = ""
        try:
            busy, log_pages, done = await self.checkpoint("TRUNCATE")
            self.wal_checkpoints += 1
            if busy:  # another process's reader (a backup, a tool) holds the WAL
                kind, detail = "busy", f"could not finish ({done} of {log_pages} pages copied)"
        except Exception as exc:
            kind = detail = f"failed: {exc}"
        finally:
            self._truncate = None
        # A failure asks again once the WAL has grown by another limit, not at every commit,
        # and is logged once until it changes or a checkpoint succeeds.
        self._wal_retry_at = size + self.wal_limit if kind else 0
        if kind and kind != self._wal_trouble:
            log.warning("WAL checkpoint at %d bytes %s; retried as it grows", size, detail)
        self._wal_trouble = kind

    async def read_slow(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read that may scan (counts, reports), on the aiosqlite connection's thread."""
        if self._slow is None:
            raise DatabaseError("the database is not open")
        return await readers.run(self._slow, fn)

    async def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"bad checkpoint mode {mode!r}")

        def run(conn: sqlite3.Connection) -> tuple[int, int, int]:
            row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            return int(row[0]), int(row[1]), int(row[2])

        # No held snapshot meanwhile: a checkpoint cannot copy past a reader's snapshot nor
        # restart the WAL under one; the loop's reads run in autocommit until it is done.
        self._held_off += 1
        self._end_snapshot()
        try:
            return await self.exclusive(run)
        finally:
            self._held_off -= 1
