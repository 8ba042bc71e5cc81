"""Idempotency records: per (client, key) the request's fingerprint and the stored response.

Called inside the writer's transaction, so a concurrent retry with the same key waits for
the first request's commit and then reads its stored response.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass

from outbox.errors import IdempotencyKeyReused
from outbox.lookup import insert_rows


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes


def fingerprint(*parts: bytes | str) -> str:
    """A stable digest of a request's meaningful parts (method, path, canonical body)."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()


def lookup(
    conn: sqlite3.Connection, client: str, key: str, request_fingerprint: str
) -> StoredResponse | None:
    """The stored response for this key, None if the key is new; raises if the request differs."""
    row = conn.execute(
        "SELECT fingerprint, status, response FROM outbox_idempotency WHERE client = ? AND key = ?",
        (client, key),
    ).fetchone()
    if row is None:
        return None
    if row[0] != request_fingerprint:
        raise IdempotencyKeyReused(client, key)
    return StoredResponse(status=int(row[1]), body=bytes(row[2]))


def remember(
    conn: sqlite3.Connection,
    client: str,
    key: str,
    request_fingerprint: str,
    response: StoredResponse,
    *,
    now: float | None = None,
) -> None:
    conn.execute(
        "INSERT INTO outbox_idempotency (client, key, fingerprint, status, response, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            client,
            key,
            request_fingerprint,
            response.status,
            response.body,
            time.time() if now is None else now,
        ),
    )


def lookup_many(
    conn: sqlite3.Connection, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, StoredResponse]]:
    """Stored (fingerprint, response) per known (client, key); the caller compares fingerprints."""
    by_client: dict[str, list[str]] = {}
    for client, key in dict.fromkeys(pairs):
        by_client.setdefault(client, []).append(key)
    found: dict[tuple[str, str], tuple[str, StoredResponse]] = {}
    for client, keys in by_client.items():
        # `client = ? AND key IN (...)` searches the primary key; a row-value IN would scan.
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = conn.execute(
                "SELECT key, fingerprint, status, response FROM outbox_idempotency"
                f" WHERE client = ? AND key IN ({marks})",
                [client, *chunk],
            )
            for key, fp, status, body in rows:
                found[(client, key)] = (fp, StoredResponse(int(status), bytes(body)))
    return found


def remember_many(
    conn: sqlite3.Connection, rows: list[tuple[str, str, str, StoredResponse]], *, now: float
) -> None:
    insert_rows(
        conn,
        "INSERT INTO outbox_idempotency (client, key, fingerprint, status, response, created_at)"
        " VALUES ",
        [(client, key, fp, resp.status, resp.body, now) for client, key, fp, resp in rows],
    )
