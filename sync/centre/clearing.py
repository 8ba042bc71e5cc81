"""Clearing at the centre (issue 16): the ledger's clearing columns, the clearing report by
governorate, channel kind and method, and one node's day as reconciliation asks for it.

Payloads are msgpack, so the fields clearing needs (receipt, method, channel, cashier,
accepted_at) are read from them here, in Python; a correction (void, refund) takes them from
the payment it names. A channel's kind is a naming rule on the node's token name (CHANNEL_KINDS).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import msgpack

from outbox.lookup import select_in
from sync import protocol
from sync.centre import readings, requests
from sync.centre.ledger import SHOWN_VERDICT
from sync.receiptcode import RECEIPT
from sync.timefmt import iso

# The old columns first, so scripts reading the first six keep working.
LEDGER_HEADER = ("id", "node", "seq", "bill_id", "amount", "verdict", "accepted_at",
                 "recorded_at", "receipt", "method", "channel", "cashier", "kind")  # fmt: skip
# A channel is the name of the node token that took the payment: `bank-*` is a bank's,
# `epay-*` an e-payment company's, `online-*` the node's own web channel; any other name is a
# counter. The centre's own online payments (`edge centre pay`) are `online` too.
CHANNEL_KINDS = (("bank-", "bank"), ("epay-", "e-payment"), ("online-", "online"))
FIGURES = ("applied", "credited", "rejected", "reversed", "refunded")
CLEARING_HEADER = ("recorded_day", "governorate", "channel_kind", "method", "kind",
                   "accepted_day", *(f"{f}_{p}" for f in FIGURES for p in ("count", "amount")))  # fmt: skip
_FIELDS = ("receipt", "method", "channel", "cashier", "accepted_at")
_ENTRY = (
    f"SELECT id, node, seq, bill_id, amount, {SHOWN_VERDICT}, received_at, kind, payload,"
    " verdict, reason FROM entries"
)


def channel_kind(channel: str) -> str:
    return next((kind for prefix, kind in CHANNEL_KINDS if channel.startswith(prefix)), "counter")


def _payload(raw: bytes) -> dict[str, Any]:
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception:  # a malformed payload (recorded as rejected): no clearing fields
        return {}
    return data if isinstance(data, dict) else {}


def _fields(data: dict[str, Any]) -> dict[str, str]:
    return {f: str(data[f]) if isinstance(data.get(f), str) else "" for f in _FIELDS}


def _with_fields(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]]
) -> Iterator[tuple[Any, ...]]:
    """Each entry row with its clearing fields; a correction borrows its payment's."""
    decoded = [_payload(row[8]) for row in rows]
    targets = {d["payment_id"] for row, d in zip(rows, decoded, strict=True)
               if row[7] not in ("payment", "retarget") and isinstance(d.get("payment_id"), str)}  # fmt: skip
    originals = {
        r[0]: _fields(_payload(r[1]))
        for r in select_in(conn, "SELECT id, payload FROM entries WHERE id IN ({marks})", targets)
    }
    for row, data in zip(rows, decoded, strict=True):
        fields = _fields(data)
        if row[7] not in ("payment", "retarget"):
            target = data.get("payment_id")
            fields = originals.get(target, fields) if isinstance(target, str) else fields
        yield (*row[:8], fields, *row[9:])


def ledger_rows(conn: sqlite3.Connection, node: str | None = None) -> Iterator[tuple[Any, ...]]:
    """LEDGER_HEADER's columns in (node, seq) order, a thousand entries at a time."""
    if node is None:
        cursor = conn.execute(_ENTRY + " ORDER BY node, seq")
    else:
        cursor = conn.execute(_ENTRY + " WHERE node = ? ORDER BY seq", (node,))
    while rows := cursor.fetchmany(1000):
        for row in _with_fields(conn, rows):
            f = row[8]
            yield (*row[:6], f["accepted_at"], iso(row[6]), f["receipt"], f["method"],
                   f["channel"], f["cashier"], row[7])  # fmt: skip


def _bounds(day: date, tz: tzinfo) -> tuple[float, float]:
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def _accepted_day(receipt: str) -> str:
    match = RECEIPT.match(receipt)
    if match is None:
        return ""
    d = match.group(3)
    return f"{d[:4]}-{d[4:6]}-{d[6:]}"


def clearing(
    conn: sqlite3.Connection, day: date, tz: tzinfo, governorate: str | None = None
) -> list[dict[str, Any]]:
    """What the centre recorded on local day `day` (`tz`), one row per governorate, channel
    kind, method, entry kind and the node's acceptance day (an outage's backlog shows the
    day it was taken beside the day it arrived); online payments at the centre included."""
    start, end = _bounds(day, tz)
    govs: dict[str, str] = {}
    # Meter readings and requests carry no money: they are not in the clearing.
    rows = conn.execute(
        _ENTRY + " WHERE received_at >= ? AND received_at < ? AND kind NOT IN (?, ?)",
        (start, end, readings.KIND, requests.KIND),
    )
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    while batch := rows.fetchmany(1000):
        for row in _with_fields(conn, batch):
            f = row[8]
            gov = govs.get(row[1]) or _gov(f["receipt"], row[3])
            govs.setdefault(row[1], gov)
            key = (day.isoformat(), gov, channel_kind(f["channel"]), f["method"], row[7],
                   _accepted_day(f["receipt"]))  # fmt: skip
            _count(groups, key, row[5], row[4] or 0)
    online = conn.execute(
        "SELECT bill_id, amount, credit, paid_at FROM online_payments"
        " WHERE paid_at >= ? AND paid_at < ?",
        (start, end),
    )
    for bill_id, amount, credit, paid_at in online:
        accepted = datetime.fromtimestamp(paid_at, tz).date().isoformat()
        key = (day.isoformat(), bill_id[:3], "online", "online", "payment", accepted)
        _count(groups, key, "credited" if credit == amount else "applied", amount)
    found = [dict(zip(CLEARING_HEADER[:6], k, strict=True)) | v for k, v in sorted(groups.items())]
    return [r for r in found if governorate is None or r["governorate"] == governorate]


def _gov(receipt: str, bill_id: str | None) -> str:
    return receipt[:3] if receipt else (bill_id or "")[:3]


def _count(groups: dict[tuple[str, ...], dict[str, Any]], key: tuple[str, ...], figure: str,
           amount: int) -> None:  # fmt: skip
    row = groups.setdefault(key, {f"{f}_{p}": 0 for f in FIGURES for p in ("count", "amount")})
    row[f"{figure}_count"] += 1
    row[f"{figure}_amount"] += amount


def node_day(conn: sqlite3.Connection, node: str, day: date) -> list[protocol.LedgerEntry]:
    """The node's entries of its local day `day`: payments whose receipt is of that day and
    every correction of them (as the node's day report counts them)."""
    # Nodes are within 14 h of UTC: nothing taken on `day` reached the centre before this.
    since = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() - 86_400
    stamp = day.strftime("%Y%m%d")
    rows = conn.execute(_ENTRY + " WHERE node = ? AND received_at >= ? ORDER BY seq", (node, since))
    out: list[protocol.LedgerEntry] = []
    while batch := rows.fetchmany(1000):
        for row in _with_fields(conn, batch):
            match = RECEIPT.match(row[8]["receipt"])
            if match is not None and match.group(3) == stamp:
                out.append(protocol.LedgerEntry(row[2], row[0], row[7], row[4], row[9], row[10]))
    return out


def show(rows: Iterable[dict[str, Any]], fmt: str, out: Any) -> None:
    found = list(rows)
    if fmt == "json":
        json.dump(found, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=CLEARING_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(found)
