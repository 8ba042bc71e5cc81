"""What the centre holds of one node's chain: its head, and the entries after a seq (the
read behind GET /v1/nodes/{node}/chain, PROTOCOL.md 4.8), in one read transaction.

`page` builds the answer from the rows either store read; `chain_after` is SQLite's read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from outbox.chain import GENESIS
from sync import chain

# e.seq, e.id, e.kind, e.payload, e.prev_hash, e.hash, e.verdict, e.reason, e.version, the
# entry's credit and e.fine: one chain.Held each.
HELD_COLUMNS = (
    "e.seq, e.id, e.kind, e.payload, e.prev_hash, e.hash, e.verdict, e.reason, e.version,"
    " COALESCE(c.amount, 0), e.fine"
)
HELD_FROM = "FROM entries e LEFT JOIN credits c ON c.source = e.id"


def page(
    node: str, head_row: Sequence[Any] | None, after: int, after_hash: str | None,
    rows: Sequence[Sequence[Any]], max_bytes: int = chain.PAGE_BYTES,
) -> chain.Page:  # fmt: skip
    """The page of `node`'s chain after `after`: `head_row` (seq, hash) or None, the hash the
    centre holds at `after`, and the entries after it (HELD_COLUMNS, seq order), cut once
    their payloads pass `max_bytes`."""
    head, head_hash = (0, GENESIS) if head_row is None else (int(head_row[0]), str(head_row[1]))
    if after > head:
        return chain.Page(node, head, head_hash, after, None, [], False)
    entries: list[chain.Held] = []
    size = 0
    for r in rows:
        if entries and size + len(r[3]) > max_bytes:
            break
        size += len(r[3])
        entries.append(chain.Held(*r))
    more = after + len(entries) < head
    at = GENESIS if after == 0 else str(after_hash)
    return chain.Page(node, head, head_hash, after, at, entries, more)


def chain_after(
    conn: sqlite3.Connection, node: str, after: int, limit: int, max_bytes: int = chain.PAGE_BYTES
) -> chain.Page:
    """`node`'s head, the hash at `after` and up to `limit` entries after it in seq order
    (fewer once their payloads pass `max_bytes`), with each one's first verdict and credit."""
    conn.execute("BEGIN")  # the head and the entries from one snapshot
    try:
        row = conn.execute("SELECT seq, hash FROM chain_heads WHERE node = ?", (node,)).fetchone()
        at = conn.execute(
            "SELECT hash FROM entries WHERE node = ? AND seq = ?", (node, after)
        ).fetchone()
        rows = conn.execute(
            f"SELECT {HELD_COLUMNS} {HELD_FROM} WHERE e.node = ? AND e.seq > ?"
            " ORDER BY e.seq LIMIT ?",
            (node, after, limit),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return page(node, row, after, None if at is None else at[0], rows, max_bytes)
