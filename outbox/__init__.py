"""The durable outbox: entries chained by hash, idempotency records, claim/settle for replay.

Imports nothing else of this project. Every function works on a sqlite3 connection whose
transaction the caller owns; `Writer` is the one writer connection with group commit.
Callers never query its tables by hand: they use these functions. For joins, the columns
guaranteed of `outbox_entries` are `seq` (dense, from 1), `id`, `state` (pending,
delivered, rejected), `verdict`, `reason`, `version` and `settled_at`; see `counts_locally`.
"""

from outbox import idempotency
from outbox.chain import GENESIS, entry_hash, verify_chain
from outbox.entries import (
    DELIVERED,
    PENDING,
    REJECTED,
    TABLE,
    Entry,
    Result,
    Stats,
    adopt,
    append,
    append_many,
    claim,
    counts_locally,
    delivered_since,
    first_id,
    get,
    get_many,
    hash_at,
    iter_entries,
    next_attempt_at,
    oldest_pending_at,
    pending_range,
    pending_through,
    record_failure,
    rejected,
    reopen,
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
from outbox.lookup import select_in
from outbox.migrations import OUTBOX_MIGRATIONS, Migration, apply_migrations
from outbox.retry import RetryPolicy
from outbox.writer import Batcher, Writer

__all__ = [
    "DELIVERED",
    "GENESIS",
    "OUTBOX_MIGRATIONS",
    "PENDING",
    "REJECTED",
    "TABLE",
    "Batcher",
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
    "adopt",
    "append",
    "append_many",
    "apply_migrations",
    "claim",
    "counts_locally",
    "delivered_since",
    "entry_hash",
    "fingerprint",
    "first_id",
    "get",
    "get_many",
    "hash_at",
    "idempotency",
    "iter_entries",
    "new_entry_id",
    "next_attempt_at",
    "oldest_pending_at",
    "pending_range",
    "pending_through",
    "record_failure",
    "rejected",
    "reopen",
    "select_in",
    "settle",
    "stats",
    "verify_chain",
]
