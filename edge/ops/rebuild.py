"""The node's own rows of entries a resync adopts from the centre (DESIGN 5.20): what each
kind wrote beside its outbox entry when it was taken, made again from its payload.

The payloads are the node's own, as it sent them (their hashes were checked against the
chain), so each row is what the lost database held: payments and their receipts, the
corrections' links, meter readings and requests (whose numbers must not be given again).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

import outbox
from edge import actions, readings, requests
from sync import chain
from sync.timefmt import parse_iso

_RECEIPT_TAIL = 15  # "YYYYMMDD-nnnnnn", the end of every receipt number (DESIGN 4)
_PAYMENT_SQL = (
    "INSERT INTO payments (seq, bill_id, account, amount, method, cashier, channel, receipt,"
    " accepted_at, fine) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ACTION_SQL = (
    f"INSERT INTO {actions.TABLE} (seq, kind, target, reason, by, at) VALUES (?, ?, ?, ?, ?, ?)"
)
_READING_SQL = (
    "INSERT INTO meter_readings (seq, account, meter, reading, read_at, source, note,"
    " rollover, flag, channel, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_REQUEST_SQL = (
    "INSERT INTO requests (seq, id, number, day, kind, account, bill_id, text, contact_phone,"
    " amount, channel, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class Rows:
    """Rows to insert, by table, and the entries whose payload could not be read."""

    payments: list[tuple[Any, ...]] = field(default_factory=list)
    actions: list[tuple[Any, ...]] = field(default_factory=list)
    readings: list[tuple[Any, ...]] = field(default_factory=list)
    requests: list[tuple[Any, ...]] = field(default_factory=list)
    unread: list[int] = field(default_factory=list)


def _payment(seq: int, p: dict[str, Any]) -> tuple[Any, ...]:
    return (seq, p["bill_id"], p["account"], p["amount"], p["method"], p["cashier"],
            p["channel"], p["receipt"], parse_iso(p["accepted_at"]), p.get("fine") or 0)  # fmt: skip


def _add(rows: Rows, e: chain.Held, p: dict[str, Any], seq_of: dict[str, int]) -> None:
    if e.kind == "payment":
        rows.payments.append(_payment(e.seq, p))
    elif e.kind == "retarget":
        rows.payments.append(_payment(e.seq, p))
        rows.actions.append((e.seq, e.kind, seq_of[p["original"]], p["reason"], p["by"],
                             parse_iso(p["accepted_at"])))  # fmt: skip
    elif e.kind in ("void", "refund"):
        rows.actions.append((e.seq, e.kind, seq_of[p["payment_id"]], p["reason"], p["by"],
                             parse_iso(p["at"])))  # fmt: skip
    elif e.kind == readings.KIND:
        rows.readings.append((e.seq, p["account"], p["meter"], p["reading"], p["read_at"],
                              p["source"], p["note"], int(bool(p["rollover"])), p["flag"],
                              p["channel"], parse_iso(p["taken_at"])))  # fmt: skip
    elif e.kind == requests.KIND:
        day = p["number"].rsplit("-", 2)[-2].removeprefix("R")  # {GOV}-{CODE}-R{day}-{n}
        rows.requests.append((e.seq, e.id, p["number"], day, p["kind"], p["account"],
                              p["bill_id"], p["text"], p["contact_phone"], p["amount"],
                              p["channel"], parse_iso(p["taken_at"])))  # fmt: skip
    else:
        rows.unread.append(e.seq)


def rows_of(conn: sqlite3.Connection, entries: Sequence[chain.Held]) -> Rows:
    """The rows of `entries`; a correction's payment may be in the backup or among them."""
    named = {p for e in entries for p in _targets(e)}
    seq_of = {e.id: e.seq for e in entries}
    for eid in named - seq_of.keys():
        found = outbox.get(conn, eid)
        if found is not None:
            seq_of[eid] = found.seq
    rows = Rows()
    for e in entries:
        try:
            payload = msgpack.unpackb(e.payload, raw=False)
            _add(rows, e, payload, seq_of)
        except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException):
            rows.unread.append(e.seq)  # kept in the outbox all the same, and said
    return rows


def _targets(e: chain.Held) -> list[str]:
    if e.kind not in actions.STATE_OF:
        return []
    try:
        p = msgpack.unpackb(e.payload, raw=False)
        return [str(p["original"] if e.kind == "retarget" else p["payment_id"])]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        return []


def receipt_counters(payments: list[tuple[Any, ...]]) -> dict[str, int]:
    """The highest receipt number of each local day, so no receipt printed is given again."""
    counters: dict[str, int] = {}
    for row in payments:
        tail = str(row[7])[-_RECEIPT_TAIL:]
        day, n = tail[:8], tail[9:]
        if day.isdigit() and n.isdigit():
            counters[day] = max(counters.get(day, 0), int(n))
    return counters


def insert(conn: sqlite3.Connection, rows: Rows) -> None:
    """Every row, in the caller's transaction, payments first (the corrections name them)."""
    conn.executemany(_PAYMENT_SQL, rows.payments)
    conn.executemany(_ACTION_SQL, rows.actions)
    conn.executemany(_READING_SQL, rows.readings)
    conn.executemany(_REQUEST_SQL, rows.requests)
    conn.executemany(
        "INSERT INTO receipt_counters (day, last) VALUES (?, ?)"
        " ON CONFLICT (day) DO UPDATE SET last = max(last, excluded.last)",
        list(receipt_counters(rows.payments).items()),
    )
