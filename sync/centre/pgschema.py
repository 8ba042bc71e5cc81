"""The centre's PostgreSQL schema and its migrations, recorded in `schema_migrations` with
the runner semantics of outbox.migrations: each migration once, in order, in its own
transaction, recorded with it; a migration never drops the ledger (entries, chain_heads).

Money and sequence numbers are bigint; times are double precision seconds (as SQLite's REAL);
payloads and keys bytea. `n` (identity) keeps insertion order where SQLite used its rowid.
Several centre processes may start at once: an advisory lock makes one of them migrate.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from outbox.migrations import Migration

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_212_020  # pg_advisory_xact_lock key: one migrating process at a time

PG_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "centre.pg.0001_bills",
        """
        CREATE TABLE bills (
            bill_id     text PRIMARY KEY,
            account     text NOT NULL,
            governorate text NOT NULL,
            cycle       text NOT NULL,
            name        text NOT NULL,
            address     text NOT NULL,
            meter       text NOT NULL,
            kwh         bigint NOT NULL CHECK (kwh >= 0),
            amount      bigint NOT NULL CHECK (amount >= 0),
            paid        bigint NOT NULL CHECK (paid >= 0 AND paid <= amount),
            due_date    text NOT NULL,
            version     bigint NOT NULL CHECK (version >= 1),
            updated_at  text NOT NULL,
            change_seq  bigint NOT NULL,
            credit      bigint NOT NULL DEFAULT 0 CHECK (credit >= 0),
            fine_paid   bigint NOT NULL DEFAULT 0 CHECK (fine_paid >= 0)
        );
        CREATE INDEX bills_changes ON bills (governorate, change_seq);
        CREATE INDEX bills_account ON bills (governorate, account, cycle);
        -- One row: every change of a bill or a request takes the next value, and holding
        -- its row lock until commit makes commit order the change_seq order the feed needs.
        CREATE TABLE change_counter (
            id   integer PRIMARY KEY CHECK (id = 1),
            last bigint NOT NULL
        );
        INSERT INTO change_counter (id, last) VALUES (1, 0);
        CREATE TABLE credits (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            source      text NOT NULL UNIQUE,
            governorate text NOT NULL,
            account     text NOT NULL,
            bill_id     text NOT NULL,
            amount      bigint NOT NULL CHECK (amount > 0),
            created_at  double precision NOT NULL
        );
        CREATE INDEX credits_account ON credits (governorate, account);
        CREATE TABLE online_payments (
            id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            bill_id  text NOT NULL,
            amount   bigint NOT NULL CHECK (amount > 0),
            credit   bigint NOT NULL,
            version  bigint NOT NULL,
            paid_at  double precision NOT NULL
        );
        CREATE INDEX online_payments_paid ON online_payments (paid_at);
        """,
    ),
    Migration(
        "centre.pg.0002_entries",
        """
        CREATE TABLE chain_heads (
            node text PRIMARY KEY,
            seq  bigint NOT NULL,
            hash text NOT NULL
        );
        CREATE TABLE entries (
            n           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id          text NOT NULL UNIQUE,
            node        text NOT NULL,
            seq         bigint NOT NULL,
            kind        text NOT NULL,
            payload     bytea NOT NULL,
            prev_hash   text NOT NULL,
            hash        text NOT NULL,
            bill_id     text,
            amount      bigint,
            verdict     text NOT NULL CHECK (verdict IN ('applied', 'credited', 'rejected')),
            reason      text,
            version     bigint,
            received_at double precision NOT NULL,
            fine        bigint CHECK (fine >= 0),
            UNIQUE (node, seq)
        );
        CREATE INDEX entries_received ON entries (received_at);
        CREATE INDEX entries_node_received ON entries (node, received_at);
        CREATE TABLE corrections (
            target     text PRIMARY KEY,
            entry      text NOT NULL UNIQUE,
            kind       text NOT NULL,
            created_at double precision NOT NULL
        );
        """,
    ),
    Migration(
        "centre.pg.0003_nonces_receipts",
        """
        -- Shared by every centre process: a nonce one of them saw is a replay at any other.
        CREATE TABLE seen_nonces (
            node  text NOT NULL,
            nonce text NOT NULL,
            ts    bigint NOT NULL,
            PRIMARY KEY (node, nonce)
        );
        CREATE INDEX seen_nonces_ts ON seen_nonces (ts);
        CREATE TABLE receipt_codes (
            governorate text NOT NULL,
            code        text NOT NULL,
            node        text NOT NULL,
            first_seen  double precision NOT NULL,
            PRIMARY KEY (governorate, code)
        );
        CREATE TABLE receipt_keys (
            node    text NOT NULL,
            key_id  text NOT NULL,
            key     bytea NOT NULL,   -- the derived receipt key, never the shared secret
            seen_at double precision NOT NULL,
            PRIMARY KEY (node, key_id)
        );
        """,
    ),
    Migration(
        "centre.pg.0004_services",
        """
        CREATE TABLE meter_readings (
            n           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            entry       text PRIMARY KEY,
            node        text NOT NULL,
            governorate text NOT NULL,
            account     text NOT NULL,
            meter       text NOT NULL,
            reading     bigint NOT NULL,
            read_at     text NOT NULL,
            source      text NOT NULL,
            note        text,
            rollover    integer NOT NULL,
            flag        text,
            verdict     text NOT NULL,
            reason      text,
            received_at double precision NOT NULL
        );
        CREATE INDEX meter_readings_meter ON meter_readings (governorate, meter, verdict, n);
        CREATE TABLE requests (
            id            text PRIMARY KEY,
            node          text NOT NULL,
            governorate   text NOT NULL,
            number        text NOT NULL,
            kind          text NOT NULL,
            account       text NOT NULL,
            bill_id       text,
            text          text NOT NULL,
            contact_phone text,
            amount        bigint,
            status        text NOT NULL,
            note          text,
            deferred      bigint,
            version       bigint NOT NULL,
            updated_at    text NOT NULL
        );
        CREATE INDEX requests_number ON requests (number);
        CREATE TABLE request_history (
            id          text NOT NULL,
            version     bigint NOT NULL,
            status      text NOT NULL,
            note        text,
            at          text NOT NULL,
            governorate text NOT NULL,
            change_seq  bigint NOT NULL,
            PRIMARY KEY (id, version)
        );
        CREATE INDEX request_history_changes ON request_history (governorate, change_seq);
        CREATE TABLE fine_rules (
            governorate text NOT NULL,
            version     bigint NOT NULL CHECK (version >= 1),
            effective   text NOT NULL,
            grace_days  bigint NOT NULL CHECK (grace_days >= 0),
            fixed       bigint NOT NULL CHECK (fixed >= 0),
            percent_bp  bigint NOT NULL CHECK (percent_bp BETWEEN 0 AND 10000),
            cap         bigint CHECK (cap >= 0),
            created_at  double precision NOT NULL,
            PRIMARY KEY (governorate, version)
        );
        """,
    ),
)

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    n          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    name       text PRIMARY KEY,
    applied_at double precision NOT NULL
)
"""


async def applied(conn: Any) -> list[str]:
    """The migrations recorded, in the order they were applied (`conn`: asyncpg)."""
    await conn.execute(_LEDGER)
    return [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY n")]


async def apply_migrations(
    conn: Any, migrations: tuple[Migration, ...] = PG_MIGRATIONS
) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; the names applied
    now. A second process waits on the lock, then finds them recorded and applies none."""
    now_applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(_LEDGER)
    for migration in migrations:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            done = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1)", migration.name
            )
            if done:
                continue
            await conn.execute(migration.sql)  # a script: the simple query protocol
            await conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)",
                migration.name, time.time(),
            )  # fmt: skip
        log.info("applied migration %s", migration.name)
        now_applied.append(migration.name)
    return now_applied
