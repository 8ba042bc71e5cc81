"""The overlay with corrections (DESIGN 5.12): what a void, a refused void, a refund and a
retarget do to `pending_local` at each bill version, through the real write jobs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import outbox
from edge import corrections, errors, mirror, payments

BILL, OTHER = "DAM-2026-05-0100234567", "DAM-2026-05-0100000002"
NOW = 1_780_000_000.0
RULES = corrections.Rules("dam-1", "DAM", "", ZoneInfo("Asia/Damascus"), 24 * 3600)
Tx = Callable[..., Any]


@pytest.fixture
def billed(conn: sqlite3.Connection, seed: Any, bill_factory: Any) -> sqlite3.Connection:
    seed(conn, [bill_factory(version=3), bill_factory("0100000002", version=1)])
    return conn


def paid(conn: sqlite3.Connection, tx: Tx, pay: Any, amount: int, key: str) -> outbox.Entry:
    reply = tx(conn, lambda c: pay(c, BILL, amount, key=key, now=NOW))
    entry = outbox.get(conn, json.loads(reply.body)["payment_id"])
    assert entry is not None
    return entry


def settle(conn: sqlite3.Connection, tx: Tx, entry_id: str, verdict: str, reason: str | None,
           version: int | None) -> None:  # fmt: skip
    entry = outbox.get(conn, entry_id)
    assert entry is not None
    result = outbox.Result(entry.seq, entry.id, verdict, reason, version)
    assert tx(conn, lambda c: outbox.settle(c, [result])) == 1


def correct(conn: sqlite3.Connection, tx: Tx, kind: str, payment_id: str, key: str,
            bill_id: str | None = None, now: float = NOW + 60) -> dict[str, Any]:  # fmt: skip
    call = corrections.prepare("dam-1", kind, payment_id, "typed wrong", "super-1", key, now,
                               bill_id)  # fmt: skip
    reply = tx(conn, lambda c: corrections.run(c, RULES, call))
    assert reply.status == 200
    return json.loads(reply.body)  # type: ignore[no-any-return]


def shown(conn: sqlite3.Connection, bill_id: str = BILL) -> tuple[int, int, str]:
    view = mirror.bill(conn, bill_id)
    assert view is not None
    found = mirror.account_json(conn, view.account)
    assert found is not None  # the inquiry's SQL JSON says the same as the Python view
    line = next(b for b in json.loads(found.bills) if b["bill_id"] == bill_id)
    assert (line["pending_local"], line["due"], line["status"]) == (
        view.pending_local, view.due, view.status,
    )  # fmt: skip
    return view.pending_local, view.due, view.status


def centre(conn: sqlite3.Connection, tx: Tx, bill_factory: Any, cursor: int, **fields: Any) -> None:
    tx(conn, lambda c: mirror.apply_changes(c, [bill_factory(**fields)], cursor))


def test_a_void_of_a_pending_payment_stops_it_counting(billed, tx, pay) -> None:
    p = paid(billed, tx, pay, 30_000, "a")
    assert shown(billed) == (30_000, 70_000, "partial")
    doc = correct(billed, tx, "void", p.id, "v")
    assert doc["state"] == "voided" and doc["void"]["by"] == "super-1"
    assert shown(billed) == (0, 100_000, "unpaid")


def test_a_void_of_a_synced_payment_gives_it_back_until_the_reversed_bill(
    billed, tx, pay, bill_factory
) -> None:
    p = paid(billed, tx, pay, 30_000, "a")
    settle(billed, tx, p.id, "applied", None, 4)
    centre(billed, tx, bill_factory, 2, version=4, paid=30_000)
    assert shown(billed) == (0, 70_000, "partial")
    void = correct(billed, tx, "void", p.id, "v")["void"]["entry_id"]
    assert shown(billed) == (-30_000, 100_000, "unpaid")  # due again at once
    settle(billed, tx, void, "applied", None, 5)
    assert shown(billed) == (-30_000, 100_000, "unpaid")  # the mirror is still at 4
    centre(billed, tx, bill_factory, 3, version=5, paid=0)
    assert shown(billed) == (0, 100_000, "unpaid")
    centre(billed, tx, bill_factory, 4, version=6, paid=0, amount=90_000)
    assert shown(billed) == (0, 90_000, "unpaid")


def test_a_void_the_centre_refused_leaves_the_payment_as_it_was(
    billed, tx, pay, bill_factory
) -> None:
    p = paid(billed, tx, pay, 30_000, "a")
    void = correct(billed, tx, "void", p.id, "v")["void"]["entry_id"]
    # The payment was credited at the centre (paid online meanwhile); its void is refused.
    settle(billed, tx, p.id, "credited", None, 4)
    settle(billed, tx, void, "rejected", "payment_credited", None)
    assert shown(billed)[0] == 30_000  # counts until the mirror holds version 4
    centre(billed, tx, bill_factory, 2, version=4, paid=100_000)
    assert shown(billed) == (0, 0, "paid")
    found = payments.find(billed, p.id)
    assert found is not None
    assert found["state"] == "credited" and found["void"]["refused"] == "payment_credited"


def test_refund_and_retarget_free_the_rejected_bill(billed, tx, pay) -> None:
    a, b = paid(billed, tx, pay, 20_000, "a"), paid(billed, tx, pay, 30_000, "b")
    for entry in (a, b):
        settle(billed, tx, entry.id, "rejected", "unknown_bill", None)
    assert shown(billed) == (50_000, 50_000, "partial")  # rejected money stays counted
    assert correct(billed, tx, "refund", a.id, "r1")["payment"]["state"] == "refunded"
    assert shown(billed) == (30_000, 70_000, "partial")
    doc = correct(billed, tx, "retarget", b.id, "r2", OTHER)
    assert doc["payment"]["state"] == "retargeted"
    assert doc["new_payment"]["bill_id"] == OTHER and doc["new_payment"]["state"] == "pending_sync"
    assert shown(billed) == (0, 100_000, "unpaid")
    assert shown(billed, OTHER) == (30_000, 70_000, "partial")
    # The new payment is a payment: its own receipt, and a void of it works like any.
    assert doc["new_payment"]["receipt"] != doc["payment"]["receipt"]
    correct(billed, tx, "void", doc["new_payment"]["payment_id"], "v")
    assert shown(billed, OTHER) == (0, 100_000, "unpaid")


def test_refusals_raise_inside_the_job_and_write_nothing(billed, tx, pay) -> None:
    p = paid(billed, tx, pay, 30_000, "a")
    count = billed.execute("SELECT COUNT(*) FROM outbox_entries").fetchone()[0]
    late = corrections.prepare("dam-1", "void", p.id, "r", "s", "k1", NOW + 24 * 3600 + 1)
    with pytest.raises(errors.VoidWindowPassed):
        tx(billed, lambda c: corrections.run(c, RULES, late))
    refund = corrections.prepare("dam-1", "refund", p.id, "r", "s", "k2", NOW)
    with pytest.raises(errors.NotRejected):
        tx(billed, lambda c: corrections.run(c, RULES, refund))
    assert billed.execute("SELECT COUNT(*) FROM outbox_entries").fetchone()[0] == count
    assert billed.execute("SELECT COUNT(*) FROM payment_actions").fetchone()[0] == 0


def test_a_payment_partly_credited_is_not_voided_at_the_node(billed, tx, pay) -> None:
    from edge import credits
    from sync import protocol

    p = paid(billed, tx, pay, 30_000, "a")
    # Applied, but 10,000 of it went beyond what was due at the centre: credit (protocol 3).
    settle(billed, tx, p.id, "applied", None, 4)
    tx(billed, lambda c: credits.record(c, [protocol.Verdict(p.seq, p.id, "applied", None, 4,
                                                             10_000)]))  # fmt: skip
    call = corrections.prepare("dam-1", "void", p.id, "r", "s", "k", NOW + 60)
    with pytest.raises(errors.PaymentCredited):
        tx(billed, lambda c: corrections.run(c, RULES, call))
