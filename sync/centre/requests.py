"""Subscribers' requests at the centre: a node's `request` entries (PROTOCOL 5.4), their
statuses, and the change feed that carries each status back to the nodes (4.3).

A request is recorded `received`; the company then sets `in_review`, `accepted`, `refused`
or `done` (`edge centre request set-status`). Every status is a new version with a new
`change_seq` from the bills' counter, so one cursor follows bills and requests. An accepted
correction sets its bill's amount to the amount claimed; an accepted installment leaves
the first instalment due on the bill and defers the rest (`deferred`): either is a new
version of the bill, which flows to the nodes' mirrors like any change.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from sync.timefmt import iso

KIND = "request"
KINDS = ("complaint", "installment", "correction")
STATUSES = ("received", "in_review", "accepted", "refused", "done")
SET_STATUSES = STATUSES[1:]
FIELDS = ("request_id", "number", "kind", "account", "bill_id", "text", "contact_phone",
          "amount", "channel", "taken_at")  # fmt: skip
FEED_FIELDS = ("request_id", "status", "note", "version", "updated_at")
COLUMNS = ("id", "node", "governorate", "number", "kind", "account", "bill_id", "text",
           "contact_phone", "amount", "status", "note", "version", "updated_at")  # fmt: skip
HISTORY_COLUMNS = ("id", "version", "status", "note", "at", "governorate", "change_seq")
NextSeq = Callable[[], int]
NOTE_MAX = 1000  # characters; the feed carries strings of at most 1024
LIST_HEADER = ("id", "node", "number", "kind", "account", "bill_id", "amount", "status", "version")

MIGRATION_SQL = """
-- Every request a node sent that the centre took, and its current status; its history is
-- one row per version, each with a change_seq from the bills' counter: the feed carries
-- every version, and one cursor follows bills and requests.
CREATE TABLE requests (
    id            TEXT PRIMARY KEY,
    node          TEXT NOT NULL,
    governorate   TEXT NOT NULL,
    number        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    account       TEXT NOT NULL,
    bill_id       TEXT,
    text          TEXT NOT NULL,
    contact_phone TEXT,
    amount        INTEGER,
    status        TEXT NOT NULL,
    note          TEXT,
    deferred      INTEGER,
    version       INTEGER NOT NULL,
    updated_at    TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX requests_number ON requests (number);
CREATE TABLE request_history (
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    note        TEXT,
    at          TEXT NOT NULL,
    governorate TEXT NOT NULL,
    change_seq  INTEGER NOT NULL,
    PRIMARY KEY (id, version)
) WITHOUT ROWID;
CREATE INDEX request_history_changes ON request_history (governorate, change_seq);
"""


@dataclass(frozen=True)
class Request:
    number: str
    kind: str
    account: str
    bill_id: str | None
    text: str
    contact_phone: str | None
    amount: int | None


class RequestRefused(Exception):
    """A status the centre cannot set (the message says why)."""


def parse(payload: bytes, entry_id: str) -> Request | None:
    """The request in a payload, None when it is malformed."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:  # any msgpack failure means the same thing: a malformed payload
        return None
    if not isinstance(data, dict) or any(f not in data for f in FIELDS):
        return None
    if data["request_id"] != entry_id or data["kind"] not in KINDS:
        return None
    if any(not isinstance(data[f], str) for f in ("number", "account", "text")):
        return None
    if any(not isinstance(data[f], str | None) for f in ("bill_id", "contact_phone")):
        return None
    amount = data["amount"]
    if amount is not None and (type(amount) is not int or amount <= 0):
        return None
    if data["kind"] != "complaint" and (amount is None or data["bill_id"] is None):
        return None
    return Request(
        data["number"], data["kind"], data["account"], data["bill_id"], data["text"],
        data["contact_phone"], amount,
    )  # fmt: skip


def judge(
    r: Request, meters_of: dict[str, set[str]], owners: dict[str, str]
) -> tuple[str, str | None]:
    """(verdict, reason) of a request, from its governorate's accounts and its bills' owners
    (what the store read for the batch); an applied one is recorded `received`."""
    if r.account not in meters_of:
        return "rejected", "unknown_account"
    if r.bill_id is not None:
        owner = owners.get(r.bill_id)
        if owner is None:
            return "rejected", "unknown_bill"
        if owner != r.account:
            return "rejected", "account_mismatch"
    return "applied", None


def row(entry_id: str, node: str, governorate: str, r: Request, stamp: str) -> tuple[Any, ...]:
    """The requests row of an applied request (COLUMNS' order), at version 1."""
    return (entry_id, node, governorate, r.number, r.kind, r.account, r.bill_id, r.text,
            r.contact_phone, r.amount, "received", None, 1, stamp)  # fmt: skip


def set_status(
    conn: sqlite3.Connection, next_seq: NextSeq, request_id: str, status: str, note: str | None,
    now: float,
) -> dict[str, Any]:  # fmt: skip
    """Give a request a new status (a write job); an accepted installment or correction
    changes its bill. Raises RequestRefused for an unknown request or a status not allowed."""
    check_status(status)
    row = conn.execute(
        f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ? OR number = ?",
        (request_id, request_id),
    ).fetchone()
    if row is None:
        raise RequestRefused(f"no request {request_id}")
    found_id, number, kind, bill_id, amount, current, version, governorate = row
    check_transition(request_id, current, status)
    stamp = iso(now)
    deferred = None
    if status == "accepted" and kind in ("installment", "correction"):
        deferred = _change_bill(conn, next_seq, kind, bill_id, amount, stamp)
    conn.execute(
        "UPDATE requests SET status = ?, note = ?, deferred = COALESCE(?, deferred),"
        " version = ?, updated_at = ? WHERE id = ?",
        (status, note, deferred, version + 1, stamp, found_id),
    )
    _history(conn, next_seq, found_id, version + 1, status, note, stamp, governorate)
    return {"request_id": found_id, "number": number, "status": status,
            "version": version + 1, "deferred": deferred}  # fmt: skip


def _history(
    conn: sqlite3.Connection, next_seq: NextSeq, request_id: str, version: int, status: str,
    note: str | None, stamp: str, governorate: str,
) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO request_history (id, version, status, note, at, governorate, change_seq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (request_id, version, status, note, stamp, governorate, next_seq()),
    )


REQUEST_COLUMNS = "id, number, kind, bill_id, amount, status, version, governorate"


def check_status(status: str) -> None:
    if status not in SET_STATUSES:
        raise RequestRefused(f"status must be one of {', '.join(SET_STATUSES)}")


def check_transition(request_id: str, current: str, status: str) -> None:
    """RequestRefused unless a request that is `current` may become `status`."""
    if current in ("done", "refused") or (current == "accepted" and status != "done"):
        raise RequestRefused(f"request {request_id} is {current}: it can only be {_next(current)}")


def bill_change(kind: str, amount: int, old: int, paid: int) -> tuple[int, int | None]:
    """(the bill's new amount, what is deferred) when a request of `kind` is accepted."""
    if kind == "correction":
        # The amount the subscriber claims becomes the bill's; never below what was paid.
        return max(amount, paid), None
    # The first instalment stays due now; the rest is the billing system's to bill later.
    new = min(old, paid + amount)
    return new, old - new


def _next(current: str) -> str:
    return "done" if current == "accepted" else "left as it is"


def _change_bill(
    conn: sqlite3.Connection, next_seq: NextSeq, kind: str, bill_id: str, amount: int,
    stamp: str,
) -> int | None:  # fmt: skip
    bill_row = conn.execute(
        "SELECT amount, paid, version FROM bills WHERE bill_id = ?", (bill_id,)
    ).fetchone()
    if bill_row is None:
        raise RequestRefused(f"the request's bill {bill_id} is not at the centre")
    old, paid, version = bill_row
    new, deferred = bill_change(kind, amount, old, paid)
    conn.execute(
        "UPDATE bills SET amount = ?, version = ?, change_seq = ?, updated_at = ? WHERE bill_id = ?",
        (new, version + 1, next_seq(), stamp, bill_id),
    )
    return deferred


def feed(
    conn: sqlite3.Connection, governorate: str, since: int, limit: int
) -> list[tuple[int, dict[str, Any]]]:
    """(change_seq, status record) of every status the governorate's requests got after
    `since`, oldest first: each version once, so a node holds the whole history."""
    rows = conn.execute(
        "SELECT id, status, note, version, at, change_seq FROM request_history"
        " WHERE governorate = ? AND change_seq > ? ORDER BY change_seq LIMIT ?",
        (governorate, since, limit),
    ).fetchall()
    return [(row[5], dict(zip(FEED_FIELDS, row[:5], strict=True))) for row in rows]


def listing(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """Every request: id, node, number, kind, account, bill_id, amount, status, version."""
    return conn.execute(
        "SELECT id, node, number, kind, account, bill_id, amount, status, version FROM requests"
        " ORDER BY updated_at, id"
    ).fetchall()


def register(
    centre_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    run: Callable[[argparse.Namespace, Callable[[Any], int]], int],
    with_store: Callable[..., Any],
) -> None:
    """`edge centre request set-status|list` (run and with_store are sync.centre.cli's)."""
    group = centre_sub.add_parser("request", help="subscribers' requests: list, set a status")
    sub = group.add_subparsers(dest="request_command", required=True, metavar="COMMAND")

    def set_status_cmd(args: argparse.Namespace) -> int:
        def action(settings: Any) -> int:
            async def job(db: Any) -> dict[str, Any] | str:
                try:
                    done: dict[str, Any] = await db.set_request_status(
                        args.id, args.status, args.note, time.time()
                    )
                except RequestRefused as exc:
                    return str(exc)
                return done

            out = asyncio.run(with_store(settings, job))
            if isinstance(out, str):
                print(f"edge centre request: {out}", file=sys.stderr)
                return 1
            print(json.dumps(out, ensure_ascii=False))
            return 0

        return run(args, action)

    def list_cmd(args: argparse.Namespace) -> int:
        def action(settings: Any) -> int:
            found = asyncio.run(with_store(settings, lambda db: db.requests_list()))
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(LIST_HEADER)
            writer.writerows(found)
            return 0

        return run(args, action)

    parser = sub.add_parser("set-status", help="give a request a new status (and note)")
    parser.add_argument("--config", required=True, type=Path, help="the centre's TOML file")
    parser.add_argument("id", metavar="ID", help="the request id or its number")
    parser.add_argument("status", choices=SET_STATUSES, help="the new status")
    parser.add_argument("--note", default=None, type=_note, help="shown to the subscriber")
    parser.set_defaults(func=set_status_cmd)
    parser = sub.add_parser("list", help="every request and its status, as CSV")
    parser.add_argument("--config", required=True, type=Path, help="the centre's TOML file")
    parser.set_defaults(func=list_cmd)


def _note(text: str) -> str:
    if not 1 <= len(text) <= NOTE_MAX or any(unicodedata.category(c).startswith("C") for c in text):
        raise argparse.ArgumentTypeError(f"a note is 1-{NOTE_MAX} printable characters")
    return text
