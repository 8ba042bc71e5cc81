"""The node's side of transfer files (sync.transfer): what was exported and imported, and the
write jobs that settle a verdicts file and apply a bills file as the live link would.

Verdicts settle through the replayer's own job (sync.replayer.settle_job, with the credit
hook); bills go through mirror.apply_changes under the puller's version and cursor rules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import outbox
from edge import credits, mirror
from sync import protocol
from sync.replayer import settle_job
from sync.timefmt import iso_or_none


@dataclass(frozen=True)
class Transfer:
    at: float
    direction: str  # export, import
    kind: str  # outbox, verdicts, bills
    entries: int  # items in the file
    changed: int  # entries settled or bills stored (an export: 0)
    first_seq: int
    last_seq: int
    cursor: int | None
    digest: str  # the file's SHA-256: which file it was

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": iso_or_none(self.at), "kind": self.kind, "entries": self.entries,
            "changed": self.changed, "first_seq": self.first_seq, "last_seq": self.last_seq,
            "cursor": self.cursor, "sha256": self.digest,
        }  # fmt: skip


_COLUMNS = "at, direction, kind, entries, changed, first_seq, last_seq, cursor, digest"


def record(conn: sqlite3.Connection, transfer: Transfer) -> None:
    conn.execute(
        f"INSERT INTO transfers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (transfer.at, transfer.direction, transfer.kind, transfer.entries, transfer.changed,
         transfer.first_seq, transfer.last_seq, transfer.cursor, transfer.digest),
    )  # fmt: skip


def last(conn: sqlite3.Connection, direction: str) -> Transfer | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM transfers WHERE direction = ? ORDER BY seq DESC LIMIT 1",
        (direction,),
    ).fetchone()
    return None if row is None else Transfer(*row)


def status(conn: sqlite3.Connection) -> dict[str, Any]:
    """The status document's `transfers`: the last export and import, and how many entries
    of the last export the centre has not acknowledged yet (by file or by the link)."""
    exported, imported = last(conn, "export"), last(conn, "import")
    remaining = 0 if exported is None else outbox.pending_through(conn, exported.last_seq)
    return {
        "last_export": None if exported is None else exported.as_dict(),
        "last_import": None if imported is None else imported.as_dict(),
        "unacknowledged": remaining,
    }


def settle_verdicts(
    conn: sqlite3.Connection, verdicts: list[protocol.Verdict], now: float
) -> tuple[int, int]:
    """Settle a verdicts file's verdicts (a write job): only those naming an entry of this
    outbox by seq and id, as the replayer settles only what it sent. (matched, changed)."""
    local = outbox.get_many(conn, (v.seq for v in verdicts))
    mine = [v for v in verdicts if v.seq in local and local[v.seq].id == v.id]
    return len(mine), settle_job(mine, now, credits.record)(conn)


def apply_bills(
    conn: sqlite3.Connection, bills: Iterable[dict[str, Any]], cursor: int | None, now: float
) -> int:
    """Apply one frame of a bills file (a write job). The cursor only ever moves forward: the
    live puller may have gone further while the file was being read."""
    if cursor is not None:
        held = mirror.state(conn).cursor
        if held is not None and held >= cursor:
            cursor = None
    return mirror.apply_changes(conn, bills, cursor, now=now)
