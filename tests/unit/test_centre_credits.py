"""Credit at the centre (sync/centre/credits.py): the migration publishes credit recorded before
protocol 3, an account's credit is the sum over its bills, and every path that makes credit
puts it on its bill with a new version and change_seq, so the feed carries it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from helpers import bill_input

import outbox
from sync.centre import bills, credits, store

GOV = "DAM"
BEFORE = [m for m in store.CENTRE_MIGRATIONS if m.name != "centre.bill_credit"]


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    yield db
    db.close()


def fetch(conn: sqlite3.Connection, bill_id: str) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT credit, version, change_seq FROM bills WHERE bill_id = ?", (bill_id,)
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def test_the_migration_publishes_earlier_credit_with_new_versions(
    conn: sqlite3.Connection,
) -> None:
    outbox.apply_migrations(conn, BEFORE)
    conn.execute("BEGIN")
    accounts = ["0100000001", "0100000002", "0100000003"]
    ids = [f"{GOV}-2026-05-{a}" for a in accounts]
    # The bills as a protocol-2 centre stored them (no credit column).
    conn.executemany(
        "INSERT INTO bills (bill_id, account, governorate, cycle, name, address, meter, kwh,"
        " amount, paid, due_date, version, updated_at, change_seq)"
        " VALUES (?, ?, ?, '2026-05', 'n', 'a', 'm', 1, 100000, 100000, '2026-07-15', 1,"
        " '2026-06-01T00:00:00.000Z', ?)",
        [(bid, a, GOV, i + 1) for i, (bid, a) in enumerate(zip(ids, accounts, strict=True))],
    )
    conn.execute("UPDATE change_counter SET last = 3")
    # Credit recorded by protocol 2 (no bills.credit column yet): two rows on one bill.
    conn.executemany(
        "INSERT INTO credits (source, governorate, account, bill_id, amount, created_at)"
        " VALUES (?, ?, ?, ?, ?, 1.0)",
        [("e1", GOV, accounts[0], ids[0], 500), ("e2", GOV, accounts[0], ids[0], 700),
         ("e3", GOV, accounts[2], ids[2], 9_960_000)],
    )  # fmt: skip
    conn.execute("COMMIT")
    assert conn.execute("SELECT last FROM change_counter").fetchone()[0] == 3
    assert outbox.apply_migrations(conn, store.CENTRE_MIGRATIONS) == ["centre.bill_credit"]
    assert fetch(conn, ids[0]) == (1_200, 2, 4)
    assert fetch(conn, ids[1]) == (0, 1, 2)  # no credit: untouched, not re-sent
    assert fetch(conn, ids[2]) == (9_960_000, 2, 5)
    assert conn.execute("SELECT last FROM change_counter").fetchone()[0] == 5
    # The feed from the old cursor carries exactly the two bills with credit.
    changes = store.read_changes(conn, GOV, 3, 10)
    assert [(b["bill_id"], b["credit"]) for b in changes.changes] == [
        (ids[0], 1_200), (ids[2], 9_960_000)
    ]  # fmt: skip


def test_online_overpayment_and_import_put_credit_on_the_bill(conn: sqlite3.Connection) -> None:
    outbox.apply_migrations(conn, store.CENTRE_MIGRATIONS)
    conn.execute("BEGIN")
    bills.upsert_bills(conn, GOV, [bill_input("0100000001"), bill_input("0100000002")], 1.0)
    bill_id = f"{GOV}-2026-05-0100000001"
    paid = bills.pay_online(conn, bill_id, 130_000, 2.0)
    assert (paid.applied, paid.credit, paid.version) == (100_000, 30_000, 2)
    # Already paid: all of it is credit, and the bill still changes (so nodes pull it).
    again = bills.pay_online(conn, bill_id, 5_000, 3.0)
    assert (again.applied, again.credit, again.version) == (0, 5_000, 3)
    assert fetch(conn, bill_id) == (35_000, 3, 4)
    # The billing system lowers the bill below what was paid: the excess is credit too.
    other = f"{GOV}-2026-05-0100000002"
    bills.pay_online(conn, other, 100_000, 4.0)
    bills.upsert_bills(conn, GOV, [bill_input("0100000002", amount=80_000)], 5.0)
    assert fetch(conn, other)[:2] == (20_000, 3)
    conn.execute("COMMIT")
    assert credits.account_credit(conn, GOV, "0100000001") == 35_000
    assert credits.account_credit(conn, GOV, "0100000009") == 0
    listed = credits.accounts(conn, GOV)
    assert [(a.account, a.credit, [s.amount for s in a.sources]) for a in listed] == [
        ("0100000001", 35_000, [30_000, 5_000]), ("0100000002", 20_000, [20_000])
    ]  # fmt: skip
    assert [s.source for s in listed[0].sources] == ["online-1", "online-2"]
    assert credits.accounts(conn, "ALE") == []
    assert len(credits.accounts(conn)) == 2


def test_account_credit_sums_every_bill_of_the_account(conn: sqlite3.Connection) -> None:
    outbox.apply_migrations(conn, store.CENTRE_MIGRATIONS)
    conn.execute("BEGIN")
    account = "0100000001"
    bills.upsert_bills(conn, GOV, [bill_input(account), bill_input(account, cycle="2026-07")], 1.0)
    bills.pay_online(conn, f"{GOV}-2026-05-{account}", 100_100, 2.0)
    bills.pay_online(conn, f"{GOV}-2026-07-{account}", 100_200, 2.0)
    conn.execute("COMMIT")
    assert credits.account_credit(conn, GOV, account) == 300
    assert credits.account_credit(conn, "ALE", account) == 0
