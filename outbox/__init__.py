"""The durable outbox: entries chained by hash, idempotency records, claim/settle for replay.

Imports nothing else of this project. Every function works on a sqlite3 connection whose
transaction the caller owns; `Writer` is the one writer connection with group commit.
"""

from outbox import idempotency
from outbox.chain import GENESIS, entry_hash, verify_chain
from outbox.entries import (
    DELIVERED,
    PENDING,
    REJECTED,
    Entry,
    Result,
    Stats,
    append,
    append_many,
    claim,
    get,
    iter_entries,
    next_attempt_at,
    record_failure,
    settle,
    stats,
)
from outbox.errors import (
    ChainBroken,
    IdempotencyKeyReused,
    MigrationError,
    OutboxError,
    StorageError,
    WriterClosed,
)
from outbox.idempotency import StoredResponse, fingerprint
from outbox.ids import new_entry_id
from outbox.migrations import OUTBOX_MIGRATIONS, Migration, apply_migrations
from outbox.retry import RetryPolicy
from outbox.writer import Writer

__all__ = [
    "DELIVERED",
    "GENESIS",
    "OUTBOX_MIGRATIONS",
    "PENDING",
    "REJECTED",
    "ChainBroken",
    "Entry",
    "IdempotencyKeyReused",
    "Migration",
    "MigrationError",
    "OutboxError",
    "Result",
    "RetryPolicy",
    "Stats",
    "StorageError",
    "StoredResponse",
    "Writer",
    "WriterClosed",
    "append",
    "append_many",
    "apply_migrations",
    "claim",
    "entry_hash",
    "fingerprint",
    "get",
    "idempotency",
    "iter_entries",
    "new_entry_id",
    "next_attempt_at",
    "record_failure",
    "settle",
    "stats",
    "verify_chain",
]
