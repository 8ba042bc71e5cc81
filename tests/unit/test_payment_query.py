"""edge.paymentquery: filter parsing, the state SQL against payment_state, the query plans."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from helpers import make_bill

import outbox
from edge import actions, errors, payments
from edge import paymentquery as pq


def parse(**params: str) -> pq.Filters:
    return pq.parse(params.items(), None)


def test_defaults_and_good_values() -> None:
    assert parse() == pq.Filters(limit=50)
    f = pq.parse(
        [("receipt", "DAM-DAM1-20261201-000003"), ("account", "0100234567"),
         ("bill_id", "DAM-2026-05-0100234567"), ("cashier", "سمير"), ("day", "2026-12-01"),
         ("state", "rejected"), ("limit", "500"), ("after", "17")],
        "counter-1",
    )  # fmt: skip
    assert f == pq.Filters(
        receipt="DAM-DAM1-20261201-000003", account="0100234567", bill_id="DAM-2026-05-0100234567",
        cashier="سمير", day="20261201", state="rejected", channel="counter-1", limit=500, after=17,
    )  # fmt: skip
    assert parse(receipt="DAM-20261201-000003").receipt == "DAM-20261201-000003"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"receipt": "DAM-2026-12-01-000003"}, "receipt"),
        ({"receipt": "DAM-dam1-20261201-000003"}, "receipt"),
        ({"receipt": "DAM-ABCDEFGHI-20261201-000003"}, "receipt"),
        ({"account": "12a"}, "account"),
        ({"account": ""}, "account"),
        ({"bill_id": "DAM-2026-13-1"}, "bill_id"),
        ({"cashier": ""}, "cashier"),
        ({"cashier": "   "}, "cashier"),
        ({"cashier": "a\x07b"}, "cashier"),
        ({"cashier": "x" * 65}, "cashier"),
        ({"cashier": "\ud800"}, "cashier"),
        ({"day": "2026-02-30"}, "day"),
        ({"day": "20261201"}, "day"),
        ({"day": "2026-12-1"}, "day"),
        ({"state": "pending"}, "state"),
        ({"state": "voided?"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "9" * 40}, "limit"),
        ({"after": "0"}, "after"),
        ({"after": "abc"}, "after"),
        ({"after": "9223372036854775808"}, "after"),
        ({"acount": "1"}, "acount"),
    ],
)
def test_each_bad_filter_is_invalid_query_naming_it(params: dict[str, str], named: str) -> None:
    with pytest.raises(errors.InvalidQuery) as caught:
        parse(**params)
    assert caught.value.status == 400 and caught.value.code == "invalid_query"
    assert caught.value.detail.startswith(named)


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(errors.InvalidQuery, match="given twice"):
        pq.parse([("state", "synced"), ("state", "rejected")], None)


def test_state_sql_says_what_payment_state_says() -> None:
    """Every (state, verdict, reason) an entry can hold, with every set of actions on it (a
    void pending, settled or refused by the centre, a refund, a retarget, a refused void then
    a resolution), lands in exactly the SQL state that payment_state names for it, so the
    filter and the document never disagree."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE o (seq INTEGER, state TEXT, verdict TEXT, reason TEXT)")
    conn.execute("CREATE TABLE outbox_entries (seq INTEGER, state TEXT)")
    conn.execute(f"CREATE TABLE {actions.TABLE} (seq INTEGER, kind TEXT, target INTEGER)")
    verdicts = [None, "applied", "duplicate", "credited", "rejected"]
    reasons = [None, "applied", "credited", "unknown_bill"]
    acted = [(), (("void", "pending"),), (("void", "delivered"),), (("void", "rejected"),),
             (("refund", "pending"),), (("retarget", "rejected"),),
             (("void", "rejected"), ("refund", "delivered"))]  # fmt: skip
    base = list(itertools.product(["pending", "delivered", "rejected"], verdicts, reasons))
    rows, expected_of, seq = [], {}, 0
    for row, acts in itertools.product(base, acted):
        seq += 1
        rows.append((seq, *row))
        for kind, state in acts:
            seq += 1
            conn.execute("INSERT INTO outbox_entries VALUES (?, ?)", (seq, state))
            conn.execute(f"INSERT INTO {actions.TABLE} VALUES (?, ?, ?)", (seq, kind, rows[-1][0]))
        force = [k for k, st in acts if k != "void" or st != "rejected"]
        expected_of[rows[-1][0]] = payments.payment_state(*row, force[0] if force else None)
    conn.executemany("INSERT INTO o VALUES (?, ?, ?, ?)", rows)
    assert set(payments.STATE_SQL) == set(payments.STATES)
    assert set(expected_of.values()) == set(payments.STATES)
    for state, condition in payments.STATE_SQL.items():
        found = {r[0] for r in conn.execute(f"SELECT seq FROM o WHERE {condition}")}
        assert found == {s for s, named in expected_of.items() if named == state}, state


PLANS = {
    "receipt": pq.Filters(receipt="DAM-20261201-000001"),
    "account": pq.Filters(account="1"),
    "bill_id": pq.Filters(bill_id="DAM-2026-05-1"),
    "cashier": pq.Filters(cashier="huda"),
    "day": pq.Filters(day="20261201"),
    "channel": pq.Filters(channel="counter-1", after=10),
    "channel and day": pq.Filters(channel="counter-1", day="20261201"),
    "channel and account": pq.Filters(channel="counter-1", account="1"),
    "channel and cashier": pq.Filters(channel="counter-1", cashier="huda", after=10),
    **{f"state {s}": pq.Filters(state=s, channel="counter-1", after=10) for s in payments.STATES},
}


@pytest.mark.parametrize("name", list(PLANS))
def test_each_filter_is_an_index_range_not_a_scan(conn: sqlite3.Connection, name: str) -> None:
    query, args = pq.sql(PLANS[name])
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, args)]
    # A full scan reads "SCAN p" / "SCAN o"; an index walk names its index.
    assert not [step for step in plan if step in ("SCAN p", "SCAN o")], plan
    assert any("INDEX" in step for step in plan), plan
    # Only an account's own few payments are ever sorted; every other filter walks in order.
    sorts = [step for step in plan if "TEMP B-TREE" in step]
    assert not sorts or "account" in name, plan
    # Beside another filter, the channel (most of a node) never drives the walk.
    if name.startswith("channel and"):
        assert not [step for step in plan if "payments_channel" in step], plan


def test_the_day_is_found_in_both_receipt_forms(
    conn: sqlite3.Connection, tx: Callable[..., Any], seed: Any, pay: Any
) -> None:
    seed(conn, [make_bill("1", amount=10**6)])
    day1, day2 = 1_780_000_000.0, 1_780_000_000.0 + 86_400
    old = json.loads(tx(conn, lambda c: pay(c, "DAM-2026-05-1", 1, key="a", now=day1)).body)
    new = json.loads(tx(conn, lambda c: pay(c, "DAM-2026-05-1", 1, key="b", now=day1)).body)
    other = json.loads(tx(conn, lambda c: pay(c, "DAM-2026-05-1", 1, key="c", now=day2)).body)
    # The form printed before node codes existed ({GOV}-{YYYYMMDD}-{n}), as an old row holds it.
    renamed = old["receipt"].replace("DAM-DAM1-", "DAM-", 1)
    tx(conn, lambda c: c.execute("UPDATE payments SET receipt = ? WHERE receipt = ?",
                                 (renamed, old["receipt"])))  # fmt: skip
    assert new["receipt"].startswith("DAM-DAM1-") and renamed.count("-") == 2
    day = new["receipt"].split("-")[2]
    page = pq.search(conn, pq.Filters(day=day))
    assert [i["payment_id"] for i in page.items] == [new["payment_id"], old["payment_id"]]
    assert pq.by_receipt(conn, renamed, None) is not None
    assert pq.by_receipt(conn, renamed, "someone-else") is None
    assert pq.search(conn, pq.Filters()).items[0]["payment_id"] == other["payment_id"]


def test_items_are_the_payment_documents_and_pages_chain(
    conn: sqlite3.Connection, tx: Callable[..., Any], seed: Any, pay: Any
) -> None:
    seed(conn, [make_bill("1", amount=10**6)])
    ids = [json.loads(tx(conn, lambda c, i=i: pay(c, "DAM-2026-05-1", 1, key=f"k{i}")).body)
           ["payment_id"] for i in range(5)]  # fmt: skip
    first = pq.search(conn, pq.Filters(limit=2))
    assert first.items == [payments.find(conn, i) for i in reversed(ids[-2:])]
    assert first.next is not None
    second = pq.search(conn, pq.Filters(limit=2, after=int(first.next)))
    third = pq.search(conn, pq.Filters(limit=2, after=int(second.next or 0)))
    assert [i["payment_id"] for i in first.items + second.items + third.items] == ids[::-1]
    assert third.next is None
    assert outbox.get_many(conn, [1, 2, 99]).keys() == {1, 2}
