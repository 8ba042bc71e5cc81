"""The change feed's page, as both centre stores build it (sync.centre.feeds): bills and
requests' statuses merged in change_seq order, `limit` at most, the cursor the last one taken."""

from __future__ import annotations

from typing import Any

from sync import bill
from sync.centre import feeds
from sync.centre.pgstore import _placeholders


def bill_row(n: int, seq: int) -> tuple[Any, ...]:
    values = {f: 0 if f in bill.INT_FIELDS else f"{f}-{n}" for f in bill.FIELDS}
    return (*values.values(), seq)


def status(request: str, seq: int) -> tuple[int, dict[str, Any]]:
    return seq, {"request_id": request, "status": "received", "note": None, "version": 1,
                 "updated_at": "2026-06-01T08:00:00.000Z"}  # fmt: skip


def test_bills_and_statuses_merge_in_change_seq_order_up_to_the_limit() -> None:
    page = feeds.changes_page(
        [bill_row(1, 2), bill_row(2, 5), bill_row(3, 6)], [status("r1", 3), status("r2", 4)],
        since=1, limit=4,
    )  # fmt: skip
    assert [b["bill_id"] for b in page.changes] == ["bill_id-1", "bill_id-2"]
    assert [r["request_id"] for r in page.requests] == ["r1", "r2"]
    assert (page.cursor, page.more) == (5, True)  # bill 3 (seq 6) is the next page's


def test_an_empty_page_keeps_the_cursor_where_it_was() -> None:
    page = feeds.changes_page([], [], since=42, limit=10)
    assert (page.changes, page.requests, page.cursor, page.more) == ([], [], 42, False)


def test_a_page_exactly_full_says_no_more() -> None:
    page = feeds.changes_page([bill_row(1, 7)], [status("r1", 8)], since=6, limit=2)
    assert (page.cursor, page.more) == (8, False)


def test_portable_placeholders_become_numbered_ones() -> None:
    assert _placeholders("SELECT a FROM t WHERE b = ? AND c IN (?, ?)") == (
        "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"
    )
    assert _placeholders("SELECT 1") == "SELECT 1"
