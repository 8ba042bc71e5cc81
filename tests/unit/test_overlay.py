"""The bills mirror: the version rule, the cursor's transaction, and the local-payments overlay."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import outbox
from edge import errors, mirror
from edge.mirror import BadBill

BILL = "DAM-2026-05-0100234567"


@pytest.fixture
def billed(conn: sqlite3.Connection, seed: Callable[..., None], bill_factory) -> sqlite3.Connection:
    """One bill of 100,000 piastres, nothing paid, at version 3."""
    seed(conn, [bill_factory(version=3)])
    return conn


@pytest.fixture
def pay_and_settle(tx: Callable[..., Any], pay) -> Callable[..., str]:
    """Take a local payment; optionally settle it with a centre verdict. Returns its id."""
    keys = iter(range(1000))

    def run(
        conn: sqlite3.Connection,
        amount: int,
        verdict: str | None = None,
        version: int | None = None,
    ) -> str:
        reply = tx(conn, lambda c: pay(c, BILL, amount, key=f"k{next(keys)}"))
        payment_id: str = json.loads(reply.body)["payment_id"]
        if verdict is not None:
            entry = outbox.get(conn, payment_id)
            assert entry is not None
            result = outbox.Result(entry.seq, entry.id, verdict, reason=None, version=version)
            assert tx(conn, lambda c: outbox.settle(c, [result])) == 1
        return payment_id

    return run


def centre_update(conn: sqlite3.Connection, tx, bill_factory, cursor: int, **fields: Any) -> int:
    return int(tx(conn, lambda c: mirror.apply_changes(c, [bill_factory(**fields)], cursor)))


def view(conn: sqlite3.Connection) -> mirror.BillView:
    bill = mirror.bill(conn, BILL)
    assert bill is not None
    return bill


# --- applying the centre's changes ------------------------------------------------------


def test_new_bills_are_inserted_with_the_cursor(conn: sqlite3.Connection, tx, bill_factory):
    bills = [bill_factory(account=str(100 + n)) for n in range(3)]
    assert tx(conn, lambda c: mirror.apply_changes(c, bills, 41, now=5.0)) == 3
    assert mirror.state(conn) == mirror.MirrorState(cursor=41, as_of=5.0, bills=3)
    assert [b.bill_id for b in mirror.bills_for_account(conn, "101")] == ["DAM-2026-05-101"]


def test_a_bill_is_replaced_only_by_a_higher_version(billed: sqlite3.Connection, tx, bill_factory):
    assert centre_update(billed, tx, bill_factory, 2, version=3, paid=50_000) == 0
    assert centre_update(billed, tx, bill_factory, 3, version=2, paid=70_000) == 0
    assert (view(billed).version, view(billed).paid) == (3, 0)
    assert centre_update(billed, tx, bill_factory, 4, version=4, paid=20_000) == 1
    assert (view(billed).version, view(billed).paid) == (4, 20_000)
    assert mirror.state(billed).cursor == 4
    assert mirror.state(billed).bills == 1


def test_within_one_batch_the_highest_version_wins(billed: sqlite3.Connection, tx, bill_factory):
    batch = [bill_factory(version=6, paid=60_000), bill_factory(version=5, paid=50_000)]
    tx(billed, lambda c: mirror.apply_changes(c, batch, 9))
    assert (view(billed).version, view(billed).paid) == (6, 60_000)


@pytest.fixture
def second_conn(tmp_path: Path, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    other = sqlite3.connect(tmp_path / "unit.db", isolation_level=None)
    yield other
    other.close()


def test_the_cursor_commits_or_vanishes_with_the_bills(
    conn: sqlite3.Connection, second_conn: sqlite3.Connection, bill_factory
):
    conn.execute("BEGIN IMMEDIATE")
    mirror.apply_changes(conn, [bill_factory()], 7, now=5.0)
    assert mirror.state(second_conn).cursor is None
    assert mirror.bill(second_conn, BILL) is None
    conn.execute("ROLLBACK")
    assert mirror.state(conn) == mirror.MirrorState(cursor=None, as_of=None, bills=0)
    assert mirror.bill(conn, BILL) is None

    conn.execute("BEGIN IMMEDIATE")
    mirror.apply_changes(conn, [bill_factory()], 7, now=5.0)
    conn.execute("COMMIT")
    assert mirror.state(second_conn).cursor == 7
    assert mirror.bill(second_conn, BILL) is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": -1},
        {"amount": 100.5},
        {"paid": True},
        {"version": "4"},
        {"name": None},
        {"bill_id": "DAM-2026-13-1"},
        {"account": "12ab"},
        {"cycle": "2026-5"},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_a_bad_bill_fails_the_whole_batch_before_anything_is_written(
    conn: sqlite3.Connection, tx, bill_factory, bad: dict[str, Any]
):
    batch = [bill_factory(account="1"), bill_factory(**({"account": "2"} | bad))]
    with pytest.raises(BadBill):
        tx(conn, lambda c: mirror.apply_changes(c, batch, 3))
    assert mirror.state(conn) == mirror.MirrorState(cursor=None, as_of=None, bills=0)
    assert conn.execute("SELECT COUNT(*) FROM bills").fetchone()[0] == 0


def test_a_bill_missing_a_field_is_refused(conn: sqlite3.Connection, bill_factory):
    bill = bill_factory()
    del bill["due_date"]
    with pytest.raises(BadBill, match="due_date"):
        mirror.validate_bill(bill)


# --- the due amount as the node sees it -------------------------------------------------


def test_without_local_payments_due_is_amount_minus_paid(billed, tx, bill_factory):
    assert (view(billed).due, view(billed).pending_local, view(billed).status) == (
        100_000, 0, "unpaid",
    )  # fmt: skip
    centre_update(billed, tx, bill_factory, 2, version=4, paid=40_000)
    assert (view(billed).due, view(billed).status) == (60_000, "partial")
    centre_update(billed, tx, bill_factory, 3, version=5, paid=100_000)
    assert (view(billed).due, view(billed).status) == (0, "paid")


def test_a_pending_local_payment_reduces_the_due_at_once(billed, pay_and_settle):
    pay_and_settle(billed, 30_000)
    assert (view(billed).pending_local, view(billed).due, view(billed).status) == (
        30_000, 70_000, "partial",
    )  # fmt: skip


def test_payment_then_an_older_version_keeps_counting_the_payment(
    billed, pay_and_settle, tx, bill_factory
):
    pay_and_settle(billed, 30_000, "applied", version=5)
    # The centre's version 4 predates the payment (e.g. a meter correction): it must not
    # make the payment disappear from the due amount.
    centre_update(billed, tx, bill_factory, 2, version=4, amount=90_000)
    assert (view(billed).version, view(billed).pending_local, view(billed).due) == (
        4, 30_000, 60_000,
    )  # fmt: skip


def test_payment_then_the_version_that_includes_it_is_not_counted_twice(
    billed, pay_and_settle, tx, bill_factory
):
    pay_and_settle(billed, 30_000, "applied", version=5)
    assert view(billed).due == 70_000
    centre_update(billed, tx, bill_factory, 2, version=5, paid=30_000)
    assert (view(billed).pending_local, view(billed).due) == (0, 70_000)
    centre_update(billed, tx, bill_factory, 3, version=8, paid=30_000)
    assert (view(billed).pending_local, view(billed).due) == (0, 70_000)


def test_two_payments_each_count_until_their_own_version_arrives(
    billed, pay_and_settle, tx, bill_factory
):
    pay_and_settle(billed, 10_000, "applied", version=4)
    second = pay_and_settle(billed, 25_000)
    assert (view(billed).pending_local, view(billed).due) == (35_000, 65_000)

    centre_update(billed, tx, bill_factory, 2, version=4, paid=10_000)
    assert (view(billed).pending_local, view(billed).due) == (25_000, 65_000)

    entry = outbox.get(billed, second)
    assert entry is not None
    tx(
        billed,
        lambda c: outbox.settle(c, [outbox.Result(entry.seq, entry.id, "applied", version=5)]),
    )
    assert view(billed).due == 65_000
    centre_update(billed, tx, bill_factory, 3, version=5, paid=35_000)
    assert (view(billed).pending_local, view(billed).due) == (0, 65_000)


def test_a_credited_payment_counts_until_the_credited_version_arrives(
    billed, pay_and_settle, tx, bill_factory
):
    # Paid online during the outage (version 4), then the cashier's payment is credited (5).
    pay_and_settle(billed, 100_000, "credited", version=5)
    centre_update(billed, tx, bill_factory, 2, version=4, paid=100_000)
    assert (view(billed).pending_local, view(billed).due, view(billed).status) == (
        100_000, 0, "paid",
    )  # fmt: skip
    centre_update(billed, tx, bill_factory, 3, version=5, paid=100_000)
    assert (view(billed).pending_local, view(billed).due, view(billed).status) == (0, 0, "paid")


def test_a_rejected_payment_keeps_counting_whatever_the_version(
    billed, pay_and_settle, tx, bill_factory
):
    pay_and_settle(billed, 30_000, "rejected", version=None)
    centre_update(billed, tx, bill_factory, 2, version=50)
    assert (view(billed).pending_local, view(billed).due) == (30_000, 70_000)


def test_payments_on_another_bill_do_not_count(billed, pay_and_settle, seed, bill_factory):
    seed(billed, [bill_factory(account="555", version=1)], 2)
    pay_and_settle(billed, 30_000)
    other = mirror.bill(billed, "DAM-2026-05-555")
    assert other is not None and (other.pending_local, other.due) == (0, 100_000)


def test_the_overlay_bounds_what_can_still_be_paid(billed, pay_and_settle, tx, pay):
    pay_and_settle(billed, 60_000)
    with pytest.raises(errors.AmountExceedsDue):
        tx(billed, lambda c: pay(c, BILL, 40_001, key="over"))
    pay_and_settle(billed, 40_000)
    with pytest.raises(errors.BillAlreadyPaid):
        tx(billed, lambda c: pay(c, BILL, 1, key="after"))
    assert outbox.stats(billed).last_seq == 2


def test_inquiry_json_built_by_sqlite_matches_the_python_overlay(conn, tx, bill_factory, seed, pay):
    import json as _json

    account = "0100234567"
    seed(conn, [
        bill_factory(account, cycle="2026-01", paid=100_000),
        bill_factory(account, cycle="2026-03", paid=40_000),
        bill_factory(account, cycle="2026-05"),
        bill_factory(account, cycle="2026-07", amount=0),
    ])  # fmt: skip
    tx(conn, lambda c: pay(c, f"DAM-2026-05-{account}", 30_000, key="a"))
    tx(conn, lambda c: pay(c, f"DAM-2026-03-{account}", 60_000, key="b"))
    views = mirror.bills_for_account(conn, account)
    found = mirror.account_json(conn, account)
    assert found is not None
    got = _json.loads(found.bills)
    assert [(b["bill_id"], b["pending_local"], b["due"], b["status"]) for b in got] == [
        (v.bill_id, v.pending_local, v.due, v.status) for v in views
    ]
    assert {b["status"] for b in got} == {"paid", "partial"}
    assert found.total_due == sum(v.due for v in views) == 70_000
    assert _json.loads(found.subscriber) == {"name": views[-1].name, "address": views[-1].address}
    assert mirror.account_json(conn, "999") is None


def test_the_payment_writer_sees_the_same_due_as_the_bill_view(billed, pay_and_settle):
    pay_and_settle(billed, 30_000)
    pay_and_settle(billed, 20_000, verdict="applied", version=4)
    dues = mirror.dues_by_id(billed, [BILL, "DAM-2026-05-404"])
    assert list(dues) == [BILL]  # an unknown bill is simply absent
    assert (
        dues[BILL]
        == (BILL, view(billed).account, view(billed).due, view(billed).fine)
        == (BILL, "0100234567", 50_000, 0)
    )


def test_the_formatted_receipt_body_is_the_json_of_its_fields(billed, tx, pay):
    # The writer formats the 201 body by hand (no json.dumps on the hot path).
    reply = tx(billed, lambda c: pay(c, BILL, 12_345, key="fmt"))
    doc = json.loads(reply.body)
    assert reply.body == json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    assert list(doc) == ["payment_id", "receipt", "bill_id", "account", "amount", "due_after",
                         "fine", "currency", "method", "state", "accepted_at"]  # fmt: skip
    assert (doc["amount"], doc["due_after"], doc["bill_id"], doc["state"]) == (
        12_345, 100_000 - 12_345, BILL, "pending_sync")  # fmt: skip
