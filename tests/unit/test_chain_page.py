"""The chain page (sync.chain, PROTOCOL 4.8) and restore's judgement of it (edge.ops.resync):
round trips, strict refusals, and the two histories no flag may join."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

import outbox
from edge.ops import rebuild, resync
from sync import chain
from sync.errors import ProtocolError

NODE = "dam-1"


def held(count: int) -> list[chain.Held]:
    out, prev = [], outbox.GENESIS
    for seq in range(1, count + 1):
        eid, payload = f"{NODE}_{seq:026d}", msgpack.packb({"n": seq})
        digest = outbox.entry_hash(prev, seq, eid, "payment", payload)
        out.append(chain.Held(seq, eid, "payment", payload, prev, digest, "applied", None, seq,
                              0, None))  # fmt: skip
        prev = digest
    return out


def page(entries: list[chain.Held], after: int, head: int | None = None) -> chain.Page:
    whole = held(max(head or 0, after + len(entries)))
    top = len(whole) if head is None else head
    at = outbox.GENESIS if after == 0 else whole[after - 1].hash if after <= top else None
    return chain.Page(NODE, top, whole[top - 1].hash if top else outbox.GENESIS, after, at,
                      entries, after + len(entries) < top)  # fmt: skip


def raw(p: chain.Page, **changed: Any) -> bytes:
    frame = msgpack.unpackb(chain.encode(p), raw=False)
    frame.update(changed)
    return msgpack.packb(frame, use_bin_type=True)


def test_a_page_round_trips() -> None:
    entries = held(5)
    p = page(entries[2:4], after=2, head=5)
    assert p.more
    assert chain.decode(chain.encode(p), NODE, 2) == p
    beyond = page([], after=9, head=5)
    assert chain.decode(chain.encode(beyond), NODE, 9).after_hash is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"node": "dam-2"}, "not of the node"),
        ({"after": 1}, "not of the node"),
        ({"more": False}, "more or head"),
        ({"more": 1}, "more or head"),
        ({"head": 3}, "more or head"),  # entries beyond the head
        ({"after_hash": None}, "after_hash must be nil"),
        ({"head_hash": "F" * 64}, "not well formed"),
        ({"v": 3}, "version 3"),
        ({"extra": 1}, "unexpected keys"),
    ],
)
def test_a_page_that_does_not_hold_together_is_refused(change: dict[str, Any], why: str) -> None:
    p = page(held(5)[2:4], after=2, head=5)
    with pytest.raises(ProtocolError, match=why):
        chain.decode(raw(p, **change), NODE, 2)


def test_entries_must_follow_the_seq_asked_for_and_be_well_formed() -> None:
    entries = held(5)
    skipped = page([entries[2], entries[4]], after=2, head=5)
    with pytest.raises(ProtocolError, match="do not follow"):
        chain.decode(chain.encode(skipped), NODE, 2)
    for bad in (
        dataclasses.replace(entries[2], verdict="duplicate"),
        dataclasses.replace(entries[2], id="dam-1_x"),
        dataclasses.replace(entries[2], prev_hash="zz"),
    ):
        with pytest.raises(ProtocolError):
            chain.decode(chain.encode(page([bad, entries[3]], after=2, head=5)), NODE, 2)


def view(entries: list[chain.Held], after: int, head: int) -> chain.View:
    whole = held(head)
    at = outbox.GENESIS if after == 0 else whole[after - 1].hash if after <= head else None
    return chain.View(head, whole[head - 1].hash if head else outbox.GENESIS, after, at, entries)


def test_judge_the_centre_ahead_behind_and_forked() -> None:
    mine = held(5)
    by_seq = {e.seq: e.hash for e in mine}
    ahead = resync.judge(3, mine[2].hash, by_seq.get, view(mine[3:], after=3, head=5))
    assert (ahead.backup_seq, ahead.centre_seq, len(ahead.missing)) == (3, 5, 2)
    assert "continues at seq 6" in resync.refusal(ahead)
    behind = resync.judge(5, mine[4].hash, by_seq.get, view([], after=5, head=2))
    assert not behind.missing and "seq 3..5" in behind.describe()
    assert resync.judge(0, outbox.GENESIS, by_seq.get, view([], after=0, head=0)).centre_seq == 0
    forked = {**by_seq, 2: "e" * 64}
    with pytest.raises(resync.ChainRefused, match="different entries at seq 2"):
        resync.judge(5, mine[4].hash, forked.get, view([], after=5, head=2))
    with pytest.raises(resync.ChainRefused, match="different entries at seq 3"):
        resync.judge(3, "e" * 64, by_seq.get, view(mine[3:], after=3, head=5))


def test_receipt_counters_pass_every_receipt_printed() -> None:
    row = (4, "b", "a", 1, "cash", "c", "t", "DAM-DAM1-20260601-000007", 0.0, 0)
    rows = [row, (*row[:7], "DAM-DAM1-20260601-000003", 0.0, 0),
            (*row[:7], "DAM-20260602-000012", 0.0, 0)]  # fmt: skip
    assert rebuild.receipt_counters(rows) == {"20260601": 7, "20260602": 12}
