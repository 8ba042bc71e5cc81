"""Read connections off the event loop, the writer's sibling: aiosqlite, one thread each.

`connect(path)` is a query-only aiosqlite connection; `run(conn, fn)` calls `fn(sqlite3_conn)`
on that connection's thread, so readers written against sqlite3 need no async twin.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar, cast

import aiosqlite

T = TypeVar("T")
ITER_CHUNK = 64  # aiosqlite.connect's default rows per hop when iterating its cursors


def connect(database: str, *, uri: bool = False, timeout: float = 5.0) -> aiosqlite.Connection:
    """A query-only connection: `async with connect(path) as conn`, or `conn = await ...`."""

    def connector() -> sqlite3.Connection:
        # Runs on the connection's own thread, like everything else it is asked to do.
        conn = sqlite3.connect(database, uri=uri, timeout=timeout, isolation_level=None)
        conn.execute("PRAGMA query_only=ON")
        return conn

    # aiosqlite.connect takes no hook to run a statement at open; the Connection it builds
    # takes the connector directly (exported; the same signature from 0.20, the oldest
    # release pyproject allows, to 0.22).
    return aiosqlite.Connection(connector, ITER_CHUNK)


async def run(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(c)` on `conn`'s thread, `c` the sqlite3 connection it wraps; one hop per call.

    aiosqlite's public methods each queue one sqlite3 call (execute, fetchall, backup...).
    Our readers are whole functions over sqlite3 (outbox.stats, mirror.state, a snapshot
    page packed with msgpack) and must run in one hop, so this queues them the way every
    one of those methods does: `_execute`, the queue to the thread, with `_conn`, the sqlite3
    connection (which raises ValueError once closed). Both are in every release pyproject
    allows (0.20 to 0.22, the one read here 0.22.1) and have no public equivalent;
    tests/integration/test_store.py holds the behaviour (thread, commits seen, query-only).
    """
    result = await conn._execute(fn, conn._conn)  # type: ignore[no-untyped-call]
    return cast(T, result)
