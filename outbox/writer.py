"""The single writer connection, on its own thread, with group commit.

Jobs submitted while a commit is in flight are gathered into the next transaction: one
`BEGIN IMMEDIATE`, one SAVEPOINT per job (so one job's error never fails the others), one
`COMMIT` and so one fsync for all of them. Each caller is answered only after that commit
has returned. The event loop never waits on the disk. aiosqlite, which the readers use, has
no group commit (one transaction, so one fsync, per call): that is why this writer is ours.

`submit_batched(batcher, item)` goes further: all items for equal `Batcher`s in one
transaction are handed to a single `batcher(conn, items)` call that returns one result or
exception per item, so per-statement costs are paid once per commit rather than once per item.
aiosqlite offers one transaction per call and no group commit, which is why this is ours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from outbox.errors import StorageError, WriterClosed
from outbox.private import database as private_database

log = logging.getLogger(__name__)
T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
Job = Callable[[sqlite3.Connection], T]


class Batcher(Generic[ItemT, ResultT]):
    """A write job over every item of one commit: `batcher(conn, items)` -> one result each.

    An item's refusal is returned (an exception instance), not raised. The writer groups
    items by batcher *equality*, so make subclasses frozen dataclasses of their settings:
    two equal batchers share a commit even when a caller builds a new one per request.
    """

    def __call__(
        self, conn: sqlite3.Connection, items: list[ItemT]
    ) -> Sequence[ResultT | BaseException]:
        raise NotImplementedError


_SQLITE_IOERR, _SQLITE_FULL = 10, 13


def storage_error(exc: sqlite3.Error) -> StorageError | None:
    """The StorageError this sqlite error means, or None if it is not a disk problem."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    if code & 0xFF == _SQLITE_FULL:
        return StorageError(f"disk full: {exc}", full=True)
    if code & 0xFF == _SQLITE_IOERR:
        return StorageError(f"disk I/O error: {exc}", full=False)
    return None


@dataclass
class _Item:
    fn: Callable[..., Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    exclusive: bool
    batched: bool = False
    arg: Any = None
    result: Any = None
    error: BaseException | None = field(default=None)


_STOP = object()


def connect(path: str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection set up the way every writer of ours needs it (WAL, FULL sync, autocommit).

    The file is made 0600 first, so its -wal and -shm are too (SQLite copies the mode).
    """
    private_database(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()  # e.g. "file is not a database": do not keep the refused file open
        raise
    return conn


class Writer:
    """One thread owning one connection; `submit` groups jobs, `exclusive` runs one alone."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        max_batch: int = 512,
        on_open: Callable[[sqlite3.Connection], None] | None = None,
        on_answer: Callable[[], None] | None = None,
        name: str = "sqlite-writer",
    ) -> None:
        """`on_answer()` runs on a caller's event loop after each transaction (or exclusive
        job) ends and before any of its callers is answered: a reader there that holds a
        snapshot drops it then, so whoever a result reaches next reads the commit."""
        if synchronous not in ("FULL", "EXTRA", "NORMAL", "OFF"):
            raise ValueError(f"bad synchronous level {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self.max_batch = max_batch
        self.commits = 0
        self.jobs = 0
        self._on_open = on_open
        self._on_answer = on_answer
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._closing = False

    async def start(self) -> None:
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error

    async def submit(self, fn: Job[T]) -> T:
        """Run `fn(conn)` inside a shared write transaction; return after its commit."""
        result: T = await self._put(fn, exclusive=False)
        return result

    async def submit_batched(self, batcher: Batcher[ItemT, ResultT], item: ItemT) -> ResultT:
        """Have `batcher(conn, [..., item, ...])` handle `item` with the others of its commit.

        A result that is an exception instance is raised to this caller only.
        """
        result = await self._put(batcher, exclusive=False, batched=True, arg=item)
        if isinstance(result, BaseException):
            raise result
        out: ResultT = result
        return out

    async def exclusive(self, fn: Job[T]) -> T:
        """Run `fn(conn)` alone, outside any transaction (checkpoints, backups, maintenance)."""
        result: T = await self._put(fn, exclusive=True)
        return result

    async def close(self) -> None:
        """Finish every job already queued, then close the connection."""
        if self._closing:
            return
        self._closing = True
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def _put(
        self, fn: Callable[..., Any], *, exclusive: bool, batched: bool = False, arg: Any = None
    ) -> Any:
        if self._closing or not self._thread.is_alive():
            raise WriterClosed("the database writer is closed")
        loop = asyncio.get_running_loop()
        item = _Item(fn, loop.create_future(), loop, exclusive, batched, arg)
        self._queue.put(item)
        # A caller that goes away (client disconnect) cancels only its wait: the writer
        # thread never looks at the future before the commit, and skips a cancelled one.
        return await item.future

    # --- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = self._open()
        except BaseException as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        carry: _Item | object | None = None
        try:
            while True:
                first = carry if carry is not None else self._queue.get()
                carry = None
                if first is _STOP:
                    break
                assert isinstance(first, _Item)
                if first.exclusive:
                    self._run_exclusive(conn, first)
                    continue
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP or (isinstance(nxt, _Item) and nxt.exclusive):
                        carry = nxt
                        break
                    assert isinstance(nxt, _Item)
                    batch.append(nxt)
                self._run_batch(conn, batch)
        finally:
            self._fail_queued()
            conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path, synchronous=self.synchronous)
        try:
            if self._on_open is not None:
                self._on_open(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run_exclusive(self, conn: sqlite3.Connection, item: _Item) -> None:
        try:
            item.result = item.fn(conn)
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            item.error = _translate(exc)
        self._answer([item])

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        groups: dict[Callable[..., Any], list[_Item]] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                if item.batched:
                    groups.setdefault(item.fn, []).append(item)
                else:
                    self._in_savepoint(conn, [item], functools.partial(item.fn, conn))
            for fn, items in groups.items():
                self._in_savepoint(conn, items, functools.partial(fn, conn, [i.arg for i in items]))
            conn.execute("COMMIT")
            self.commits += 1
            self.jobs += len(batch)
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _translate(exc)
            log.error("write transaction of %d jobs failed: %s", len(batch), error)
            for item in batch:
                item.result, item.error = None, error
        self._answer(batch)

    def _in_savepoint(
        self, conn: sqlite3.Connection, items: list[_Item], run: Callable[[], Any]
    ) -> None:
        """Run one job (or one batched group); its failure rolls back only its own writes."""
        conn.execute("SAVEPOINT job")
        try:
            result = run()
            conn.execute("RELEASE job")
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back by itself (FULL, IOERR): every job
                # of this batch is gone, not only this one.
                raise
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            for item in items:
                item.error = _translate(exc)
            return
        if items[0].batched:
            if not isinstance(result, list) or len(result) != len(items):
                raise TypeError("a batched job must return one result per item")
            for item, value in zip(items, result, strict=True):
                item.result = value
        else:
            items[0].result = result

    def _answer(self, items: list[_Item]) -> None:
        # One wake-up per event loop for the whole batch, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        for item in items:
            by_loop.setdefault(item.loop, []).append(item)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, group, self._on_answer)
            except RuntimeError:
                log.warning("an event loop closed before %d write results reached it", len(group))

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Item):
                item.error = WriterClosed("the database writer closed")
                self._answer([item])


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return storage_error(exc) or exc
    return exc


def _settle_all(items: list[_Item], on_answer: Callable[[], None] | None = None) -> None:
    if on_answer is not None:
        try:
            on_answer()
        except Exception:  # the results must reach their callers whatever the hook did
            log.exception("the writer's on_answer hook failed")
    for item in items:
        if item.future.done():
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)
