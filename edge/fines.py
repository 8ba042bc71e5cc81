"""Late fines at the node beyond the mirror's overlay: the centre's figure from each verdict.

The fine itself is computed by sync.fines (the centre uses the same function) inside the
mirror's queries (edge.mirror); the replayer hands the verdicts to `record` in the write job
that settles them, so the centre's figure commits with the settle (first one kept).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from edge import credits
from sync import protocol

# A payment row only: a verdict on another kind of entry counts no fine.
_RECORD = (
    "INSERT OR IGNORE INTO payment_fines (seq, amount)"
    " SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM payments WHERE seq = ?1)"
)


def record(conn: sqlite3.Connection, verdicts: Iterable[protocol.Verdict]) -> None:
    """Keep the fine each verdict names (None: a centre before protocol 4, or rejected)."""
    rows = [(v.seq, v.fine) for v in verdicts if v.fine is not None and v.verdict != "rejected"]
    if rows:
        conn.executemany(_RECORD, rows)


def keep(conn: sqlite3.Connection, verdicts: list[protocol.Verdict]) -> None:
    """What a settle keeps beside the outbox, in its write job: the credit and the fine each
    verdict names. The one hook of the replayer and of a verdicts file (edge.transfers)."""
    credits.record(conn, verdicts)
    record(conn, verdicts)


def document(taken: int, centre: int | None) -> dict[str, Any]:
    """The payment document's `fine`: what the node took for the bill's late fine, and what
    the centre counted (null until its verdict; it differs when the verdict says
    `fine_mismatch`: the centre's figure is the one the bill keeps)."""
    return {"taken": taken, "centre": centre}
