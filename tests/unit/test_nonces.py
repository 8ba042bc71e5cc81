"""The centre's nonce memory: a repeat within the window is seen, memory is pruned by
timestamp and capped per node, and the database rows reload after a restart."""

from __future__ import annotations

import sqlite3

import pytest

from sync.centre import nonces


def test_a_repeat_is_seen_until_its_timestamp_leaves_the_window() -> None:
    seen = nonces.Nonces(300)
    assert not seen.seen("dam-1", "a" * 32, 1000, now=1000.0)
    assert seen.seen("dam-1", "a" * 32, 1000, now=1200.0)
    assert not seen.seen("ale-1", "a" * 32, 1000, now=1200.0)  # per node
    assert seen.seen("dam-1", "a" * 32, 1000, now=1300.0)
    assert not seen.seen("dam-1", "b" * 32, 1301, now=1301.0)
    assert len(seen) == 1  # both ts-1000 nonces expired at 1300
    assert not seen.seen("dam-1", "a" * 32, 1301, now=1301.0)


def test_the_cap_refuses_rather_than_forgets() -> None:
    seen = nonces.Nonces(300, cap=3)
    for i in range(3):
        assert not seen.seen("dam-1", f"{i:032x}", 1000, now=1000.0)
    with pytest.raises(nonces.NoncesFull):
        seen.seen("dam-1", "f" * 32, 1000, now=1000.0)
    assert not seen.seen("ale-1", "f" * 32, 1000, now=1000.0)  # other nodes unaffected
    assert not seen.seen("dam-1", "f" * 32, 1400, now=1400.0)  # room again once expired


def test_persisted_nonces_reload_and_old_ones_are_deleted() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(nonces.MIGRATION_SQL)
    nonces.persist(conn, "dam-1", "a" * 32, 1000, now=1000.0, window_s=300)
    nonces.persist(conn, "dam-1", "b" * 32, 1250, now=1250.0, window_s=300)
    again = nonces.Nonces(300)
    again.load(nonces.load_rows(conn, 1260.0, 300), now=1260.0)
    assert again.seen("dam-1", "a" * 32, 1000, now=1260.0)
    assert again.seen("dam-1", "b" * 32, 1250, now=1260.0)
    nonces.persist(conn, "dam-1", "c" * 32, 1400, now=1400.0, window_s=300)
    rows = {r[0] for r in conn.execute("SELECT nonce FROM seen_nonces")}
    assert rows == {"b" * 32, "c" * 32}
