"""What the centre holds of one node's chain: its head, and the entries after a seq (the
read behind GET /v1/nodes/{node}/chain, PROTOCOL.md 4.8), in one read transaction."""

from __future__ import annotations

import sqlite3

from outbox.chain import GENESIS
from sync import chain


def chain_after(
    conn: sqlite3.Connection, node: str, after: int, limit: int, max_bytes: int = chain.PAGE_BYTES
) -> chain.Page:
    """`node`'s head, the hash at `after` and up to `limit` entries after it in seq order
    (fewer once their payloads pass `max_bytes`), with each one's first verdict and credit."""
    conn.execute("BEGIN")  # the head and the entries from one snapshot
    try:
        row = conn.execute("SELECT seq, hash FROM chain_heads WHERE node = ?", (node,)).fetchone()
        head, head_hash = (0, GENESIS) if row is None else (int(row[0]), str(row[1]))
        if after > head:
            return chain.Page(node, head, head_hash, after, None, [], False)
        at = conn.execute(
            "SELECT hash FROM entries WHERE node = ? AND seq = ?", (node, after)
        ).fetchone()
        after_hash = GENESIS if after == 0 else str(at[0])
        rows = conn.execute(
            "SELECT e.seq, e.id, e.kind, e.payload, e.prev_hash, e.hash, e.verdict, e.reason,"
            " e.version, COALESCE(c.amount, 0), e.fine FROM entries e"
            " LEFT JOIN credits c ON c.source = e.id"
            " WHERE e.node = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
            (node, after, limit),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    entries: list[chain.Held] = []
    size = 0
    for r in rows:
        if entries and size + len(r[3]) > max_bytes:
            break
        size += len(r[3])
        entries.append(chain.Held(*r))
    more = after + len(entries) < head
    return chain.Page(node, head, head_hash, after, after_hash, entries, more)
