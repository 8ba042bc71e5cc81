"""The node's one SQLite database: the writer (group commit, FULL sync) and the readers.

Point reads (inquiries) run on the event loop through one sqlite3 connection: on a 200k-bill
mirror an inquiry costs 48 µs there against 143 µs through aiosqlite, a bill by id 33 against
118 (tests/bench/bench_reads.py, medians). Heavier reads (status counts, reports) use
`read_slow`, on an aiosqlite connection's thread. Writes and fsyncs run on the writer thread.
"""

from __future__ import annotations

import logging
import sqlite3
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

    def __init__(self, data_dir: Path, *, synchronous: str = "FULL", max_batch: int = 512) -> None:
        self.path = data_dir / DB_NAME
        self.data_dir = data_dir
        self.writer = outbox.Writer(
            str(self.path), synchronous=synchronous, max_batch=max_batch, on_open=migrate
        )
        self._reader: sqlite3.Connection | None = None
        self._slow: aiosqlite.Connection | None = None

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
        # Last: aiosqlite's thread is not a daemon, so nothing may fail once it runs (a failed
        # connect stops it itself) or the process could not exit without close().
        self._slow = await readers.connect(str(self.path))
        log.info("database %s open in %.1f s", self.path, time.monotonic() - started)

    async def close(self) -> None:
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
        """A short read on the event loop (indexed lookups only)."""
        if self._reader is None:
            raise DatabaseError("the database is not open")
        return fn(self._reader)

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

        return await self.exclusive(run)
