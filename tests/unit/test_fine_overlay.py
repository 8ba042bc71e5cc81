"""Late fines in the node's mirror and writer, and at the centre's ledger: the inquiry's SQL
JSON equals the Python view with fines, a payment covers the fine first (also two in one
commit), and the centre, fed the node's very entries, agrees or names `fine_mismatch`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from helpers import GOV, bill_input

import outbox
from edge import corrections, mirror, payments
from outbox import chain
from sync import fines, protocol
from sync.centre import bills, ledger, verdicts
from sync.centre import fines as centre_fines
from sync.centre import store as centre_store

ACCOUNT = "0100234567"
BILL = f"DAM-2026-05-{ACCOUNT}"
# 1 September 2026, noon UTC (15:00 in Damascus): 33 days after the grace of a bill due
# 15 July ended, so two months have started; the same day in UTC and in Damascus.
NOW = datetime(2026, 9, 1, 12, tzinfo=UTC).timestamp()
DAY = date(2026, 9, 1)
RULE = fines.Rule(GOV, 1, date(2026, 1, 1), 15, fixed=500, percent_bp=150, cap=None)
FINE = 2 * (500 + 100_000 * 150 // fines.BP)  # 4,000


@pytest.fixture
def fined(
    conn: sqlite3.Connection, seed: Callable[..., None], bill_factory, tx
) -> sqlite3.Connection:
    seed(conn, [bill_factory(version=3)])
    assert tx(conn, lambda c: mirror.store_rules(c, [RULE]))
    return conn


def pay(
    conn: sqlite3.Connection, tx: Callable[..., Any], amount: int, key: str, now: float = NOW
) -> Any:
    req = payments.PaymentRequest(bill_id=BILL, amount=amount, method="cash", cashier="c1")
    return tx(conn, lambda c: payments.accept(c, node="dam-1", governorate=GOV,
                                              channel="counter-1", key=key, request=req,
                                              now=now, tz=UTC))  # fmt: skip


def test_the_inquiry_json_and_the_view_show_the_same_fine(fined, tx, seed, bill_factory) -> None:
    seed(fined, [bill_factory(cycle="2026-03", due_date="2026-05-15", paid=40_000),
                 bill_factory(cycle="2026-07", due_date="2026-09-15"),
                 bill_factory(cycle="2026-01", due_date="not a date")], cursor=2)  # fmt: skip
    pay(fined, tx, 1_000, "part-of-the-fine")
    views = mirror.bills_for_account(fined, ACCOUNT, DAY)
    found = mirror.account_json(fined, ACCOUNT, DAY)
    assert found is not None
    got = json.loads(found.bills)
    assert [(b["bill_id"], b["fine"], b["due"], b["status"]) for b in got] == [
        (v.bill_id, v.fine, v.due, v.status) for v in views
    ]
    by_id = {v.bill_id: v for v in views}
    assert by_id[BILL].fine == FINE - 1_000 and by_id[BILL].due == 100_000 + FINE - 1_000
    # 2026-03: due 15 May, late from 31 May: 4 months started by 1 September.
    assert by_id[f"DAM-2026-03-{ACCOUNT}"].fine == 4 * 2_000
    assert by_id[f"DAM-2026-07-{ACCOUNT}"].fine == 0  # not due yet
    assert by_id[f"DAM-2026-01-{ACCOUNT}"].fine == 0  # a due date that is not a date
    assert found.total_due == sum(v.due for v in views)
    assert mirror.bill(fined, BILL, DAY) == by_id[BILL]
    undated = mirror.bill(fined, BILL)  # no day given: no fine shown
    assert undated is not None and undated.fine == 0


def test_a_payment_covers_the_fine_first_and_the_fine_stops_when_paid(fined, tx) -> None:
    first = json.loads(pay(fined, tx, 3_000, "a").body)
    assert (first["fine"], first["due_after"]) == (3_000, 100_000 + FINE - 3_000)
    second = json.loads(pay(fined, tx, 50_000, "b").body)
    assert (second["fine"], second["due_after"]) == (FINE - 3_000, 100_000 + FINE - 53_000)
    rows = fined.execute("SELECT amount, fine FROM payments ORDER BY seq").fetchall()
    assert rows == [(3_000, 3_000), (50_000, FINE - 3_000)]
    # A month later the fine has grown, but only what the new month adds is owed.
    later = datetime(2026, 10, 1, 12, tzinfo=UTC).timestamp()
    view = mirror.bill(fined, BILL, date(2026, 10, 1))
    assert view is not None and view.fine == 2_000
    last = json.loads(pay(fined, tx, 2_000 + 100_000 - 49_000, "c", now=later).body)
    assert (last["fine"], last["due_after"]) == (2_000, 0)
    view = mirror.bill(fined, BILL, date(2027, 1, 1))
    assert view is not None and (view.fine, view.due, view.status) == (0, 0, "paid")


def test_two_payments_in_one_commit_pay_the_fine_once(fined, tx) -> None:
    acceptor = payments.Acceptor("dam-1", GOV)
    calls = [
        payments.prepare("dam-1", "counter-1", key,
                         payments.PaymentRequest(BILL, amount, "cash", "c1"), NOW, UTC)
        for key, amount in (("x", FINE - 1), ("y", 10))
    ]  # fmt: skip
    replies = tx(fined, lambda c: acceptor(c, calls))
    assert [json.loads(r.body)["fine"] for r in replies] == [FINE - 1, 1]


def test_payloads_carry_the_node_figure(fined, tx) -> None:
    pay(fined, tx, 10_000, "p")
    (entry,) = outbox.claim(fined, 10)
    payload = protocol.decode_batch(protocol.encode_batch("dam-1", [entry])).entries[0].payload
    assert msgpack.unpackb(payload)["fine"] == FINE


def centre(tmp_path: Path, due_date: str = "2026-07-15") -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "centre.db", isolation_level=None)
    centre_store.migrate(conn)
    conn.execute("BEGIN")
    bills.upsert_bills(conn, GOV, [bill_input(ACCOUNT, due_date=due_date)], NOW)
    centre_fines.publish(conn, GOV, RULE.effective, RULE.grace_days, RULE.fixed,
                         RULE.percent_bp, RULE.cap, NOW)  # fmt: skip
    conn.execute("COMMIT")
    return conn


def send(conn: sqlite3.Connection, entries: list[Any], now: float) -> protocol.Reply:
    wire = protocol.decode_batch(protocol.encode_batch("dam-1", entries)).entries
    conn.execute("BEGIN")
    reply = ledger.record_batch(conn, "dam-1", GOV, wire, now)
    conn.execute("COMMIT")
    return reply


def test_the_centre_counts_the_same_fine_from_the_same_rule(fined, tx, tmp_path) -> None:
    pay(fined, tx, 100_000 + FINE, "all")
    central = centre(tmp_path)
    # Replayed three days later: the centre still dates it by its accepted_at.
    reply = send(central, outbox.claim(fined, 10), NOW + 3 * 86_400)
    assert [(r.verdict, r.reason, r.credit, r.fine) for r in reply.results] == [
        ("applied", None, 0, FINE)
    ]
    # A resend repeats the figure (a lost reply), and the frame carries it to the node.
    again = send(central, outbox.claim(fined, 10), NOW + 4 * 86_400)
    assert [(r.verdict, r.reason, r.fine) for r in again.results] == [
        ("duplicate", "applied", FINE)
    ]
    decoded = protocol.decode_reply(protocol.encode_reply(again.results, again.acked_seq))
    assert decoded.results[0].fine == FINE
    row = central.execute("SELECT paid, fine_paid FROM bills WHERE bill_id = ?", (BILL,))
    assert row.fetchone() == (100_000, FINE)


def test_a_node_a_day_ahead_gets_fine_mismatch_and_the_money_counts(
    conn, seed, bill_factory, tx, tmp_path
) -> None:
    # The centre's today is the bill's last grace day; the node's clock says tomorrow.
    seed(conn, [bill_factory(version=3, due_date="2026-08-17")])
    tx(conn, lambda c: mirror.store_rules(c, [RULE]))
    ahead = NOW + 86_400
    taken = json.loads(pay(conn, tx, 100_000 + 2_000, "ahead", now=ahead).body)
    assert taken["fine"] == 2_000
    central = centre(tmp_path, due_date="2026-08-17")
    reply = send(central, outbox.claim(conn, 10), NOW)
    assert [(r.verdict, r.reason, r.credit, r.fine) for r in reply.results] == [
        ("applied", fines.MISMATCH, 2_000, 0)
    ]
    row = central.execute("SELECT paid, fine_paid, credit FROM bills WHERE bill_id = ?", (BILL,))
    assert row.fetchone() == (100_000, 0, 2_000)
    (entry,) = [r for r in ledger.ledger_rows(central, "dam-1")]
    assert entry[4] == 102_000


def test_a_payment_from_before_fines_is_judged_as_fine_zero(tmp_path) -> None:
    central = centre(tmp_path)
    payload = {"payment_id": "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C", "bill_id": BILL,
               "account": ACCOUNT, "amount": 50_000, "channel": "c", "idempotency_key": "k",
               "method": "cash", "cashier": "c", "accepted_at": "2026-09-01T12:00:00.000Z",
               "receipt": "DAM-DAM1-20260901-000001"}  # fmt: skip
    parsed = verdicts.parse_payment(msgpack.packb(payload), payload["payment_id"])
    assert parsed is not None and parsed.fine is None
    for bad in (-1, 50_001, "10", True):
        forged = {**payload, "fine": bad}
        assert verdicts.parse_payment(msgpack.packb(forged), payload["payment_id"]) is None
    # Sent without a fine while one is owed: the centre takes the fine first and says so.
    raw = msgpack.packb(payload)
    digest = chain.entry_hash(chain.GENESIS, 1, payload["payment_id"], "payment", raw)
    entry = protocol.WireEntry(1, payload["payment_id"], "payment", raw, chain.GENESIS, digest)
    reply = send(central, [entry], NOW)
    assert [(r.verdict, r.reason) for r in reply.results] == [("applied", fines.MISMATCH)]
    row = central.execute("SELECT paid, fine_paid FROM bills WHERE bill_id = ?", (BILL,))
    assert row.fetchone() == (50_000 - FINE, FINE)


def test_stored_rules_are_replaced_only_when_the_centre_changed_them(conn, tx) -> None:
    assert tx(conn, lambda c: mirror.store_rules(c, [RULE]))
    assert not tx(conn, lambda c: mirror.store_rules(c, [RULE]))
    second = fines.Rule(GOV, 2, date(2026, 10, 1), 0, 100, 0, 1_000)
    assert tx(conn, lambda c: mirror.store_rules(c, [second, RULE]))
    assert sorted(mirror.rules(conn), key=lambda r: r.version) == [RULE, second]


def test_each_query_computes_each_bills_fine_once(fined, seed, bill_factory) -> None:
    # Flattened subqueries would call the function once per reference to `fine`.
    seed(fined, [bill_factory(cycle="2026-03", due_date="2026-05-15")], cursor=2)
    calls: list[int] = []

    def counted(*args: Any) -> int:
        calls.append(1)
        return mirror._edge_fine(*args)

    fined.create_function("edge_fine", 10, counted, deterministic=True)
    mirror.account_json(fined, ACCOUNT, DAY)
    assert len(calls) == 2
    calls.clear()
    mirror.dues_by_id(fined, [BILL], DAY)
    assert len(calls) == 1


def test_a_void_at_the_centre_takes_the_fine_back_off_fine_paid(fined, tx, tmp_path) -> None:
    pay(fined, tx, 100_000 + FINE, "voided")
    (entry,) = outbox.claim(fined, 10)
    central = centre(tmp_path)
    send(central, [entry], NOW)
    void = msgpack.packb({"payment_id": entry.id, "bill_id": BILL, "account": ACCOUNT,
                          "amount": 100_000 + FINE, "reason": "typed wrong", "by": "sup",
                          "at": "2026-09-01T12:05:00.000Z"})  # fmt: skip
    void_id = "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5D"
    digest = chain.entry_hash(entry.hash, 2, void_id, "void", void)
    reply = send(central, [protocol.WireEntry(2, void_id, "void", void, entry.hash, digest)], NOW)
    assert [(r.verdict, r.reason) for r in reply.results] == [("applied", None)]
    row = central.execute("SELECT paid, fine_paid FROM bills WHERE bill_id = ?", (BILL,))
    assert row.fetchone() == (0, 0)


def test_a_retarget_onto_an_overdue_bill_pays_its_fine_first(fined, tx, seed, bill_factory) -> None:
    other = "DAM-2026-05-0100000002"
    seed(fined, [bill_factory("0100000002", version=1)], cursor=2)
    taken = json.loads(pay(fined, tx, 30_000, "wrong-bill").body)
    entry = outbox.get(fined, taken["payment_id"])
    assert entry is not None
    result = outbox.Result(entry.seq, entry.id, "rejected", "unknown_bill", None)
    tx(fined, lambda c: outbox.settle(c, [result]))
    rules = corrections.Rules("dam-1", GOV, "", ZoneInfo("Asia/Damascus"), 24 * 3600)
    call = corrections.prepare("dam-1", "retarget", entry.id, "typed wrong", "admin-1", "rt",
                               NOW + 60, other)  # fmt: skip
    doc = json.loads(tx(fined, lambda c: corrections.run(c, rules, call)).body)
    moved = doc["new_payment"]
    assert moved["bill_id"] == other and moved["fine"]["taken"] == FINE
    view = mirror.bill(fined, other, DAY)
    assert view is not None and (view.fine, view.due) == (0, 100_000 - (30_000 - FINE))
    (claimed,) = [e for e in outbox.claim(fined, 10) if e.id == moved["payment_id"]]
    assert msgpack.unpackb(claimed.payload)["fine"] == FINE


def test_an_online_payment_at_the_centre_pays_the_fine_first(tmp_path) -> None:
    central = centre(tmp_path)
    central.execute("BEGIN")
    online = bills.pay_online(central, BILL, 100_000 + FINE + 5, NOW)
    central.execute("COMMIT")
    assert (online.fine, online.applied, online.credit) == (FINE, 100_000, 5)
    row = central.execute("SELECT paid, fine_paid, credit FROM bills WHERE bill_id = ?", (BILL,))
    assert row.fetchone() == (100_000, FINE, 5)
