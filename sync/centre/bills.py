"""Bills at the centre: loading a billing export, upserting with versions, online payments.

The decisions (`plan_upsert`, `decide_online`) serve both stores; the functions taking a
connection are SQLite write jobs (sync.centre.sqlitestore runs them).
A changed bill gets version + 1 and a new change_seq, so nodes pull it; an unchanged one
is left alone. Payments recorded at the centre are never undone by a re-import.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from outbox.lookup import select_in
from sync.bill import ACCOUNT, CYCLE
from sync.bill import FIELDS as BILL_FIELDS
from sync.bill import bill_id as make_bill_id
from sync.centre import fines
from sync.centre.store import ChangeSeq
from sync.errors import ImportFailed
from sync.fines import Rule, allocate
from sync.timefmt import iso

CSV_HEADER = ("account", "cycle", "name", "address", "meter", "kwh", "amount", "paid", "due_date")
_DIGITS = re.compile(r"^[0-9]{1,18}\Z")
_TEXT_MAX = 512
CHUNK = 5_000  # rows per write job of an import: a running centre commits between them


@dataclass(frozen=True)
class BillInput:
    """One bill as the governorate's billing system states it."""

    account: str
    cycle: str
    name: str
    address: str
    meter: str
    kwh: int
    amount: int
    paid: int
    due_date: str

    def bill_id(self, governorate: str) -> str:
        return make_bill_id(governorate, self.cycle, self.account)


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int


def _field_error(line: int, field: str, why: str) -> ImportFailed:
    return ImportFailed(f"line {line}: {field} {why}")


def parse_row(row: dict[str, str], line: int) -> BillInput:
    """One CSV row checked field by field; raises ImportFailed naming the line and field."""
    values = {key: (row.get(key) or "").strip() for key in CSV_HEADER}
    if not ACCOUNT.match(values["account"]):
        raise _field_error(line, "account", "must be 1-20 digits")
    if not CYCLE.match(values["cycle"]):
        raise _field_error(line, "cycle", "must be YYYY-MM")
    for key in ("name", "address", "meter"):
        if not values[key] or len(values[key]) > _TEXT_MAX:
            raise _field_error(line, key, f"must be 1-{_TEXT_MAX} characters")
    numbers: dict[str, int] = {}
    for key in ("kwh", "amount", "paid"):
        if not _DIGITS.match(values[key]):
            raise _field_error(
                line, key, "must be a whole non-negative number (piastres for money)"
            )
        numbers[key] = int(values[key])
    if numbers["paid"] > numbers["amount"]:
        raise _field_error(line, "paid", "is more than amount")
    try:
        date.fromisoformat(values["due_date"])
    except ValueError:
        raise _field_error(line, "due_date", "must be a date YYYY-MM-DD") from None
    if len(values["due_date"]) != 10:
        raise _field_error(line, "due_date", "must be a date YYYY-MM-DD")
    return BillInput(
        account=values["account"],
        cycle=values["cycle"],
        name=values["name"],
        address=values["address"],
        meter=values["meter"],
        kwh=numbers["kwh"],
        amount=numbers["amount"],
        paid=numbers["paid"],
        due_date=values["due_date"],
    )


def _rows(text: TextIO) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) of a billing export, header checked; ImportFailed naming the line."""
    reader = csv.DictReader(text)
    try:
        header = tuple(name.strip() for name in reader.fieldnames or ())
        if sorted(header) != sorted(CSV_HEADER):
            raise ImportFailed(
                f"line 1: the header must be {','.join(CSV_HEADER)}, not {','.join(header)}"
            )
        reader.fieldnames = list(header)
        for row in reader:
            line = reader.line_num
            if None in row or any(value is None for value in row.values()):
                raise ImportFailed(f"line {line}: expected {len(CSV_HEADER)} columns")
            yield line, row
    except csv.Error as exc:
        raise ImportFailed(f"line {reader.line_num}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"after line {reader.line_num}: not UTF-8 ({exc.reason})") from exc


def iter_csv(
    path: Path, *, read: Callable[[int], None] | None = None
) -> Iterator[tuple[int, BillInput]]:
    """(line, bill) for every row of the file at `path`, checked, streamed: memory stays flat
    whatever its size. `read(n)` is told of the bytes read (progress). Duplicates are
    `check_csv`'s to find."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc}") from exc
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        at = 0
        for rows, (line, row) in enumerate(_rows(text), 1):
            yield line, parse_row(row, line)
            if read is not None and rows % 1000 == 0:
                now = raw.tell()
                read(now - at)
                at = now
        if read is not None:
            read(raw.tell() - at)


def check_csv(path: Path, *, read: Callable[[int], None] | None = None) -> int:
    """Check the whole file (every field, and no account and cycle twice) before anything is
    applied; return its rows. The pairs seen go to a temporary SQLite table on disk, not a
    Python set: 2,000,000 of them would cost hundreds of MB."""
    seen = sqlite3.connect("")  # a private temporary database, deleted when closed
    try:
        seen.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        rows, chunk = 0, []
        for line, bill in iter_csv(path, read=read):
            rows += 1
            chunk.append((f"{bill.account}|{bill.cycle}", line))
            if len(chunk) >= CHUNK:
                _remember(seen, chunk)
                chunk = []
        _remember(seen, chunk)
        return rows
    finally:
        seen.close()


def _remember(seen: sqlite3.Connection, chunk: list[tuple[str, int]]) -> None:
    try:
        with seen:  # all of the chunk or none of it
            seen.executemany("INSERT INTO seen VALUES (?, ?)", chunk)
        return
    except sqlite3.IntegrityError:
        pass
    with seen:
        for key, line in chunk:  # rare: find the repeated pair, and where it came first
            first = seen.execute("SELECT line FROM seen WHERE key = ?", (key,)).fetchone()
            if first is not None:
                account, cycle = key.split("|")
                raise ImportFailed(
                    f"line {line}: account {account} cycle {cycle} is already on line {first[0]}"
                )
            seen.execute("INSERT INTO seen VALUES (?, ?)", (key, line))
    raise AssertionError("a repeated row was reported and not found")  # pragma: no cover


# What upsert_bills compares of a bill already at the centre (and the version and credit).
EXISTING_COLUMNS = ("account", "name", "address", "meter", "kwh", "amount", "paid", "due_date",
                    "version", "credit")  # fmt: skip
INSERT_COLUMNS = (*BILL_FIELDS, "change_seq")
UPDATE_COLUMNS = ("name", "address", "meter", "kwh", "amount", "paid", "due_date", "version",
                  "credit", "updated_at", "change_seq", "bill_id")  # fmt: skip


@dataclass
class UpsertPlan:
    """The rows of an import, each change numbered in input order (`k`: its change_seq is
    the counter's value + k): inserts are INSERT_COLUMNS less change_seq, updates
    UPDATE_COLUMNS less change_seq and bill_id."""

    inserts: list[tuple[int, tuple[object, ...]]]
    updates: list[tuple[int, str, tuple[object, ...]]]  # (k, bill_id, row)
    credits: list[tuple[object, ...]]
    unchanged: int

    @property
    def changes(self) -> int:
        return len(self.inserts) + len(self.updates)

    def result(self) -> UpsertResult:
        return UpsertResult(len(self.inserts), len(self.updates), self.unchanged)


def plan_upsert(
    governorate: str, bills: Iterable[BillInput], existing: dict[str, tuple[object, ...]],
    now: float,
) -> UpsertPlan:  # fmt: skip
    """Insert new bills (version 1), bump changed ones, leave unchanged ones alone: `existing`
    is bill_id -> EXISTING_COLUMNS of the bills already at the centre."""
    stamp = iso(now)
    plan = UpsertPlan([], [], [], 0)
    k = 0
    for bill in bills:
        bill_id = bill.bill_id(governorate)
        row = existing.get(bill_id)
        if row is None:
            k += 1
            plan.inserts.append((k, (bill_id, bill.account, governorate, bill.cycle, bill.name,
                                     bill.address, bill.meter, bill.kwh, bill.amount, bill.paid,
                                     bill.due_date, 1, stamp, 0, 0)))  # fmt: skip
            continue
        old_paid, version, credit = int(row[6]), int(row[8]), int(row[9])  # type: ignore[call-overload]
        # The centre may have recorded payments the export does not know yet: keep the larger.
        paid = min(bill.amount, max(bill.paid, old_paid))
        new = (bill.account, bill.name, bill.address, bill.meter, bill.kwh, bill.amount, paid,
               bill.due_date)  # fmt: skip
        if new == tuple(row[:8]):
            plan.unchanged += 1
            continue
        excess = max(0, old_paid - bill.amount)
        k += 1
        plan.updates.append((k, bill_id, (*new[1:], version + 1, credit + excess, stamp)))
        if excess:
            # A bill corrected below what was already paid: the excess is the subscriber's.
            plan.credits.append((f"import-{bill_id}-v{version + 1}", governorate, bill.account,
                                 bill_id, excess, now))  # fmt: skip
    return plan


def upsert_bills(
    conn: sqlite3.Connection, governorate: str, bills: Iterable[BillInput], now: float
) -> UpsertResult:
    """Insert new bills (version 1), bump changed ones, leave unchanged ones alone (SQLite)."""
    rows = list(bills)
    sql = f"SELECT bill_id, {', '.join(EXISTING_COLUMNS)} FROM bills WHERE bill_id IN ({{marks}})"
    existing = {
        r[0]: tuple(r[1:]) for r in select_in(conn, sql, [b.bill_id(governorate) for b in rows])
    }
    plan = plan_upsert(governorate, rows, existing, now)
    counter = ChangeSeq(conn)
    base = counter.last
    if plan.inserts:
        conn.executemany(
            f"INSERT INTO bills ({', '.join(INSERT_COLUMNS)})"
            f" VALUES ({', '.join('?' for _ in INSERT_COLUMNS)})",
            [(*row, base + k) for k, row in plan.inserts],
        )
    if plan.updates:
        conn.executemany(
            "UPDATE bills SET name = ?, address = ?, meter = ?, kwh = ?, amount = ?, paid = ?,"
            " due_date = ?, version = ?, credit = ?, updated_at = ?, change_seq = ?"
            " WHERE bill_id = ?",
            [(*row, base + k, bill_id) for k, bill_id, row in plan.updates],
        )
    if plan.credits:
        conn.executemany(
            "INSERT INTO credits (source, governorate, account, bill_id, amount, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            plan.credits,
        )
    counter.last = base + plan.changes
    counter.save()
    return plan.result()


def accounts_without_cycle(
    conn: sqlite3.Connection, governorate: str, cycle: str
) -> list[tuple[str, str, str, str]]:
    """(account, name, address, meter) of its latest bill, for each account of `governorate`
    without a bill of `cycle` (what `edge centre cycle` issues one for)."""
    if not CYCLE.match(cycle):
        raise ImportFailed(f"bad cycle {cycle!r}: use YYYY-MM")
    rows = conn.execute(
        "SELECT b.account, b.name, b.address, b.meter FROM bills b"
        " WHERE b.governorate = ?1 AND b.cycle = (SELECT MAX(c.cycle) FROM bills c"
        "   WHERE c.governorate = ?1 AND c.account = b.account)"
        " AND NOT EXISTS (SELECT 1 FROM bills d WHERE d.governorate = ?1"
        "   AND d.account = b.account AND d.cycle = ?2)"
        " ORDER BY b.account",
        (governorate, cycle),
    ).fetchall()
    return [(str(a), str(n), str(ad), str(m)) for a, n, ad, m in rows]


def count_of(conn: sqlite3.Connection, governorate: str) -> int:
    """The governorate's bills: what a snapshot announces it will carry (PROTOCOL.md 4.4)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM bills WHERE governorate = ?", (governorate,)
    ).fetchone()
    return int(row[0])


@dataclass(frozen=True)
class OnlinePayment:
    bill_id: str
    amount: int
    applied: int
    credit: int
    paid: int
    version: int
    fine: int = 0  # of `amount`, what went to the bill's late fine (taken first)


def decide_online(
    row: Sequence[Any], rules: list[Rule], bill_id: str, amount: int, now: float
) -> tuple[OnlinePayment, str, str]:
    """What an online payment does to a bill (`row`: governorate, account, amount, paid,
    version, due_date, fine_paid), with the bill's governorate and account."""
    if type(amount) is not int or amount <= 0:
        raise ImportFailed("the amount must be a positive whole number of piastres")
    governorate, account, billed, paid, version, due_date, fine_paid = row
    # The late fine first, as at a counter (sync/PROTOCOL.md 5.5), for the centre's today.
    owed = fines.judge(rules, iso(now), now, billed, due_date, max(0, billed - paid), fine_paid)
    to_fine, rest = allocate(amount, owed)
    applied = min(rest, billed - paid)
    credit = rest - applied
    # Always a change now: what is not applied becomes the bill's published credit.
    done = OnlinePayment(bill_id, amount, applied, credit, paid + applied, version + 1, to_fine)
    return done, str(governorate), str(account)


ONLINE_COLUMNS = "governorate, account, amount, paid, version, due_date, fine_paid"


def pay_online(conn: sqlite3.Connection, bill_id: str, amount: int, now: float) -> OnlinePayment:
    """A payment made at the centre (the ministry's site): bumps the bill's version."""
    if type(amount) is not int or amount <= 0:
        raise ImportFailed("the amount must be a positive whole number of piastres")
    row = conn.execute(
        f"SELECT {ONLINE_COLUMNS} FROM bills WHERE bill_id = ?", (bill_id,)
    ).fetchone()
    if row is None:
        raise ImportFailed(f"no bill {bill_id} at the centre")
    done, governorate, account = decide_online(
        row, fines.rules_of(conn, row[0]), bill_id, amount, now
    )
    counter = ChangeSeq(conn)
    conn.execute(
        "UPDATE bills SET paid = ?, version = ?, credit = credit + ?, fine_paid = fine_paid + ?,"
        " change_seq = ?, updated_at = ? WHERE bill_id = ?",
        (done.paid, done.version, done.credit, done.fine, counter.next(), iso(now), bill_id),
    )
    counter.save()
    cursor = conn.execute(
        "INSERT INTO online_payments (bill_id, amount, credit, version, paid_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (bill_id, amount, done.credit, done.version, now),
    )
    if done.credit:
        conn.execute(
            "INSERT INTO credits (source, governorate, account, bill_id, amount, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (f"online-{cursor.lastrowid}", governorate, account, bill_id, done.credit, now),
        )
    return done
