"""The outbox state machine: append, claim in seq order, settle once, failures, stats."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

import outbox
from outbox import DELIVERED, PENDING, REJECTED, Result, RetryPolicy

T0 = 1_780_000_000.0


@pytest.fixture
def filled(conn: sqlite3.Connection, tx: Callable[..., Any]) -> list[outbox.Entry]:
    """Five pending entries created one second apart."""
    return [
        tx(conn, lambda c, n=n: outbox.append(c, "dam-1", "payment", b"p%d" % n, now=T0 + n))
        for n in range(5)
    ]


def states(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT state FROM outbox_entries ORDER BY seq")]


def test_append_needs_the_callers_transaction(conn: sqlite3.Connection):
    with pytest.raises(RuntimeError, match="transaction"):
        outbox.append(conn, "dam-1", "payment", b"x")
    assert outbox.stats(conn).last_seq == 0


def test_append_numbers_entries_and_stores_them_pending(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    assert [entry.seq for entry in filled] == [1, 2, 3, 4, 5]
    assert all(entry.state == PENDING and entry.attempts == 0 for entry in filled)
    assert all(entry.id.startswith("dam-1_") for entry in filled)
    assert [outbox.get(conn, entry.id) for entry in filled] == filled
    assert outbox.get(conn, "dam-1_NOSUCHENTRY") is None


def test_append_keeps_a_given_id_and_refuses_it_twice(
    conn: sqlite3.Connection, tx: Callable[..., Any]
):
    entry = tx(conn, lambda c: outbox.append(c, "dam-1", "payment", b"x", entry_id="dam-1_A"))
    assert entry.id == "dam-1_A"
    with pytest.raises(sqlite3.IntegrityError):
        tx(conn, lambda c: outbox.append(c, "dam-1", "payment", b"y", entry_id="dam-1_A"))
    assert outbox.stats(conn).last_seq == 1


def test_a_rolled_back_append_leaves_no_entry_and_no_gap(
    conn: sqlite3.Connection, tx: Callable[..., Any]
):
    def append_then_fail(c: sqlite3.Connection) -> None:
        outbox.append(c, "dam-1", "payment", b"lost")
        raise RuntimeError("the payment job failed after appending")

    with pytest.raises(RuntimeError):
        tx(conn, append_then_fail)
    entry = tx(conn, lambda c: outbox.append(c, "dam-1", "payment", b"kept"))
    assert (entry.seq, entry.prev_hash) == (1, outbox.GENESIS)
    assert [e.payload for e in outbox.iter_entries(conn)] == [b"kept"]


def test_claim_returns_pending_entries_in_seq_order_up_to_the_limit(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    assert outbox.claim(conn, 3) == filled[:3]
    assert outbox.claim(conn, 100) == filled
    outbox.settle(conn, [Result(e.seq, e.id, "applied", version=2) for e in filled[:2]])
    outbox.settle(conn, [Result(filled[3].seq, filled[3].id, "rejected", reason="closed")])
    assert [e.seq for e in outbox.claim(conn, 10)] == [3, 5]


@pytest.mark.parametrize(
    ("verdict", "state"),
    [("applied", DELIVERED), ("duplicate", DELIVERED), ("credited", DELIVERED),
     ("rejected", REJECTED)],
)  # fmt: skip
def test_settle_maps_each_verdict_to_its_state(
    conn: sqlite3.Connection, filled: list[outbox.Entry], verdict: str, state: str
):
    head = filled[0]
    reason = "account_closed" if verdict == "rejected" else None
    result = Result(head.seq, head.id, verdict, reason=reason, version=7)
    assert outbox.settle(conn, [result], now=T0 + 60) == 1
    settled = outbox.get(conn, head.id)
    assert settled is not None
    assert (settled.state, settled.verdict, settled.reason, settled.version) == (
        state, verdict, reason, 7,
    )  # fmt: skip
    assert settled.settled_at == T0 + 60
    assert states(conn)[1:] == [PENDING] * 4


def test_a_second_settle_does_not_change_the_first_verdict(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    head = filled[0]
    assert outbox.settle(conn, [Result(head.seq, head.id, "applied", version=3)], now=T0) == 1
    late = [
        Result(head.seq, head.id, "rejected", reason="late"),
        Result(head.seq, head.id, "duplicate", version=9),
    ]
    assert outbox.settle(conn, late, now=T0 + 99) == 0
    settled = outbox.get(conn, head.id)
    assert settled is not None
    assert (settled.state, settled.verdict, settled.reason, settled.version, settled.settled_at) == (
        DELIVERED, "applied", None, 3, T0,
    )  # fmt: skip


def test_settle_needs_the_seq_and_the_id_to_match(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    assert outbox.settle(conn, [Result(filled[0].seq, filled[1].id, "applied")]) == 0
    assert states(conn) == [PENDING] * 5


def test_settle_refuses_an_unknown_verdict(conn: sqlite3.Connection, filled: list[outbox.Entry]):
    with pytest.raises(ValueError, match="unknown verdict"):
        outbox.settle(conn, [Result(filled[0].seq, filled[0].id, "maybe")])
    assert states(conn) == [PENDING] * 5


def test_settle_clears_the_last_error(conn: sqlite3.Connection, filled: list[outbox.Entry]):
    outbox.record_failure(conn, [1], "connection refused", RetryPolicy(), now=T0)
    outbox.settle(conn, [Result(1, filled[0].id, "applied", version=2)])
    settled = outbox.get(conn, filled[0].id)
    assert settled is not None and settled.last_error is None and settled.attempts == 1


def test_record_failure_counts_attempts_and_backs_off_with_the_policy(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    policy = RetryPolicy(base_s=2.0, factor=3.0, cap_s=100.0)
    for failures, ceiling in [(1, 2.0), (2, 6.0), (3, 18.0), (4, 54.0), (5, 100.0), (6, 100.0)]:
        now = T0 + failures * 1000
        due = outbox.record_failure(conn, [1, 2, 3], f"503 attempt {failures}", policy, now=now)
        assert now + ceiling / 2 <= due <= now + ceiling
        assert outbox.next_attempt_at(conn) == due
    for entry in outbox.claim(conn, 3):
        assert (entry.attempts, entry.last_error) == (6, "503 attempt 6")
    untouched = outbox.claim(conn, 5)[3:]
    assert [(e.attempts, e.last_error, e.next_attempt_at) for e in untouched] == [
        (0, None, 0.0)
    ] * 2


def test_record_failure_with_an_explicit_delay_and_a_long_error(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    due = outbox.record_failure(conn, [1], "x" * 2000, RetryPolicy(), now=T0, delay=30.0)
    assert due == T0 + 30.0
    entry = outbox.get(conn, filled[0].id)
    assert entry is not None and entry.next_attempt_at == due and len(entry.last_error or "") == 500


def test_record_failure_leaves_settled_entries_alone(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    outbox.settle(conn, [Result(1, filled[0].id, "applied", version=2)])
    outbox.record_failure(conn, [1, 2], "timeout", RetryPolicy(), now=T0)
    first, second = outbox.get(conn, filled[0].id), outbox.get(conn, filled[1].id)
    assert first is not None and second is not None
    assert (first.attempts, first.last_error, first.state) == (0, None, DELIVERED)
    assert (second.attempts, second.last_error) == (1, "timeout")


def test_record_failure_of_nothing_changes_nothing(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    assert outbox.record_failure(conn, [], "nothing sent", RetryPolicy(), now=T0) == T0
    assert all(entry.attempts == 0 for entry in outbox.claim(conn, 5))


def test_next_attempt_at_is_none_when_nothing_is_pending(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    assert outbox.next_attempt_at(conn) == 0.0
    outbox.settle(conn, [Result(e.seq, e.id, "duplicate", version=1) for e in filled])
    assert outbox.next_attempt_at(conn) is None


def test_stats_of_an_empty_outbox(conn: sqlite3.Connection):
    assert outbox.stats(conn, now=T0) == outbox.Stats(0, None, 0, 0, 0)


def test_stats_count_states_and_age_the_oldest_pending_entry(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    outbox.settle(conn, [Result(1, filled[0].id, "applied", version=2)])
    outbox.settle(conn, [Result(2, filled[1].id, "rejected", reason="unknown_bill")])
    assert outbox.stats(conn, now=T0 + 100) == outbox.Stats(
        pending=3, oldest_pending_age_s=98.0, rejected=1, delivered=1, last_seq=5
    )
    # A clock that went backwards after a power cut never gives a negative age.
    assert outbox.stats(conn, now=T0 - 1000).oldest_pending_age_s == 0.0


def test_iter_entries_reads_every_entry_in_order_in_chunks(
    conn: sqlite3.Connection, filled: list[outbox.Entry]
):
    assert list(outbox.iter_entries(conn, chunk=2)) == filled
    assert list(outbox.iter_entries(conn, after_seq=3, chunk=1)) == filled[3:]
