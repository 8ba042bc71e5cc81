"""Bills at the centre: loading a billing export, upserting with versions, online payments.

Every function here is a write job on a connection (run it through `CentreStore.write`).
A changed bill gets version + 1 and a new change_seq, so nodes pull it; an unchanged one
is left alone. Payments recorded at the centre are never undone by a re-import.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TextIO

from sync.bill import ACCOUNT, CYCLE
from sync.bill import FIELDS as BILL_FIELDS
from sync.bill import bill_id as make_bill_id
from sync.centre import fines
from sync.centre.store import BILL_COLUMNS, ChangeSeq
from sync.errors import ImportFailed
from sync.fines import allocate
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


def upsert_bills(
    conn: sqlite3.Connection, governorate: str, bills: Iterable[BillInput], now: float
) -> UpsertResult:
    """Insert new bills (version 1), bump changed ones, leave unchanged ones alone."""
    counter = ChangeSeq(conn)
    stamp = iso(now)
    inserts: list[tuple[object, ...]] = []
    updates: list[tuple[object, ...]] = []
    credits: list[tuple[object, ...]] = []
    unchanged = 0
    lookup = (
        "SELECT account, name, address, meter, kwh, amount, paid, due_date, version, credit"
        " FROM bills WHERE bill_id = ?"
    )
    for bill in bills:
        bill_id = bill.bill_id(governorate)
        row = conn.execute(lookup, (bill_id,)).fetchone()
        if row is None:
            inserts.append((bill_id, bill.account, governorate, bill.cycle, bill.name, bill.address,
                            bill.meter, bill.kwh, bill.amount, bill.paid, bill.due_date, 1, stamp,
                            0, 0, counter.next()))  # fmt: skip
            continue
        # The centre may have recorded payments the export does not know yet: keep the larger.
        paid = min(bill.amount, max(bill.paid, row[6]))
        new = (bill.account, bill.name, bill.address, bill.meter, bill.kwh, bill.amount, paid,
               bill.due_date)  # fmt: skip
        if new == tuple(row[:8]):
            unchanged += 1
            continue
        excess = max(0, row[6] - bill.amount)
        updates.append((*new[1:], row[8] + 1, row[9] + excess, stamp, counter.next(), bill_id))
        if excess:
            # A bill corrected below what was already paid: the excess is the subscriber's.
            credits.append((f"import-{bill_id}-v{row[8] + 1}", governorate, bill.account, bill_id,
                            excess, now))  # fmt: skip
    if inserts:
        conn.executemany(
            f"INSERT INTO bills ({BILL_COLUMNS}, change_seq)"
            f" VALUES ({', '.join('?' for _ in range(len(BILL_FIELDS) + 1))})",
            inserts,
        )
    if updates:
        conn.executemany(
            "UPDATE bills SET name = ?, address = ?, meter = ?, kwh = ?, amount = ?, paid = ?,"
            " due_date = ?, version = ?, credit = ?, updated_at = ?, change_seq = ?"
            " WHERE bill_id = ?",
            updates,
        )
    if credits:
        conn.executemany(
            "INSERT INTO credits (source, governorate, account, bill_id, amount, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            credits,
        )
    counter.save()
    return UpsertResult(inserted=len(inserts), updated=len(updates), unchanged=unchanged)


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


def pay_online(conn: sqlite3.Connection, bill_id: str, amount: int, now: float) -> OnlinePayment:
    """A payment made at the centre (the ministry's site): bumps the bill's version."""
    if type(amount) is not int or amount <= 0:
        raise ImportFailed("the amount must be a positive whole number of piastres")
    row = conn.execute(
        "SELECT governorate, account, amount, paid, version, due_date, fine_paid FROM bills"
        " WHERE bill_id = ?",
        (bill_id,),
    ).fetchone()
    if row is None:
        raise ImportFailed(f"no bill {bill_id} at the centre")
    governorate, account, billed, paid, version, due_date, fine_paid = row
    # The late fine first, as at a counter (sync/PROTOCOL.md 5.5), for the centre's today.
    owed = fines.judge(
        fines.rules_of(conn, governorate), iso(now), now, billed, due_date,
        max(0, billed - paid), fine_paid,
    )  # fmt: skip
    to_fine, rest = allocate(amount, owed)
    applied = min(rest, billed - paid)
    credit = rest - applied
    # Always a change now: what is not applied becomes the bill's published credit.
    version += 1
    counter = ChangeSeq(conn)
    conn.execute(
        "UPDATE bills SET paid = ?, version = ?, credit = credit + ?, fine_paid = fine_paid + ?,"
        " change_seq = ?, updated_at = ? WHERE bill_id = ?",
        (paid + applied, version, credit, to_fine, counter.next(), iso(now), bill_id),
    )
    counter.save()
    cursor = conn.execute(
        "INSERT INTO online_payments (bill_id, amount, credit, version, paid_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (bill_id, amount, credit, version, now),
    )
    if credit:
        conn.execute(
            "INSERT INTO credits (source, governorate, account, bill_id, amount, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (f"online-{cursor.lastrowid}", governorate, account, bill_id, credit, now),
        )
    return OnlinePayment(bill_id, amount, applied, credit, paid + applied, version, to_fine)
