"""Schema migrations recorded in a table, each applied in its own transaction.

The outbox's own migrations live here too; callers append theirs after them.
A migration may add tables, columns and indexes; it never drops or rewrites outbox rows.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from outbox.errors import MigrationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str


OUTBOX_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "outbox.0001_entries",
        """
        CREATE TABLE outbox_entries (
            seq             INTEGER PRIMARY KEY,
            id              TEXT NOT NULL UNIQUE,
            kind            TEXT NOT NULL,
            payload         BLOB NOT NULL,
            created_at      REAL NOT NULL,
            state           TEXT NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'delivered', 'rejected')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            last_error      TEXT,
            verdict         TEXT,
            reason          TEXT,
            version         INTEGER,
            settled_at      REAL,
            prev_hash       TEXT NOT NULL,
            hash            TEXT NOT NULL
        );
        -- Partial indexes: small (only entries that need attention) and cheap to keep.
        CREATE INDEX outbox_entries_pending ON outbox_entries (seq) WHERE state = 'pending';
        CREATE INDEX outbox_entries_rejected ON outbox_entries (seq) WHERE state = 'rejected';
        CREATE TABLE outbox_idempotency (
            client      TEXT NOT NULL,
            key         TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            status      INTEGER NOT NULL,
            response    BLOB NOT NULL,
            created_at  REAL NOT NULL,
            -- A rowid table: rows carry a stored response (hundreds of bytes), which in a
            -- WITHOUT ROWID b-tree keyed by random client keys would split pages on most inserts.
            PRIMARY KEY (client, key)
        );
        """,
    ),
)

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       TEXT PRIMARY KEY,
    applied_at REAL NOT NULL
)
"""


def applied(conn: sqlite3.Connection) -> list[str]:
    conn.execute(_LEDGER)
    return [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY rowid")]


def apply_migrations(conn: sqlite3.Connection, migrations: Iterable[Migration]) -> list[str]:
    """Apply the migrations not yet recorded, in order; return the names applied now.

    `conn` must be in autocommit mode (isolation_level=None) and outside a transaction.
    """
    done = set(applied(conn))
    now_applied: list[str] = []
    for migration in migrations:
        if migration.name in done:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                (migration.name, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
        log.info("applied migration %s", migration.name)
        now_applied.append(migration.name)
    return now_applied


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (executescript would commit on its own)."""
    out: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                out.append(pending.strip())
            pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out
