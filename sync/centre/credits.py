"""Subscribers' credit at the centre: money paid beyond a bill, published on the bill itself.

`credits` (centre.0001) holds one row per entry that made credit (a node's payment, an
online payment, an import that lowered a paid bill); `bills.credit` is the published sum
per bill, which the feeds carry (protocol 3). `account_credit` is the one definition of
an account's balance; `edge centre credits` lists the accounts that have one.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from sync.bill import GOVERNORATE
from sync.timefmt import iso

# Bills that already hold credit get it published: a new version and change_seq each (one
# more than the counter, in bill_id order) so nodes pull them; the counter moves past them.
MIGRATION_SQL = """
ALTER TABLE bills ADD COLUMN credit INTEGER NOT NULL DEFAULT 0 CHECK (credit >= 0);
UPDATE bills SET
    credit = (SELECT SUM(c.amount) FROM credits c WHERE c.bill_id = bills.bill_id),
    version = version + 1,
    change_seq = (SELECT last FROM change_counter WHERE id = 1)
        + (SELECT COUNT(DISTINCT c.bill_id) FROM credits c WHERE c.bill_id <= bills.bill_id)
WHERE bill_id IN (SELECT bill_id FROM credits);
UPDATE change_counter SET last = last
    + (SELECT COUNT(*) FROM bills WHERE bill_id IN (SELECT bill_id FROM credits))
WHERE id = 1;
"""
FORMATS = ("csv", "json")
CSV_HEADER = ("governorate", "account", "credit", "source", "bill_id", "amount", "created_at")


@dataclass(frozen=True)
class Source:
    """One entry that made credit: a node's entry id, `online-{n}` or `import-{bill}-v{n}`."""

    source: str
    bill_id: str
    amount: int
    created_at: str


@dataclass(frozen=True)
class AccountCredit:
    governorate: str
    account: str
    credit: int
    sources: list[Source] = field(default_factory=list)


def account_credit(conn: sqlite3.Connection, governorate: str, account: str) -> int:
    """The account's credit: the sum of its bills' published credit.

    The one definition: a change that takes credit back (a reversal, credit used on a later
    bill) lowers `bills.credit` of the bill it was on, with a new version, and this follows.
    """
    row = conn.execute(
        "SELECT COALESCE(SUM(credit), 0) FROM bills WHERE governorate = ? AND account = ?",
        (governorate, account),
    ).fetchone()
    return int(row[0])


def accounts(conn: sqlite3.Connection, governorate: str | None = None) -> list[AccountCredit]:
    """Every account with credit (of one governorate, or all), with the entries that made it."""
    sql = "SELECT DISTINCT governorate, account FROM bills WHERE credit > 0"
    args: tuple[str, ...] = ()
    if governorate is not None:
        sql += " AND governorate = ?"
        args = (governorate,)
    found = []
    for gov, account in conn.execute(sql + " ORDER BY governorate, account", args).fetchall():
        rows = conn.execute(
            "SELECT source, bill_id, amount, created_at FROM credits"
            " WHERE governorate = ? AND account = ? ORDER BY id",
            (gov, account),
        ).fetchall()
        sources = [Source(r[0], r[1], r[2], iso(r[3])) for r in rows]
        found.append(AccountCredit(gov, account, account_credit(conn, gov, account), sources))
    return found


def write_csv(found: list[AccountCredit]) -> None:
    """One line per source; `credit` repeats the account's balance on each of its lines."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(CSV_HEADER)
    for acc in found:
        for s in acc.sources:
            out.writerow((acc.governorate, acc.account, acc.credit, s.source, s.bill_id,
                          s.amount, s.created_at))  # fmt: skip


def write_json(found: list[AccountCredit]) -> None:
    json.dump({"accounts": [asdict(acc) for acc in found]}, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def _governorate(text: str) -> str:
    if not GOVERNORATE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a governorate code like DAM")
    return text


def register(
    command: Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Add `edge centre credits` through the centre group's `command` helper."""
    parser = command("credits", "accounts with credit, their amount and what made it", run)
    parser.add_argument("--governorate", type=_governorate, help="only this governorate")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="csv (default) or json")


def show(found: list[AccountCredit], fmt: str) -> int:
    (write_json if fmt == "json" else write_csv)(found)
    return 0
