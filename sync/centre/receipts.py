"""Receipts at the centre: node codes unique per governorate, and checking a receipt's QR.

A node's code is learnt from the receipts it replays: the first node to send a code in a
governorate holds it; a batch carrying a code another node holds is refused whole (409
`receipt_code_taken`), so the node keeps its payments and the operator renames one node.
Receipt keys are kept by key id, so receipts printed before a key rotation still verify.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from sync import receiptcode, timefmt
from sync.centre.config import NodeSettings
from sync.errors import Refused

MIGRATION_SQL = """
CREATE TABLE receipt_codes (
    governorate TEXT NOT NULL,
    code        TEXT NOT NULL,
    node        TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    PRIMARY KEY (governorate, code)
) WITHOUT ROWID;
CREATE TABLE receipt_keys (
    node    TEXT NOT NULL,
    key_id  TEXT NOT NULL,
    key     BLOB NOT NULL,   -- the derived receipt key, never the shared secret
    seen_at REAL NOT NULL,
    PRIMARY KEY (node, key_id)
) WITHOUT ROWID;
"""

GENUINE, FORGED, UNKNOWN = "genuine", "forged", "genuine-but-unknown"


def codes_of(receipts: Iterable[str], allowed: frozenset[str] = frozenset()) -> list[str]:
    """The node codes of `receipts`, sorted, without the `allowed` duplicates (which are
    neither refused nor claimed)."""
    found = {c for c in map(receiptcode.code_of, receipts) if c is not None}
    return sorted(found - allowed)


def check_codes(node: str, governorate: str, held: Mapping[str, str]) -> None:
    """Refused (409) if another node holds one of the codes (`held`: code -> its node).

    Part of the batch's write job: a refusal raises before anything of the batch is written.
    """
    for code, owner in sorted(held.items()):
        if owner != node:
            raise Refused(
                409, "receipt_code_taken",
                f"receipt code {code} of governorate {governorate} belongs to node {owner}:"
                f" give node {node} another node.receipt_code; its payments wait until then",
            )  # fmt: skip


def held_codes(conn: sqlite3.Connection, governorate: str, codes: list[str]) -> dict[str, str]:
    """code -> node for those of `codes` some node holds in `governorate`."""
    if not codes:
        return {}
    marks = ", ".join("?" * len(codes))
    return dict(
        conn.execute(
            f"SELECT code, node FROM receipt_codes WHERE governorate = ? AND code IN ({marks})",
            (governorate, *codes),
        ).fetchall()
    )


def claim_codes(
    conn: sqlite3.Connection,
    node: str,
    governorate: str,
    receipts: Iterable[str],
    now: float,
    allowed: frozenset[str] = frozenset(),
) -> None:
    """Record the codes in `receipts` as `node`'s (SQLite); Refused (409) if another node
    holds one (except the `allowed` duplicates)."""
    codes = codes_of(receipts, allowed)
    held = held_codes(conn, governorate, codes)
    check_codes(node, governorate, held)
    conn.executemany(
        "INSERT INTO receipt_codes (governorate, code, node, first_seen) VALUES (?, ?, ?, ?)",
        [(governorate, code, node, now) for code in codes if code not in held],
    )


def codes(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(governorate, code, node) for every code held."""
    rows = conn.execute("SELECT governorate, code, node FROM receipt_codes ORDER BY 1, 2")
    return [(str(g), str(c), str(n)) for g, c, n in rows]


def remember_keys(conn: sqlite3.Connection, nodes: Mapping[str, NodeSettings], now: float) -> None:
    """Keep the receipt key of every live secret (a write job, at each start): a key that a
    rotation retires keeps verifying the receipts printed under it."""
    conn.executemany(
        "INSERT INTO receipt_keys (node, key_id, key, seen_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (node, key_id) DO NOTHING",
        [
            (node, key_id, receiptcode.receipt_key(secret), now)
            for node, settings in nodes.items()
            for key_id, secret in settings.keys.items()
        ],
    )


@dataclass(frozen=True)
class Check:
    outcome: str  # GENUINE, FORGED or UNKNOWN
    detail: str


def verify(conn: sqlite3.Connection, text: str, nodes: Mapping[str, NodeSettings]) -> Check:
    """What the centre can say of a receipt's QR text (a read job)."""
    try:
        code = receiptcode.parse(text)
    except receiptcode.BadReceiptText as exc:
        return Check(FORGED, f"not a receipt code: {exc}")
    key = _key(conn, code.node, code.key_id, nodes)
    row = conn.execute(
        "SELECT bill_id, amount, verdict, payload FROM entries WHERE id = ? AND node = ?",
        (code.payment_id, code.node),
    ).fetchone()
    return judge(code, key, row)


def judge(code: receiptcode.ReceiptCode, key: bytes | None, row: Sequence[Any] | None) -> Check:
    """The receipt's outcome from its node's receipt key and the entry the centre holds
    (bill_id, amount, verdict, payload), either None when there is none."""
    if key is None:
        return Check(FORGED, f"node {code.node} has no receipt key {code.key_id} at the centre")
    if not code.valid_under(key):
        return Check(FORGED, "the MAC does not match: the figures were changed or made up")
    if row is None:
        return Check(
            UNKNOWN,
            f"signed by node {code.node}, but the centre holds no payment {code.payment_id}"
            " yet: not replayed, or taken and never recorded",
        )
    bill_id, amount, verdict, payload = row
    at = _accepted_at(payload)
    if bill_id != code.bill_id or amount != code.amount or (at is not None and at != code.at):
        return Check(
            FORGED,
            f"payment {code.payment_id} is recorded for bill {bill_id}, {amount} piastres:"
            " not what the receipt says",
        )
    return Check(
        GENUINE,
        f"payment {code.payment_id} of node {code.node}: bill {bill_id}, {amount} piastres,"
        f" verdict {verdict}",
    )


def live_key(nodes: Mapping[str, NodeSettings], node: str, key_id: str) -> bytes | None:
    live = nodes.get(node)
    if live is not None and key_id in live.keys:
        return receiptcode.receipt_key(live.keys[key_id])
    return None


def _key(
    conn: sqlite3.Connection, node: str, key_id: str, nodes: Mapping[str, NodeSettings]
) -> bytes | None:
    live = live_key(nodes, node, key_id)
    if live is not None:
        return live
    row = conn.execute(
        "SELECT key FROM receipt_keys WHERE node = ? AND key_id = ?", (node, key_id)
    ).fetchone()
    return None if row is None else bytes(row[0])


def _accepted_at(payload: bytes) -> int | None:
    try:
        data = msgpack.unpackb(payload, raw=False)
        return int(timefmt.parse_iso(data["accepted_at"]))
    except Exception:  # an older or odd payload: the bill and amount still decide
        return None
