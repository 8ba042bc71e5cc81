"""Credit at the node (edge/credits.py, the mirror's bills.credit): a verdict's credit is kept
for payments only and only once, the payment document links to it, and the inquiry's
credit is the sum over the account's bills.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import outbox
from edge import credits, mirror, payments
from sync.protocol import Verdict

BILL = "DAM-2026-05-0100234567"
ACCOUNT = "0100234567"


def settle(conn: sqlite3.Connection, tx: Callable[..., Any], verdicts: list[Verdict]) -> None:
    def job(c: sqlite3.Connection) -> None:
        outbox.settle(c, [outbox.Result(v.seq, v.id, v.verdict, v.reason, v.version)
                          for v in verdicts])  # fmt: skip
        credits.record(c, verdicts)

    tx(conn, job)


def taken(conn: sqlite3.Connection, tx: Callable[..., Any], pay: Any, amount: int, key: str) -> Any:
    reply = tx(conn, lambda c: pay(c, BILL, amount, key=key))
    entry = outbox.get(conn, json.loads(reply.body)["payment_id"])
    assert entry is not None
    return entry


def test_a_verdicts_credit_is_kept_once_and_linked(
    conn: sqlite3.Connection, tx: Callable[..., Any], pay: Any, seed: Any, bill_factory: Any
) -> None:
    seed(conn, [bill_factory(version=1)])
    whole = taken(conn, tx, pay, 60_000, "a")
    part = taken(conn, tx, pay, 40_000, "b")
    settle(conn, tx, [
        Verdict(whole.seq, whole.id, "credited", None, 2, 60_000),
        Verdict(part.seq, part.id, "applied", None, 3, 15_000),
    ])  # fmt: skip
    # A late resend's answer names another figure: the first verdict's credit stays.
    settle(conn, tx, [Verdict(whole.seq, whole.id, "duplicate", "credited", 2, 1)])
    doc = payments.find(conn, whole.id)
    assert doc is not None
    assert (doc["state"], doc["credit"]) == ("credited", {
        "amount": 60_000, "account": ACCOUNT, "bill_id": BILL,
        "href": f"/v1/accounts/{ACCOUNT}/bills",
    })  # fmt: skip
    doc = payments.find(conn, part.id)
    assert doc is not None and (doc["state"], doc["credit"]["amount"]) == ("synced", 15_000)


def test_no_credit_without_a_payment_or_for_a_rejection(
    conn: sqlite3.Connection, tx: Callable[..., Any], pay: Any, seed: Any, bill_factory: Any
) -> None:
    seed(conn, [bill_factory(version=1)])
    other = tx(conn, lambda c: outbox.append(c, "dam-1", "meter_reading", b"\x80"))
    rejected = taken(conn, tx, pay, 1_000, "r")
    plain = taken(conn, tx, pay, 2_000, "p")
    tx(conn, lambda c: credits.record(c, [
        Verdict(other.seq, other.id, "credited", None, 2, 500),
        Verdict(rejected.seq, rejected.id, "rejected", "unknown_bill", None, 700),
        Verdict(plain.seq, plain.id, "applied", None, 2, 0),
    ]))  # fmt: skip
    assert conn.execute("SELECT COUNT(*) FROM payment_credits").fetchone()[0] == 0
    doc = payments.find(conn, plain.id)
    assert doc is not None and doc["credit"] is None


def test_a_protocol_2_credited_payment_credits_its_whole_amount(
    conn: sqlite3.Connection, tx: Callable[..., Any], pay: Any, seed: Any, bill_factory: Any
) -> None:
    # Settled before protocol 3 (no figure kept): `credited` meant the whole amount.
    seed(conn, [bill_factory(version=1)])
    entry = taken(conn, tx, pay, 25_000, "old")
    tx(conn, lambda c: outbox.settle(c, [outbox.Result(entry.seq, entry.id, "credited", None, 1)]))
    doc = payments.find(conn, entry.id)
    assert doc is not None and doc["credit"]["amount"] == 25_000


def test_the_inquiry_credit_is_the_sum_over_the_accounts_bills(
    conn: sqlite3.Connection, seed: Any, bill_factory: Any
) -> None:
    seed(conn, [
        bill_factory(version=2, paid=100_000, credit=30_000),
        bill_factory(cycle="2026-07", version=1, credit=5_000),
        bill_factory("0100234568", version=1),
    ])  # fmt: skip
    found = mirror.account_json(conn, ACCOUNT)
    assert found is not None and found.credit == 35_000
    lines = json.loads(found.bills)
    assert [(b["cycle"], b["credit"]) for b in lines] == [("2026-05", 30_000), ("2026-07", 5_000)]
    none = mirror.account_json(conn, "0100234568")
    assert none is not None and none.credit == 0
    view = mirror.bill(conn, BILL)
    assert view is not None and (view.credit, view.due) == (30_000, 0)
