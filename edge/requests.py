"""Subscribers' requests taken at the node (DESIGN 5.16): a complaint, an installment or a
correction request, as an outbox entry, and the statuses the centre gives it.

Requests are few, so each is a plain writer job (the idempotency check, the entry, its row
and the stored answer in one commit). Statuses arrive in the changes feed (protocol 4) and
are kept per version: the request's history.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import msgpack

import outbox
from edge import errors
from edge.payments import Reply, stored_reply
from outbox.lookup import select_in
from sync import receiptcode
from sync.timefmt import iso, local_day

KIND = "request"
KINDS = ("complaint", "installment", "correction")
TEXT_MAX = 2000  # characters of a request's text (edge.text's rule, line breaks allowed)
PHONE = re.compile(r"^\+?[0-9]{6,15}\Z")
TABLE_SQL = """
-- The requests this node took (edge/requests.py, DESIGN 5.16): `seq` is the request's own
-- outbox entry, `id` its entry id, `number` what the subscriber is given.
CREATE TABLE requests (
    seq           INTEGER PRIMARY KEY REFERENCES outbox_entries (seq),
    id            TEXT NOT NULL UNIQUE,
    number        TEXT NOT NULL UNIQUE,
    day           TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('complaint', 'installment', 'correction')),
    account       TEXT NOT NULL,
    bill_id       TEXT,
    text          TEXT NOT NULL,
    contact_phone TEXT,
    amount        INTEGER CHECK (amount > 0),
    channel       TEXT NOT NULL,
    at            REAL NOT NULL
);
CREATE INDEX requests_account ON requests (account, seq);
CREATE INDEX requests_day ON requests (day);
-- Each status the centre gave a request (the feed carries every version once).
CREATE TABLE request_statuses (
    request_id TEXT NOT NULL REFERENCES requests (id),
    version    INTEGER NOT NULL,
    status     TEXT NOT NULL,
    note       TEXT,
    at         TEXT NOT NULL,
    PRIMARY KEY (request_id, version)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Filed:
    """A request as the client sent it, checked for shape (not yet against the mirror)."""

    kind: str
    account: str
    bill_id: str | None
    text: str
    contact_phone: str | None
    amount: int | None

    def fingerprint(self) -> str:
        return outbox.fingerprint(
            "POST /v1/requests", self.kind, self.account, self.bill_id or "", self.text,
            self.contact_phone or "", str(self.amount or ""),
        )  # fmt: skip


@dataclass(frozen=True)
class Rules:
    node: str
    governorate: str
    receipt_code: str
    tz: tzinfo


@dataclass(frozen=True)
class RequestCall:
    channel: str
    key: str
    filed: Filed
    now: float
    entry_id: str


def number(rules: Rules, day: str, n: int) -> str:
    """`{GOV}-{CODE}-R{YYYYMMDD}-{n:04d}`: unique in the governorate, as receipts are."""
    code = rules.receipt_code or receiptcode.default_code(rules.node)
    return f"{rules.governorate}-{code}-R{day}-{n:04d}"


def take(conn: sqlite3.Connection, rules: Rules, call: RequestCall) -> Reply:
    """The write job: a stored answer for a retried key, else check, write and answer 201."""
    f = call.filed
    fp = f.fingerprint()
    known = stored_reply(conn, call.channel, call.key, fp)
    if known is not None:
        return known
    if (
        conn.execute("SELECT 1 FROM bills WHERE account = ? LIMIT 1", (f.account,)).fetchone()
        is None
    ):
        raise errors.UnknownAccount(f"no bills for account {f.account} in this node's mirror")
    if f.bill_id is not None:
        owner = conn.execute("SELECT account FROM bills WHERE bill_id = ?", (f.bill_id,)).fetchone()
        if owner is None or owner[0] != f.account:
            raise errors.UnknownBill(f"bill {f.bill_id} is not one of account {f.account}'s")
    day = local_day(int(call.now), rules.tz)
    n = conn.execute("SELECT COUNT(*) FROM requests WHERE day = ?", (day,)).fetchone()[0] + 1
    payload = {
        "request_id": call.entry_id, "number": number(rules, day, n), "kind": f.kind,
        "account": f.account, "bill_id": f.bill_id, "text": f.text,
        "contact_phone": f.contact_phone, "amount": f.amount, "channel": call.channel,
        "idempotency_key": call.key, "taken_at": iso(call.now),
    }  # fmt: skip
    raw = msgpack.packb(payload, use_bin_type=True)
    (appended,) = outbox.append_many(conn, [(KIND, raw, call.entry_id, call.now)])
    conn.execute(
        "INSERT INTO requests (seq, id, number, day, kind, account, bill_id, text, contact_phone,"
        " amount, channel, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (appended.seq, call.entry_id, payload["number"], day, f.kind, f.account, f.bill_id,
         f.text, f.contact_phone, f.amount, call.channel, call.now),
    )  # fmt: skip
    body = json.dumps(find(conn, call.entry_id), ensure_ascii=False).encode()
    outbox.idempotency.remember(
        conn, call.channel, call.key, fp, outbox.StoredResponse(201, body), now=call.now
    )
    return Reply(201, body, replayed=False, payment_id=call.entry_id)


def apply_statuses(conn: sqlite3.Connection, records: list[dict[str, Any]]) -> int:
    """Keep the statuses of this node's requests (a write job); others' are not ours to
    hold. A version already held changes nothing. Returns how many were new."""
    ours = {
        row[0]
        for row in select_in(
            conn,
            "SELECT id FROM requests WHERE id IN ({marks})",
            [r["request_id"] for r in records],
        )
    }
    rows = [
        (r["request_id"], r["version"], r["status"], r["note"], r["updated_at"])
        for r in records
        if r["request_id"] in ours
    ]
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO request_statuses (request_id, version, status, note, at)"
        " VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    return conn.total_changes - before


_SELECT = (
    "SELECT r.id, r.number, r.kind, r.account, r.bill_id, r.text, r.contact_phone, r.amount,"
    " r.channel, r.at, o.state, o.reason FROM requests r JOIN outbox_entries o ON o.seq = r.seq"
)


def _documents(conn: sqlite3.Connection, rows: list[Any]) -> list[dict[str, Any]]:
    history: dict[str, list[dict[str, Any]]] = {}
    for rid, version, status, note, at in select_in(
        conn,
        "SELECT request_id, version, status, note, at FROM request_statuses"
        " WHERE request_id IN ({marks}) ORDER BY request_id, version",
        [row[0] for row in rows],
    ):
        history.setdefault(rid, []).append(
            {"version": version, "status": status, "note": note, "at": at}
        )
    out = []
    for rid, num, kind, account, bill_id, text, phone, amount, channel, at, state, why in rows:
        seen = history.get(rid, [])
        # Before the centre's first status: `submitted` while it is on its way, `received`
        # once delivered (the feed brings the centre's own soon), `rejected` if refused.
        status = seen[-1]["status"] if seen else _before_feed(state)
        out.append({
            "request_id": rid, "number": num, "kind": kind, "account": account,
            "bill_id": bill_id, "text": text, "contact_phone": phone, "amount": amount,
            "status": status, "note": seen[-1]["note"] if seen else None,
            "sync": {"pending": "pending_sync", "delivered": "synced"}.get(state, "rejected"),
            "reason": why if state == "rejected" else None, "channel": channel,
            "taken_at": iso(at), "history": seen,
        })  # fmt: skip
    return out


def _before_feed(state: str) -> str:
    return {"pending": "submitted", "delivered": "received"}.get(state, "rejected")


def find(conn: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    rows = conn.execute(_SELECT + " WHERE r.id = ? OR r.number = ?", (request_id, request_id))
    found = _documents(conn, rows.fetchall())
    return found[0] if found else None


def of_account(conn: sqlite3.Connection, account: str, limit: int = 200) -> list[dict[str, Any]]:
    """The account's requests taken at this node, newest first (at most `limit`)."""
    rows = conn.execute(
        _SELECT + " WHERE r.account = ? ORDER BY r.seq DESC LIMIT ?", (account, limit)
    ).fetchall()
    return _documents(conn, rows)


def counts(conn: sqlite3.Connection, day: str) -> tuple[int, int]:
    """(requests taken on the local `day`, requests still open: not refused nor done)."""
    today = conn.execute("SELECT COUNT(*) FROM requests WHERE day = ?", (day,)).fetchone()
    open_ = conn.execute(
        "SELECT COUNT(*) FROM requests r JOIN outbox_entries o ON o.seq = r.seq"
        " WHERE o.state != 'rejected' AND NOT EXISTS (SELECT 1 FROM request_statuses s"
        " WHERE s.request_id = r.id AND s.status IN ('refused', 'done'))"
    ).fetchone()
    return int(today[0]), int(open_[0])
