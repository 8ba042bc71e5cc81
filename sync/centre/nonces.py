"""The nonces the centre has seen within the timestamp window: a repeat is a replayed request.

Kept in memory (per node, pruned by timestamp, with a hard cap) and persisted in the centre's
database, so a restart forgets none that could still be replayed (loaded back at start).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

MAX_PER_NODE = 200_000  # ~700 requests a second per node over a 300 s window
MIGRATION_SQL = """
CREATE TABLE IF NOT EXISTS seen_nonces (
    node  TEXT NOT NULL,
    nonce TEXT NOT NULL,
    ts    INTEGER NOT NULL,
    PRIMARY KEY (node, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_nonces_ts ON seen_nonces (ts);
"""


@dataclass(frozen=True)
class Nonce:
    """A verified request's nonce, remembered until `ts` + the window (replays refused)."""

    node: str
    nonce: str
    ts: int


class NoncesFull(Exception):
    """A node sent more requests in one window than the cap: refuse (503) until some expire."""


class Nonces:
    """`seen(node, nonce, ts, now)`: True for a repeat, else remembers it until `ts + window`."""

    def __init__(self, window_s: float, *, cap: int = MAX_PER_NODE) -> None:
        self.window_s = window_s
        self.cap = cap
        self._by_node: dict[str, dict[str, int]] = {}
        self._expiry: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def load(self, rows: Iterable[tuple[str, str, int]], now: float) -> None:
        for node, nonce, ts in rows:
            self._remember(node, nonce, ts)
        self.prune(now)

    def prune(self, now: float) -> None:
        # A request stamped ts is accepted while now <= ts + window: after that its nonce
        # cannot be replayed (the timestamp check refuses it first).
        heap = self._expiry
        while heap and heap[0][0] < now:
            _, node, nonce = heapq.heappop(heap)
            seen = self._by_node.get(node)
            if seen is not None:
                seen.pop(nonce, None)
                if not seen:
                    del self._by_node[node]

    def seen(self, node: str, nonce: str, ts: int, now: float) -> bool:
        self.prune(now)
        known = self._by_node.get(node, {})
        if nonce in known:
            return True
        if len(known) >= self.cap:
            raise NoncesFull(f"node {node} sent {len(known)} requests within the window")
        self._remember(node, nonce, ts)
        return False

    def _remember(self, node: str, nonce: str, ts: int) -> None:
        seen = self._by_node.setdefault(node, {})
        if nonce not in seen:
            seen[nonce] = ts
            heapq.heappush(self._expiry, (ts + self.window_s, node, nonce))


def persist(
    conn: sqlite3.Connection, node: str, nonce: str, ts: int, now: float, window_s: float
) -> None:
    """Record a nonce (inside the caller's write), dropping those that can no longer matter."""
    conn.execute(
        "INSERT OR IGNORE INTO seen_nonces (node, nonce, ts) VALUES (?, ?, ?)", (node, nonce, ts)
    )
    conn.execute("DELETE FROM seen_nonces WHERE ts < ?", (int(now - window_s) - 1,))


def load_rows(conn: sqlite3.Connection, now: float, window_s: float) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT node, nonce, ts FROM seen_nonces WHERE ts >= ?", (int(now - window_s) - 1,)
    ).fetchall()
    return [(str(n), str(x), int(t)) for n, x, t in rows]
