"""The wire protocol: round trips and strict rejection of malformed frames (signing and the
snapshot stream: test_signing.py, test_snapshot.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from helpers import make_bill
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import outbox
from sync import protocol
from sync.errors import ProtocolError
from sync.protocol import Verdict, WireEntry

NODE = "dam-1"
SECRET = b"0f3c9a7e5d1b2468ace13579bdf02468"


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def chain(count: int, node: str = NODE) -> list[WireEntry]:
    entries, prev = [], outbox.GENESIS
    for seq in range(1, count + 1):
        eid = outbox.new_entry_id(node, now=1_780_000_000 + seq, rand=bytes(10))
        payload = pack({"bill_id": "DAM-2026-05-0100234567", "amount": 100 * seq})
        digest = outbox.entry_hash(prev, seq, eid, "payment", payload)
        entries.append(WireEntry(seq, eid, "payment", payload, prev, digest))
        prev = digest
    return entries


# --- round trips ---------------------------------------------------------------------------


def test_batch_round_trip_accepts_outbox_entries_duck_typed() -> None:
    entries = chain(3)
    batch = protocol.decode_batch(protocol.encode_batch(NODE, entries))
    assert batch.node == NODE
    assert batch.entries == entries
    assert outbox.verify_chain(batch.entries) == (3, entries[-1].hash)


def test_empty_batch_round_trip() -> None:
    assert protocol.decode_batch(protocol.encode_batch(NODE, [])).entries == []


def test_reply_round_trip() -> None:
    results = [
        Verdict(1, "dam-1_X", "applied", None, 4),
        Verdict(2, "dam-1_Y", "duplicate", "applied", 4),
        Verdict(3, "dam-1_Z", "credited", None, 4, 99_600_00),
        Verdict(4, "dam-1_W", "rejected", "unknown_bill", None),
    ]
    reply = protocol.decode_reply(protocol.encode_reply(results, 4))
    assert reply.results == results
    assert reply.acked_seq == 4


def test_changes_round_trip() -> None:
    changes = [make_bill(), make_bill("0100234568")]
    decoded = protocol.decode_changes(protocol.encode_changes(changes, 42, True))
    assert decoded.changes == changes
    assert (decoded.cursor, decoded.more) == (42, True)


def test_changes_encode_drops_extra_columns() -> None:
    decoded = protocol.decode_changes(
        protocol.encode_changes([{**make_bill(), "change_seq": 9}], 9, False)
    )
    assert decoded.changes == [make_bill()]


def test_error_frame_round_trip_and_tolerance() -> None:
    assert protocol.decode_error(protocol.encode_error("chain_gap", "seq 3 missing")) == (
        "chain_gap",
        "seq 3 missing",
    )
    assert protocol.decode_error(b"<html>502 Bad Gateway</html>") == (
        "unknown",
        "<html>502 Bad Gateway</html>",
    )
    assert protocol.decode_error(b"\xff\xfe")[0] == "unknown"


# --- malformed frames ----------------------------------------------------------------------

E = chain(1)[0]
GOOD_ENTRY = {"seq": 1, "id": E.id, "kind": "payment", "payload": E.payload,
              "prev_hash": E.prev_hash, "hash": E.hash}  # fmt: skip


def batch_with(**entry: Any) -> bytes:
    return pack(
        {"v": protocol.PROTOCOL_VERSION, "node": NODE, "entries": [{**GOOD_ENTRY, **entry}]}
    )


def reply_with(**result: Any) -> bytes:
    base = {"seq": 1, "id": E.id, "verdict": "applied", "reason": None, "version": 2, "credit": 0}
    return pack({"v": protocol.PROTOCOL_VERSION, "results": [{**base, **result}], "acked_seq": 1})


MALFORMED: list[tuple[str, Callable[[bytes], object], bytes]] = [
    ("empty body", protocol.decode_batch, b""),
    ("not msgpack", protocol.decode_batch, b"\xc1"),
    ("truncated", protocol.decode_batch, protocol.encode_batch(NODE, chain(2))[:-5]),
    ("trailing bytes", protocol.decode_batch, protocol.encode_batch(NODE, []) + b"\x00"),
    ("array frame", protocol.decode_batch, pack([1, NODE, []])),
    ("no version", protocol.decode_batch, pack({"node": NODE, "entries": []})),
    ("version 1", protocol.decode_batch, pack({"v": 1, "node": NODE, "entries": []})),
    ("version true", protocol.decode_batch, pack({"v": True, "node": NODE, "entries": []})),
    ("extra key", protocol.decode_batch, pack({"v": protocol.PROTOCOL_VERSION, "node": NODE, "entries": [], "x": 1})),
    ("bytes key", protocol.decode_batch, pack({"v": protocol.PROTOCOL_VERSION, "node": NODE, "entries": [], b"x": 1})),
    ("int key", protocol.decode_batch, b"\x83\xa1v\x01\xa4node\xa5dam-1\x01\x90"),
    ("bad node", protocol.decode_batch, pack({"v": protocol.PROTOCOL_VERSION, "node": "DAM 1", "entries": []})),
    ("entries not list", protocol.decode_batch, pack({"v": protocol.PROTOCOL_VERSION, "node": NODE, "entries": {}})),
    ("seq bool", protocol.decode_batch, batch_with(seq=True)),
    ("seq zero", protocol.decode_batch, batch_with(seq=0)),
    ("seq negative", protocol.decode_batch, batch_with(seq=-1)),
    ("seq float", protocol.decode_batch, batch_with(seq=1.0)),
    ("seq 2^64-1", protocol.decode_batch, batch_with(seq=2**64 - 1)),
    ("seq string", protocol.decode_batch, batch_with(seq="1")),
    ("payload str", protocol.decode_batch, batch_with(payload="x")),
    ("payload huge", protocol.decode_batch, batch_with(payload=b"x" * (protocol.MAX_PAYLOAD + 1))),
    ("hash upper", protocol.decode_batch, batch_with(hash=E.hash.upper())),
    ("hash short", protocol.decode_batch, batch_with(hash="ab")),
    ("id shape", protocol.decode_batch, batch_with(id="not an id")),
    ("kind shape", protocol.decode_batch, batch_with(kind="Payment!")),
    ("entry missing key", protocol.decode_batch,
     pack({"v": protocol.PROTOCOL_VERSION, "node": NODE, "entries": [{k: v for k, v in GOOD_ENTRY.items() if k != "hash"}]})),
    ("entry extra key", protocol.decode_batch, batch_with(extra=1)),
    ("invalid utf-8", protocol.decode_batch, b"\x83\xa1v\x01\xa4node\xa2\xff\xfe\xa7entries\x90"),
    ("timestamp ext", protocol.decode_batch, pack({"v": protocol.PROTOCOL_VERSION, "node": NODE, "entries": [],
                                                  "t": msgpack.Timestamp(1)})),
    ("huge array header", protocol.decode_batch, b"\x83\xa1v\x01\xa4node\xa5dam-1\xa7entries\xdd\xff\xff\xff\xff"),
    ("verdict unknown", protocol.decode_reply, reply_with(verdict="maybe")),
    ("rejected without reason", protocol.decode_reply, reply_with(verdict="rejected", version=None)),
    ("applied without version", protocol.decode_reply, reply_with(version=None)),
    ("version bool", protocol.decode_reply, reply_with(version=False)),
    ("acked_seq missing", protocol.decode_reply, pack({"v": protocol.PROTOCOL_VERSION, "results": []})),
    ("acked_seq float", protocol.decode_reply, pack({"v": protocol.PROTOCOL_VERSION, "results": [], "acked_seq": 1.5})),
    ("reply nested garbage", protocol.decode_reply, pack({"v": protocol.PROTOCOL_VERSION, "results": [[1]], "acked_seq": 1})),
    ("more not bool", protocol.decode_changes, pack({"v": protocol.PROTOCOL_VERSION, "changes": [], "cursor": 1, "more": 1})),
    ("cursor negative", protocol.decode_changes, pack({"v": protocol.PROTOCOL_VERSION, "changes": [], "cursor": -1, "more": False})),
    ("bill missing field", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [{k: v for k, v in make_bill().items() if k != "paid"}], "cursor": 1, "more": False})),
    ("bill extra field", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [{**make_bill(), "x": 1}], "cursor": 1, "more": False})),
    ("bill negative amount", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [make_bill(amount=-5)], "cursor": 1, "more": False})),
    ("bill float paid", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [make_bill(paid=1.5)], "cursor": 1, "more": False})),
    ("bill int name", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [make_bill(name=7)], "cursor": 1, "more": False})),
    ("bill bool version", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [make_bill(version=True)], "cursor": 1, "more": False})),
    ("deep nesting", protocol.decode_changes, b"\x91" * 5000 + b"\x00"),
    # Protocol 3: a verdict names its credit; a bill carries its credit.
    ("verdict without credit", protocol.decode_reply,
     pack({"v": protocol.PROTOCOL_VERSION, "results": [{"seq": 1, "id": E.id, "verdict": "applied", "reason": None,
                                "version": 2}], "acked_seq": 1})),
    ("credit negative", protocol.decode_reply, reply_with(credit=-1)),
    ("credit bool", protocol.decode_reply, reply_with(credit=True)),
    ("credit float", protocol.decode_reply, reply_with(credit=1.0)),
    ("credit nil", protocol.decode_reply, reply_with(credit=None)),
    ("rejected with credit", protocol.decode_reply,
     reply_with(verdict="rejected", reason="unknown_bill", version=None, credit=5)),
    ("credited without credit", protocol.decode_reply, reply_with(verdict="credited", credit=0)),
    ("bill without credit (v2 shape)", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [{k: v for k, v in make_bill().items() if k != "credit"}],
           "cursor": 1, "more": False})),
    ("bill negative credit", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [make_bill(credit=-1)], "cursor": 1, "more": False})),
    ("bill bool credit", protocol.decode_changes,
     pack({"v": protocol.PROTOCOL_VERSION, "changes": [make_bill(credit=False)], "cursor": 1, "more": False})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("decoder", "body"), [(d, b) for _, d, b in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_frames_raise_protocol_error(
    decoder: Callable[[bytes], object], body: bytes
) -> None:
    with pytest.raises(ProtocolError):
        decoder(body)


def test_too_many_entries_has_its_own_code() -> None:
    entry = {**GOOD_ENTRY}
    body = pack(
        {
            "v": protocol.PROTOCOL_VERSION,
            "node": NODE,
            "entries": [entry] * (protocol.MAX_BATCH + 1),
        }
    )
    with pytest.raises(ProtocolError) as info:
        protocol.decode_batch(body)
    assert info.value.code == "batch_too_large"


def test_credit_round_trips_in_verdicts_and_bills() -> None:
    verdicts = [
        Verdict(1, "dam-1_A", "applied", None, 5, 10_000),  # part applied, part credit
        Verdict(2, "dam-1_B", "duplicate", "credited", 6, 9_960_000),
        Verdict(3, "dam-1_C", "applied", None, 7),  # no credit: 0 on the wire
    ]
    reply = protocol.decode_reply(protocol.encode_reply(verdicts, 3))
    assert [v.credit for v in reply.results] == [10_000, 9_960_000, 0]
    bill = make_bill(paid=100_000, credit=2**63 - 1)
    assert protocol.decode_changes(protocol.encode_changes([bill], 1, False)).changes == [bill]


@pytest.mark.parametrize("frame", [
    {"v": 2, "node": NODE, "entries": []},
    {"v": 2, "results": [], "acked_seq": 0},
    {"v": 2, "changes": [], "cursor": 0, "more": False},
])  # fmt: skip
def test_a_version_2_frame_is_refused_with_a_clear_code(frame: dict[str, Any]) -> None:
    # How versions meet here: a version-2 peer's frame is refused, named, never half-read.
    decoder = {"node": protocol.decode_batch, "results": protocol.decode_reply,
               "changes": protocol.decode_changes}[next(k for k in frame if k != "v")]  # fmt: skip
    with pytest.raises(ProtocolError, match="version 2 is not supported") as info:
        decoder(pack(frame))
    assert info.value.code == "unsupported_version"
    assert protocol.PROTOCOL_VERSION == 4


def test_unsupported_version_code() -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.decode_reply(pack({"v": 1, "results": [], "acked_seq": 0}))
    assert info.value.code == "unsupported_version"


def test_non_bytes_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_batch("text")  # type: ignore[arg-type]


# --- fuzzing: any bytes, only ProtocolError ------------------------------------------------

DECODERS = [protocol.decode_batch, protocol.decode_reply, protocol.decode_changes]
scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20)
)  # fmt: skip
KEYS = st.sampled_from(
    ["v", "node", "entries", "results", "changes", "seq", "cursor", "more", "acked_seq", "end",
     "count", "x"]
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


def _only_protocol_errors(fn: Callable[[bytes], object], body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        fn(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_error(body: bytes) -> None:
    for decoder in DECODERS:
        _only_protocol_errors(decoder, body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.integers(1, 5))
def test_arbitrary_msgpack_values_raise_only_protocol_error(value: Any, split: int) -> None:
    body = pack(value)
    for decoder in DECODERS:
        _only_protocol_errors(decoder, body)


@settings(max_examples=200)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_mutated_batches_raise_only_protocol_error(at: int, junk: bytes) -> None:
    good = protocol.encode_batch(NODE, chain(2))
    at %= len(good)
    _only_protocol_errors(protocol.decode_batch, good[:at] + junk + good[at + len(junk) :])


# --- the chain's worked example ---------------------------------------------------------


def test_protocol_md_entry_hash_example() -> None:
    eid = outbox.new_entry_id("dam-1", now=1_780_000_000.0, rand=bytes(10))
    payload = pack({
        "payment_id": eid, "bill_id": "DAM-2026-05-0100234567", "account": "0100234567",
        "amount": 150000, "channel": "counter-1", "idempotency_key": "k-1", "method": "cash",
        "cashier": "c1", "accepted_at": "2026-05-28T21:46:40.000Z",
        "receipt": "DAM-20260529-000001",
    })  # fmt: skip
    assert (eid, len(payload)) == ("dam-1_01KSR492000000000000000000", 234)
    assert outbox.entry_hash(outbox.GENESIS, 1, eid, "payment", payload) == (
        "15f22b676d5754dc8744d2592e6f147fccc15fbf15b6d99aeb9dacdefb26f108"
    )
