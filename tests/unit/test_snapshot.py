"""The sealed snapshot stream: pages released only once their seal verified, the cursor only
with the last seal, and any bad, moved, reordered or foreign page refused."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import protocol
from sync.errors import BadAnswer, ProtocolError
from sync.snapshot import Sealer, SnapshotReader, encode_item

SECRET, SIG = b"s" * 32, "ab" * 32


def bill(n: int = 1, gov: str = "DAM") -> dict[str, Any]:
    return {
        "bill_id": f"{gov}-2026-05-{n}", "account": str(n), "governorate": gov,
        "cycle": "2026-05", "name": "سمير الحلبي", "address": "دمشق", "meter": "EM-1",
        "kwh": 420, "amount": 1_500_000, "paid": 0, "due_date": "2026-07-15", "version": 3,
        "updated_at": "2026-06-01T00:00:00.000Z", "credit": 0, "fine_paid": 0,
    }  # fmt: skip


def stream(pages: list[list[dict[str, Any]]], cursor: int = 77, sig: str = SIG) -> bytes:
    sealer, out = Sealer(SECRET, sig), b""
    for page in pages:
        raw = b"".join(encode_item(b) for b in page)
        out += raw + sealer.seal(raw, len(page))
    return out + sealer.end(cursor)


def sealed(raw: bytes, bills: int = 1) -> bytes:
    """A correctly signed one-page stream over `raw`, whatever the bytes hold."""
    sealer = Sealer(SECRET, SIG)
    return raw + sealer.seal(raw, bills) + sealer.end(5)


V2_BILL = {k: v for k, v in bill().items() if k != "credit"}


def reader(**kw: Any) -> SnapshotReader:
    return SnapshotReader(SECRET, SIG, governorate="DAM", **kw)


def test_pages_fed_byte_by_byte_are_released_at_their_seal() -> None:
    pages = [[bill(1), bill(2)], [bill(3)]]
    body, r = stream(pages), reader()
    got: list[list[dict[str, Any]]] = []
    for i in range(len(body)):
        assert not r.done
        released = r.feed(body[i : i + 1])
        if released:
            got.append(released)
    assert got == pages
    assert (r.done, r.cursor, r.count) == (True, 77, 3)
    r.finish()
    assert r.feed(b"") == []


def test_nothing_is_released_before_its_seal() -> None:
    body = stream([[bill(1), bill(2)]])
    r = reader()
    assert r.feed(body[: len(encode_item(bill(1))) * 2]) == []
    assert r.cursor is None


BAD: list[tuple[str, bytes, type[Exception]]] = [
    ("another request's stream", stream([[bill()]], sig="cd" * 32), BadAnswer),
    ("foreign bill", stream([[bill(1), bill(2, "ALE")]]), ProtocolError),
    ("unsealed bill then end", encode_item(bill()) + Sealer(SECRET, SIG).end(5), ProtocolError),
    ("edited bill", stream([[bill()]]).replace(b"EM-1", b"EM-2"), BadAnswer),
    ("data after end", stream([]) + encode_item(bill()), ProtocolError),
    ("partial data after end", stream([]) + b"\x8d", ProtocolError),
    ("end wrong version", stream([]).replace(b"\xa1v\x04", b"\xa1v\x09"), ProtocolError),
    (
        "unsigned old stream",
        encode_item(bill()) + msgpack.packb({"v": 2, "end": True, "cursor": 5, "count": 1}),
        ProtocolError,
    ),
    ("garbage", b"\xc1\xc1", ProtocolError),
    # Signed correctly, so only the bill's own shape can refuse them.
    ("version-2 bill without credit", sealed(msgpack.packb(V2_BILL)), ProtocolError),
    ("bill with a bool credit", sealed(msgpack.packb({**bill(), "credit": True})), ProtocolError),
    ("array inside", msgpack.packb({**bill(), "name": ["x"]}), ProtocolError),
]


@pytest.mark.parametrize(("body", "error"), [(b, e) for _, b, e in BAD], ids=[n for n, _, _ in BAD])
def test_bad_streams_are_refused(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        reader().feed(body)


def test_a_dropped_page_is_refused() -> None:
    sealer = Sealer(SECRET, SIG)
    first = encode_item(bill(1))
    sealer.seal(first, 1)  # page 0 is never sent
    second = encode_item(bill(2))
    body = second + sealer.seal(second, 1) + sealer.end(5)
    with pytest.raises(ProtocolError, match="pages lost"):
        reader().feed(body)


def test_a_stream_cut_before_its_end_fails_finish() -> None:
    body = stream([[bill()]])
    r = reader()
    r.feed(body[: body.rindex(b"\x87")])  # everything but the end seal (a 7-key map)
    with pytest.raises(ProtocolError):
        r.finish()


def test_buffer_limit() -> None:
    with pytest.raises(ProtocolError):
        reader(max_buffer=1024).feed(b"\xdb" + (100_000).to_bytes(4, "big") + b"x" * 2000)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(1, 7))
def test_arbitrary_bytes_raise_only_protocol_errors(body: bytes, split: int) -> None:
    r = reader()
    with contextlib.suppress(ProtocolError, BadAnswer):
        for i in range(0, len(body), split):
            r.feed(body[i : i + split])


@settings(max_examples=200)
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=4))
def test_mutated_streams_never_release_a_changed_bill(at: int, junk: bytes) -> None:
    good = stream([[bill(1), bill(2)], [bill(3)]])
    at %= len(good)
    bad = good[:at] + junk + good[at + len(junk) :]
    released: list[dict[str, Any]] = []
    with contextlib.suppress(ProtocolError, BadAnswer):
        released += reader().feed(bad)
    assert all(b in (bill(1), bill(2), bill(3)) for b in released)


def test_a_bills_credit_is_released_as_sent() -> None:
    credited = {**bill(1), "paid": 1_500_000, "credit": 9_960_000}
    r = reader()
    assert r.feed(stream([[credited, bill(2)]])) == [credited, bill(2)]
    assert r.done


def test_changes_refuse_a_foreign_bill() -> None:
    body = protocol.encode_changes([bill(1), bill(2, "ALE")], 9, False)
    assert len(protocol.decode_changes(body).changes) == 2
    with pytest.raises(ProtocolError) as info:
        protocol.decode_changes(body, "DAM")
    assert info.value.code == "foreign_bill"


def test_the_announced_count_counts_only_when_signed_for_this_request() -> None:
    """The snapshot's size in its headers (PROTOCOL.md 4.4) feeds progress only if the MAC
    over this request's signature verifies; anything else leaves the total unknown."""
    from sync import answers

    def headers(count: str, mac: str) -> dict[str, str]:
        return {answers.COUNT_HEADER: count, answers.COUNT_MAC_HEADER: mac}

    good = answers.count_mac(SECRET, SIG, 1_000_000)
    assert answers.announced_count(SECRET, SIG, headers("1000000", good)) == 1_000_000
    assert answers.announced_count(SECRET, SIG, headers("1000000", good.upper())) == 1_000_000
    assert answers.announced_count(SECRET, SIG, headers("999999", good)) is None  # edited
    assert answers.announced_count(SECRET, "cd" * 32, headers("1000000", good)) is None  # moved
    assert answers.announced_count(b"t" * 32, SIG, headers("1000000", good)) is None  # forged
    assert answers.announced_count(SECRET, SIG, headers("-1", good)) is None
    assert answers.announced_count(SECRET, SIG, headers("١٠", good)) is None  # not ASCII digits
    assert answers.announced_count(SECRET, SIG, {answers.COUNT_HEADER: "10"}) is None
    assert answers.announced_count(SECRET, SIG, {}) is None
