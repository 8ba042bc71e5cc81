"""Errors raised by the outbox package: one root, a few precise children."""

from __future__ import annotations


class OutboxError(Exception):
    """Root of every error the outbox package raises."""


class MigrationError(OutboxError):
    """A schema migration could not be applied; the database is left as it was."""


class IdempotencyKeyReused(OutboxError):
    """The same idempotency key came back with a different request."""

    def __init__(self, client: str, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} of client {client!r} was used for another request"
        )
        self.client = client
        self.key = key


class ChainBroken(OutboxError):
    """The hash chain has a gap, a reorder or an edited entry."""

    def __init__(self, seq: int, why: str) -> None:
        super().__init__(f"hash chain broken at seq {seq}: {why}")
        self.seq = seq
        self.why = why


class StorageError(OutboxError):
    """The disk refused a write (full, I/O error); nothing of the failed transaction was kept."""

    def __init__(self, message: str, *, full: bool) -> None:
        super().__init__(message)
        self.full = full


class WriterClosed(OutboxError):
    """A job was submitted to a writer that is closing or closed."""
