"""The hash chain: its exact definition, and that a gap, reorder or edit is detected."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import outbox
from outbox import GENESIS, ChainBroken, entry_hash, verify_chain


@dataclasses.dataclass(frozen=True)
class Link:
    seq: int
    id: str
    kind: str
    payload: bytes
    prev_hash: str
    hash: str


def build(count: int) -> list[Link]:
    links, prev = [], GENESIS
    for seq in range(1, count + 1):
        entry_id, payload = f"dam-1_{seq:026d}", msgpack.packb({"amount": seq * 100})
        digest = entry_hash(prev, seq, entry_id, "payment", payload)
        links.append(Link(seq, entry_id, "payment", payload, prev, digest))
        prev = digest
    return links


def test_hash_is_sha256_of_previous_hash_and_msgpacked_entry():
    payload = b"\x81\xa6amount\xcd\x03\xe8"
    expected = hashlib.sha256(
        bytes.fromhex(GENESIS)
        + msgpack.packb([1, "dam-1_X", "payment", payload], use_bin_type=True)
    ).hexdigest()
    assert entry_hash(GENESIS, 1, "dam-1_X", "payment", payload) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"prev_hash": "1" * 64},
        {"seq": 2},
        {"entry_id": "dam-1_Y"},
        {"kind": "meter_reading"},
        {"payload": b"\x81\xa6amount\xcd\x03\xe9"},
    ],
)
def test_hash_covers_every_field(change: dict[str, Any]):
    fields = {
        "prev_hash": GENESIS,
        "seq": 1,
        "entry_id": "dam-1_X",
        "kind": "payment",
        "payload": b"\x81\xa6amount\xcd\x03\xe8",
    }
    assert entry_hash(**fields) != entry_hash(**(fields | change))


def test_an_intact_chain_verifies_and_returns_its_tail():
    links = build(5)
    assert verify_chain(links) == (5, links[-1].hash)
    assert verify_chain([]) == (0, GENESIS)


def test_verification_can_resume_from_a_known_entry():
    links = build(6)
    assert verify_chain(links[3:], prev_seq=3, prev_hash=links[2].hash) == (6, links[-1].hash)
    with pytest.raises(ChainBroken):
        verify_chain(links[3:], prev_seq=3, prev_hash=links[1].hash)


def test_a_gap_is_detected_at_the_entry_after_it():
    links = build(5)
    with pytest.raises(ChainBroken, match="expected seq 3") as caught:
        verify_chain(links[:2] + links[3:])
    assert caught.value.seq == 4


def test_a_reorder_is_detected():
    links = build(5)
    with pytest.raises(ChainBroken) as caught:
        verify_chain([links[0], links[2], links[1], *links[3:]])
    assert caught.value.seq == 3


def test_a_chain_must_start_at_seq_one_from_genesis():
    links = build(3)
    with pytest.raises(ChainBroken):
        verify_chain(links[1:])
    forged = dataclasses.replace(links[0], prev_hash="1" * 64)
    with pytest.raises(ChainBroken, match="prev_hash"):
        verify_chain([forged, *links[1:]])


@pytest.mark.parametrize(
    "edit",
    [
        lambda link: dataclasses.replace(link, payload=msgpack.packb({"amount": 1})),
        lambda link: dataclasses.replace(link, id="dam-1_FORGED"),
        lambda link: dataclasses.replace(link, kind="request"),
        lambda link: dataclasses.replace(link, hash="f" * 64),
    ],
    ids=["payload", "id", "kind", "hash"],
)
def test_an_edited_entry_is_detected(edit: Callable[[Link], Link]):
    links = build(4)
    links[2] = edit(links[2])
    with pytest.raises(ChainBroken) as caught:
        verify_chain(links)
    assert caught.value.seq == 3


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link():
    links = build(4)
    edited = dataclasses.replace(links[1], payload=msgpack.packb({"amount": 1}))
    links[1] = dataclasses.replace(
        edited, hash=entry_hash(edited.prev_hash, 2, edited.id, edited.kind, edited.payload)
    )
    with pytest.raises(ChainBroken, match="prev_hash") as caught:
        verify_chain(links)
    assert caught.value.seq == 3


def test_appended_entries_form_a_chain_and_an_edit_in_the_table_is_caught(
    conn: sqlite3.Connection, tx: Callable[..., Any]
):
    for n in range(5):
        tx(conn, lambda c, n=n: outbox.append(c, "dam-1", "payment", msgpack.packb({"n": n})))
    last_seq, last_hash = verify_chain(outbox.iter_entries(conn))
    assert last_seq == 5
    assert last_hash == conn.execute("SELECT hash FROM outbox_entries WHERE seq = 5").fetchone()[0]

    conn.execute("UPDATE outbox_entries SET payload = ? WHERE seq = 2", (msgpack.packb({"n": 9}),))
    with pytest.raises(ChainBroken) as caught:
        verify_chain(outbox.iter_entries(conn))
    assert caught.value.seq == 2
