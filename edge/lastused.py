"""When each client token was last used: a small table the node writes through its one writer.

The tokens file is the operator's, so the node never rewrites it; it records a token's use
at most once a minute per token, off the request path, and `edge token list` reads it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from edge.db import Database

log = logging.getLogger(__name__)
EVERY_S = 60.0


def record(conn: sqlite3.Connection, name: str, at: float) -> None:
    conn.execute(
        "INSERT INTO token_last_used (name, at) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET at = max(at, excluded.at)",
        (name, at),
    )


def read_all(db_path: Path) -> dict[str, float]:
    """Name -> last use, read-only (the node may be running); empty without a database."""
    if not db_path.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)) as conn:
            rows = conn.execute("SELECT name, at FROM token_last_used").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}  # a database from before edge.0006: nothing recorded yet
        raise
    return {str(name): float(at) for name, at in rows}


class LastUsed:
    """Notes uses in memory and writes each token's at most every EVERY_S seconds."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._written: dict[str, float] = {}  # name -> monotonic time of the last write
        self._tasks: set[asyncio.Task[None]] = set()
        self._failing = False

    def seen(self, name: str) -> None:
        now = time.monotonic()
        last = self._written.get(name)
        if last is not None and now - last < EVERY_S:
            return
        self._written[name] = now
        # Not awaited: an inquiry must not wait for a commit to note who asked.
        task = asyncio.get_running_loop().create_task(self._write(name, self.clock()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, name: str, at: float) -> None:
        try:
            await self.db.write(lambda c: record(c, name, at))
        except Exception as exc:  # best effort: the use itself already succeeded
            level = logging.DEBUG if self._failing else logging.WARNING
            self._failing = True
            log.log(level, "cannot record the last use of token %s: %s", name, exc)
        else:
            self._failing = False

    async def drain(self) -> None:
        """Let writes already started finish before the database closes (bounded)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
