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
ENTRY_COLUMNS = (
    f"id, node, seq, bill_id, amount, {SHOWN_VERDICT}, received_at, kind, payload, verdict, reason"
)
_ENTRY = f"SELECT {ENTRY_COLUMNS} FROM entries"


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


def targets(rows: list[tuple[Any, ...]]) -> set[str]:
    """The payments the corrections among entry rows (_ENTRY's columns) name."""
    found = set()
    for row in rows:
        if row[7] not in ("payment", "retarget"):
            target = _payload(row[8]).get("payment_id")
            if isinstance(target, str):
                found.add(target)
    return found


def attach(rows: list[tuple[Any, ...]], originals: dict[str, bytes]) -> Iterator[tuple[Any, ...]]:
    """Each entry row with its clearing fields in place of its payload; a correction borrows
    those of the payment it names (`originals`: payment id -> payload)."""
    for row in rows:
        fields = _fields(data := _payload(row[8]))
        if row[7] not in ("payment", "retarget"):
            target = data.get("payment_id")
            if isinstance(target, str) and target in originals:
                fields = _fields(_payload(originals[target]))
        yield (*row[:8], fields, *row[9:])


def _with_fields(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]]
) -> Iterator[tuple[Any, ...]]:
    sql = "SELECT id, payload FROM entries WHERE id IN ({marks})"
    return attach(rows, dict(select_in(conn, sql, targets(rows))))


def ledger_line(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of `attach` as LEDGER_HEADER's columns."""
    f = row[8]
    return (*row[:6], f["accepted_at"], iso(row[6]), f["receipt"], f["method"], f["channel"],
            f["cashier"], row[7])  # fmt: skip


def ledger_rows(conn: sqlite3.Connection, node: str | None = None) -> Iterator[tuple[Any, ...]]:
    """LEDGER_HEADER's columns in (node, seq) order, a thousand entries at a time."""
    if node is None:
        cursor = conn.execute(_ENTRY + " ORDER BY node, seq")
    else:
        cursor = conn.execute(_ENTRY + " WHERE node = ? ORDER BY seq", (node,))
    while rows := cursor.fetchmany(1000):
        yield from map(ledger_line, _with_fields(conn, rows))


def bounds(day: date, tz: tzinfo) -> tuple[float, float]:
    """The recording day `day` in `tz` as [start, end) seconds."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def _accepted_day(receipt: str) -> str:
    match = RECEIPT.match(receipt)
    if match is None:
        return ""
    d = match.group(3)
    return f"{d[:4]}-{d[4:6]}-{d[6:]}"


class Groups:
    """The clearing report's rows, counted entry by entry (both stores feed it)."""

    def __init__(self, day: date, tz: tzinfo) -> None:
        self.day, self.tz = day, tz
        self._govs: dict[str, str] = {}
        self._groups: dict[tuple[str, ...], dict[str, Any]] = {}

    def entries(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of `attach` recorded that day (no meter readings or requests)."""
        for row in rows:
            f = row[8]
            gov = self._govs.get(row[1]) or _gov(f["receipt"], row[3])
            self._govs.setdefault(row[1], gov)
            key = (self.day.isoformat(), gov, channel_kind(f["channel"]), f["method"], row[7],
                   _accepted_day(f["receipt"]))  # fmt: skip
            _count(self._groups, key, row[5], row[4] or 0)

    def online(self, rows: Iterable[tuple[str, int, int, float]]) -> None:
        """(bill_id, amount, credit, paid_at) of the day's online payments at the centre."""
        for bill_id, amount, credit, paid_at in rows:
            accepted = datetime.fromtimestamp(paid_at, self.tz).date().isoformat()
            key = (self.day.isoformat(), bill_id[:3], "online", "online", "payment", accepted)
            _count(self._groups, key, "credited" if credit == amount else "applied", amount)

    def rows(self, governorate: str | None) -> list[dict[str, Any]]:
        found = [dict(zip(CLEARING_HEADER[:6], k, strict=True)) | v
                 for k, v in sorted(self._groups.items())]  # fmt: skip
        return [r for r in found if governorate is None or r["governorate"] == governorate]


def clearing(
    conn: sqlite3.Connection, day: date, tz: tzinfo, governorate: str | None = None
) -> list[dict[str, Any]]:
    """What the centre recorded on local day `day` (`tz`), one row per governorate, channel
    kind, method, entry kind and the node's acceptance day (an outage's backlog shows the
    day it was taken beside the day it arrived); online payments at the centre included."""
    start, end = bounds(day, tz)
    groups = Groups(day, tz)
    # Meter readings and requests carry no money: they are not in the clearing.
    rows = conn.execute(
        _ENTRY + " WHERE received_at >= ? AND received_at < ? AND kind NOT IN (?, ?)",
        (start, end, readings.KIND, requests.KIND),
    )
    while batch := rows.fetchmany(1000):
        groups.entries(_with_fields(conn, batch))
    groups.online(
        conn.execute(
            "SELECT bill_id, amount, credit, paid_at FROM online_payments"
            " WHERE paid_at >= ? AND paid_at < ?",
            (start, end),
        )
    )
    return groups.rows(governorate)


def _gov(receipt: str, bill_id: str | None) -> str:
    return receipt[:3] if receipt else (bill_id or "")[:3]


def _count(groups: dict[tuple[str, ...], dict[str, Any]], key: tuple[str, ...], figure: str,
           amount: int) -> None:  # fmt: skip
    row = groups.setdefault(key, {f"{f}_{p}": 0 for f in FIGURES for p in ("count", "amount")})
    row[f"{figure}_count"] += 1
    row[f"{figure}_amount"] += amount


def node_day_since(day: date) -> float:
    # Nodes are within 14 h of UTC: nothing taken on `day` reached the centre before this.
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() - 86_400


def day_entries(rows: Iterable[tuple[Any, ...]], day: date) -> list[protocol.LedgerEntry]:
    """Of `attach` rows in seq order, the payments whose receipt is of `day` and every
    correction of them (as the node's day report counts them)."""
    stamp = day.strftime("%Y%m%d")
    out: list[protocol.LedgerEntry] = []
    for row in rows:
        match = RECEIPT.match(row[8]["receipt"])
        if match is not None and match.group(3) == stamp:
            out.append(protocol.LedgerEntry(row[2], row[0], row[7], row[4], row[9], row[10]))
    return out


def node_day(conn: sqlite3.Connection, node: str, day: date) -> list[protocol.LedgerEntry]:
    """The node's entries of its local day `day` (day_entries)."""
    rows = conn.execute(
        _ENTRY + " WHERE node = ? AND received_at >= ? ORDER BY seq", (node, node_day_since(day))
    )
    out: list[protocol.LedgerEntry] = []
    while batch := rows.fetchmany(1000):
        out += day_entries(_with_fields(conn, batch), day)
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
