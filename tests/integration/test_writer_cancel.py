"""A caller that gives up (client disconnect) does not undo a write already handed to the writer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import outbox


async def test_cancelled_caller_still_commits(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    writer = outbox.Writer(path, on_open=lambda c: c.execute("CREATE TABLE t (n INTEGER)"))
    await writer.start()
    gate = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        gate.wait(5)
        conn.execute("INSERT INTO t VALUES (1)")

    task = asyncio.create_task(writer.submit(slow))
    await asyncio.sleep(0.05)
    task.cancel()
    gate.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert await writer.submit(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 1
    await writer.close()
