"""Protocol 4's request statuses in the changes page (PROTOCOL 4.3): optional, strict, and a
page of bills alone encodes as before but for `v`."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from sync import protocol
from sync.errors import ProtocolError

STATUS = {"request_id": "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C", "status": "in_review",
          "note": "قيد الدراسة", "version": 2, "updated_at": "2026-06-01T08:00:00.000Z"}  # fmt: skip


def page(**extra: Any) -> bytes:
    frame = {"v": protocol.PROTOCOL_VERSION, "changes": [], "cursor": 7, "more": False}
    return msgpack.packb(frame | extra, use_bin_type=True)


def test_statuses_round_trip_and_are_left_out_when_there_are_none() -> None:
    body = protocol.encode_changes([], 7, False, [STATUS])
    assert protocol.decode_changes(body).requests == [STATUS]
    bare = protocol.encode_changes([], 7, False)
    assert b"requests" not in bare and protocol.decode_changes(bare).requests == []


@pytest.mark.parametrize(
    "bad",
    [
        STATUS | {"status": "lost"},
        STATUS | {"version": 0},
        STATUS | {"request_id": "not an id"},
        STATUS | {"note": 5},
        STATUS | {"extra": 1},
        {k: v for k, v in STATUS.items() if k != "updated_at"},
    ],
)
def test_a_bad_status_refuses_the_page(bad: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_changes(page(requests=[bad]))


def test_requests_must_be_a_list() -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_changes(page(requests={"a": 1}))
