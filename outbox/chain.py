"""The hash chain: each entry's hash covers the previous hash and the entry's canonical bytes.

hash = sha256(bytes.fromhex(prev_hash) + msgpack([seq, id, kind, payload])), hex encoded.
The first entry's prev_hash is GENESIS. A centre (or an auditor) recomputes the chain to
detect a gap, a reorder or an edit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

import msgpack

from outbox.errors import ChainBroken

GENESIS = "0" * 64


class Linked(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


def canonical(seq: int, entry_id: str, kind: str, payload: bytes) -> bytes:
    packed: bytes = msgpack.packb([seq, entry_id, kind, payload], use_bin_type=True)
    return packed


def entry_hash(prev_hash: str, seq: int, entry_id: str, kind: str, payload: bytes) -> str:
    digest = hashlib.sha256(bytes.fromhex(prev_hash))
    digest.update(canonical(seq, entry_id, kind, payload))
    return digest.hexdigest()


def verify_link(prev_hash: str, prev_seq: int, entry: Linked) -> None:
    """Check that `entry` follows an entry with `prev_seq` and `prev_hash` directly."""
    if entry.seq != prev_seq + 1:
        raise ChainBroken(entry.seq, f"expected seq {prev_seq + 1}")
    if entry.prev_hash != prev_hash:
        raise ChainBroken(entry.seq, "prev_hash does not match the previous entry")
    if entry.hash != entry_hash(prev_hash, entry.seq, entry.id, entry.kind, entry.payload):
        raise ChainBroken(entry.seq, "hash does not match the entry's content")


def verify_chain(
    entries: Iterable[Linked], *, prev_hash: str = GENESIS, prev_seq: int = 0
) -> tuple[int, str]:
    """Verify consecutive entries; return the last (seq, hash). Raises ChainBroken."""
    for entry in entries:
        verify_link(prev_hash, prev_seq, entry)
        prev_seq, prev_hash = entry.seq, entry.hash
    return prev_seq, prev_hash
