"""The bill feeds' pages, for both stores: a change-feed page (bills and requests' statuses
merged in change_seq order) and a packed snapshot page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from sync import bill, protocol


def changes_page(
    bill_rows: Sequence[Sequence[Any]], statuses: Sequence[tuple[int, dict[str, Any]]],
    since: int, limit: int,
) -> protocol.Changes:  # fmt: skip
    """The first `limit` changes of either kind after `since`: `bill_rows` are bill.FIELDS
    then change_seq, `statuses` (change_seq, status record), each up to `limit` + 1 long."""
    # Requests' statuses share the bills' counter (protocol 4): one cursor follows both.
    order = sorted(
        [(row[-1], 0, i) for i, row in enumerate(bill_rows)]
        + [(seq, 1, i) for i, (seq, _) in enumerate(statuses)]
    )
    more = len(order) > limit
    order = order[:limit]
    changes = [
        dict(zip(bill.FIELDS, bill_rows[i][:-1], strict=True)) for _, k, i in order if k == 0
    ]
    found = [statuses[i][1] for _, k, i in order if k == 1]
    cursor = order[-1][0] if order else since
    return protocol.Changes(changes=changes, cursor=cursor, more=more, requests=found)


def pack_bills(rows: Sequence[Sequence[Any]]) -> bytes:
    """A snapshot page: each row (bill.FIELDS) one msgpack map."""
    packer = msgpack.Packer(use_bin_type=True)
    fields = bill.FIELDS
    return b"".join([packer.pack(dict(zip(fields, row, strict=True))) for row in rows])
