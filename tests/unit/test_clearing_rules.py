"""Clearing's pure parts (issue 16): reconciliation's comparison, the ledger frame, the
channel-kind rule, the day parameter and the CSV's byte-order mark."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from zoneinfo import ZoneInfo

import msgpack
import pytest

from edge import dayprint, dayreport
from edge.reconcile import Daily, Ours, compare
from sync import protocol
from sync.centre.clearing import channel_kind
from sync.errors import ProtocolError, SyncError

ID = "dam-1_01J0000000000000000000000{}"
TZ = ZoneInfo("Asia/Damascus")


def ours(
    n: int, state: str = "delivered", verdict: str | None = "applied", amount: int = 100
) -> Ours:
    return Ours(n, ID.format(n), "payment", amount, state, verdict)


def theirs(n: int, verdict: str = "applied", amount: int = 100) -> protocol.LedgerEntry:
    return protocol.LedgerEntry(n, ID.format(n), "payment", amount, verdict, None)


def whats(mine: list[Ours], there: list[protocol.LedgerEntry]) -> list[tuple[str, int]]:
    result = compare("2026-06-01", mine, there, 0.0)
    return [(d["what"], d["seq"]) for d in result.differences]


def test_equal_days_have_no_difference() -> None:
    result = compare("2026-06-01", [ours(1), ours(2, "rejected", "rejected")],
                     [theirs(1), theirs(2, "rejected")], 0.0)  # fmt: skip
    assert (result.ok, result.differences) == (True, [])


def test_pending_is_a_difference_that_does_not_fail() -> None:
    # Not at the centre yet, or there with its reply lost: both are only pending.
    result = compare("d", [ours(1, "pending", None), ours(2, "pending", None)], [theirs(2)], 0.0)
    assert [d["what"] for d in result.differences] == ["pending", "pending"]
    assert result.ok


def test_each_kind_of_difference_is_named_and_fails() -> None:
    mine = [ours(1), ours(2, amount=150), ours(3, verdict="credited")]
    there = [theirs(2), theirs(3), theirs(4)]
    assert whats(mine, there) == [("missing", 1), ("amount", 2), ("verdict", 3), ("extra", 4)]
    assert not compare("d", mine, there, 0.0).ok


def test_a_pending_entry_recorded_with_another_amount_is_an_amount_difference() -> None:
    assert whats([ours(1, "pending", None, 100)], [theirs(1, amount=90)]) == [("amount", 1)]


def test_the_ledger_frame_round_trips_and_refuses_anything_else() -> None:
    entries = [theirs(1), protocol.LedgerEntry(2, ID.format(2), "void", None, "rejected", "x")]
    body = protocol.encode_ledger("dam-1", "2026-06-01", entries)
    assert protocol.decode_ledger(body, "dam-1", "2026-06-01") == entries
    with pytest.raises(ProtocolError):
        protocol.decode_ledger(body, "dam-2", "2026-06-01")  # another node's
    with pytest.raises(ProtocolError):
        protocol.decode_ledger(body, "dam-1", "2026-06-02")  # another day's
    bad = msgpack.packb({"v": protocol.PROTOCOL_VERSION, "node": "dam-1", "day": "2026-06-01",
                         "entries": [[1, ID.format(1), "payment", 5, "duplicate", None]]})  # fmt: skip
    with pytest.raises(ProtocolError):
        protocol.decode_ledger(bad, "dam-1", "2026-06-01")  # a node's verdict, not the centre's
    with pytest.raises(ProtocolError):
        protocol.decode_ledger(b"\xc1", "dam-1", "2026-06-01")


@pytest.mark.parametrize(
    ("channel", "kind"),
    [("counter-1", "counter"), ("bank-cbs", "bank"), ("epay-fatora", "e-payment"),
     ("online-web", "online"), ("banker", "counter")],
)  # fmt: skip
def test_a_channels_kind_is_its_name_prefix(channel: str, kind: str) -> None:
    assert channel_kind(channel) == kind


@pytest.mark.parametrize("text", ["2026-02-30", "2026-6-1", "", "2026-06-01x", "٢٠٢٦-٠٦-٠١"])
def test_a_day_is_only_yyyy_mm_dd(text: str) -> None:
    with pytest.raises(dayreport.BadDay):
        dayreport.parse_day(text)


def test_the_csv_opens_with_a_bom_and_ends_with_the_totals() -> None:
    zero = {"count": 0, "amount": 0}
    figures = {name: dict(zero) for name in dayreport.NAMES}
    row = {"channel": "counter-1", "cashier": "هدى", "method": "cash", "kind": "payment",
           **figures, "first_receipt": "DAM-DAM1-20260601-000001",
           "last_receipt": "DAM-DAM1-20260601-000001"}  # fmt: skip
    row["taken"] = {"count": 1, "amount": 990_000}
    totals = {k: v for k, v in row.items() if k not in dayreport.KEYS}
    report = dayreport.DayReport("dam-1", "DAM", "Asia/Damascus", date(2026, 6, 1), 0.0, [row],
                                 totals)  # fmt: skip
    text = dayprint.csv_text(report)
    assert text.startswith("\ufeff")
    table = list(csv.DictReader(io.StringIO(text[1:])))
    assert table[0]["cashier"] == "هدى" and table[0]["taken_amount"] == "990000"
    assert table[-1]["channel"] == "TOTAL"
    page = dayprint.html_page(report, "دمشق")
    assert "9,900.00" in page and 'dir="rtl"' in page


class Centre:
    """A fake centre for the daily loop: counts the days asked, or fails."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.fail = False

    async def fetch(self, day: str) -> list[protocol.LedgerEntry]:
        self.asked.append(day)
        if self.fail:
            raise SyncError("transport: refused")
        return [theirs(1)]


async def test_the_daily_run_reconciles_yesterday_once_and_only_with_the_link_up() -> None:
    centre, up = Centre(), [False]
    now = [datetime(2026, 6, 2, 0, 5, tzinfo=TZ).timestamp()]  # five past local midnight

    async def read(fn: object) -> list[Ours]:
        return [ours(1)]

    daily = Daily(fetch=centre.fetch, read=read, tz=TZ, link_up=lambda: up[0],
                  clock=lambda: now[0])  # fmt: skip
    assert await daily.step() is None and centre.asked == []  # the link is down: wait
    up[0] = True
    result = await daily.step()
    assert result is not None and (result.day, result.ok) == ("2026-06-01", True)
    assert await daily.step() is None and centre.asked == ["2026-06-01"]  # once a day
    now[0] += 86_400
    centre.fail = True
    with pytest.raises(SyncError):
        await daily.step()
    assert daily.last is not None and daily.last.error is not None and not daily.last.ok
    centre.fail = False
    assert (await daily.step()) is not None  # retried (the loop's backoff), then done
    assert centre.asked == ["2026-06-01", "2026-06-02", "2026-06-02"]
