"""edge.transfers: a verdicts file settles only this outbox's entries, once; a bills file never
moves the mirror's cursor back; the status counts what the last export left unacknowledged."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from helpers import make_bill

import outbox
from edge import db, mirror, transfers
from sync import protocol


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(c)
    c.execute("BEGIN")
    outbox.append_many(c, [("note", b"x", f"dam-1_{'0' * 25}{i}", 1.0) for i in range(1, 4)])
    c.execute("COMMIT")
    yield c
    c.close()


def _verdict(seq: int, entry: str, verdict: str = "applied") -> protocol.Verdict:
    return protocol.Verdict(seq, entry, verdict, None, 2)


def test_verdicts_settle_only_entries_of_this_outbox_and_only_once(
    conn: sqlite3.Connection,
) -> None:
    mine = _verdict(1, f"dam-1_{'0' * 25}1")
    foreign = _verdict(2, "dam-2_" + "0" * 26)  # seq 2 here is another entry
    assert transfers.settle_verdicts(conn, [mine, foreign], 5.0) == (1, 1)
    assert transfers.settle_verdicts(conn, [mine], 6.0) == (1, 0)
    states = {e.seq: (e.state, e.settled_at) for e in outbox.iter_entries(conn)}
    assert states == {1: ("delivered", 5.0), 2: ("pending", None), 3: ("pending", None)}


def test_a_bills_frame_never_moves_the_cursor_back(conn: sqlite3.Connection) -> None:
    transfers.apply_bills(conn, [make_bill("1")], 50, 1.0)
    assert mirror.state(conn).cursor == 50
    stored = transfers.apply_bills(conn, [make_bill("2")], 40, 2.0)
    assert stored == 1 and mirror.state(conn).cursor == 50
    assert mirror.state(conn).bills == 2


def test_status_counts_what_the_last_export_left_unacknowledged(conn: sqlite3.Connection) -> None:
    assert transfers.status(conn) == {"last_export": None, "last_import": None, "unacknowledged": 0}
    transfers.record(conn, transfers.Transfer(10.0, "export", "outbox", 2, 0, 1, 2, None, "a" * 64))
    transfers.settle_verdicts(conn, [_verdict(1, f"dam-1_{'0' * 25}1")], 11.0)
    found = transfers.status(conn)
    assert found["unacknowledged"] == 1  # seq 2 of the export; seq 3 came later
    assert found["last_export"]["entries"] == 2 and found["last_import"] is None
