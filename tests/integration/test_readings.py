"""Meter readings (POST /v1/meter-readings) on a real node with a real centre behind the fault
proxy: taken while the centre is down, replayed once when it returns, answered `applied` or
`rejected` with a reason; retries are idempotent and bad input writes nothing (DESIGN 5.15).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from centrefixtures import ACCOUNTS, Link, eventually, start_link
from nodefixtures import RunningNode

from edge import mirror, tokens

pytestmark = pytest.mark.both_stores

ACCOUNT = ACCOUNTS[0]
METER = f"EM-{ACCOUNT[-6:]}"  # make_bill's meter; 420 kWh last cycle
TODAY = date.today()
DAMASCUS = ZoneInfo("Asia/Damascus")


@pytest.fixture
async def lk(tmp_path: Path) -> AsyncIterator[Link]:
    (tmp_path / "node").mkdir()
    token = tokens.add_token(tmp_path / "node" / "tokens.toml", "meter-1", ["read_meter"])
    link, close = await start_link(tmp_path)
    link.node.tokens["reader"] = token

    async def bootstrapped() -> bool:
        return link.node.node.db.read(mirror.state).bills == len(ACCOUNTS)

    try:
        await eventually(bootstrapped, what="the mirror's bootstrap")
        yield link
    finally:
        await close()


def body(reading: int, days_ago: int = 0, **over: Any) -> dict[str, Any]:
    return {
        "account": ACCOUNT, "meter": METER, "reading": reading,
        "read_at": (TODAY - timedelta(days=days_ago)).isoformat(), "source": "counter", **over,
    }  # fmt: skip


async def post(
    rn: RunningNode, doc: Any, key: str, who: str = "reader"
) -> tuple[int, Any, dict[str, str]]:
    headers = rn.headers(who, **{"Idempotency-Key": key})
    async with rn.session.post(rn.url + "/v1/meter-readings", json=doc, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def node_rows(rn: RunningNode) -> tuple[int, int, int]:
    """(outbox entries, meter_readings rows, idempotency records) at the node."""
    return rn.node.db.read(
        lambda c: tuple(
            c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("outbox_entries", "meter_readings", "outbox_idempotency")
        )
    )


def entry_state(rn: RunningNode, entry_id: str) -> tuple[str, str | None, str | None]:
    row = rn.node.db.read(
        lambda c: c.execute(
            "SELECT state, verdict, reason FROM outbox_entries WHERE id = ?", (entry_id,)
        ).fetchone()
    )
    return row[0], row[1], row[2]


async def centre_readings(lk: Link) -> list[tuple[Any, ...]]:
    # Insertion order: SQLite's rowid, PostgreSQL's identity column n.
    order = "rowid" if lk.centre.db.kind == "sqlite" else "n"
    return await lk.centre.db.query(
        f"SELECT entry, reading, verdict, reason FROM meter_readings ORDER BY {order}"
    )


async def test_a_reading_taken_while_the_centre_is_down_is_replayed_once(lk: Link) -> None:
    rn = lk.node
    lk.proxy.mode = "refuse"
    status, doc, _ = await post(rn, body(15_230, 3), "r-1")
    assert status == 201, doc
    assert doc["state"] == "pending_sync" and doc["previous"] is None and doc["flag"] is None
    rid = doc["reading_id"]
    again, same, headers = await post(rn, body(15_230, 3), "r-1")
    assert (again, same, headers.get("Idempotent-Replayed")) == (201, doc, "true")
    assert node_rows(rn)[:2] == (1, 1)
    assert entry_state(rn, rid)[0] == "pending"
    assert await centre_readings(lk) == []

    lk.proxy.mode = "pass"

    async def delivered() -> bool:
        return entry_state(rn, rid) == ("delivered", "applied", None)

    await eventually(delivered, what="the reading's verdict")
    assert await centre_readings(lk) == [(rid, 15_230, "applied", None)]
    ledger = await lk.centre.ledger()
    assert [row[0] for row in ledger] == [rid] and ledger[0][5] == "applied"
    # No money: the centre's clearing report of the day leaves it out.
    assert lk.centre.app is not None
    day = datetime.now(DAMASCUS).date()
    cleared = await lk.centre.db.clearing(day, DAMASCUS)
    assert cleared == []
    # A retry after delivery still gets the first answer; nothing new reaches the centre.
    assert (await post(rn, body(15_230, 3), "r-1"))[1] == doc
    assert node_rows(rn)[:2] == (1, 1)


async def test_bad_readings_get_a_clear_4xx_and_write_nothing(lk: Link) -> None:
    rn = lk.node
    assert (await post(rn, body(15_000, 5), "first"))[0] == 201
    before = node_rows(rn)
    cases = [
        (body(15_100, meter=f"EM-{ACCOUNTS[1][-6:]}"), 422, "meter_not_on_account"),
        (body(14_999), 409, "reading_below_last"),
        (body(15_100, note="x" * 501), 422, "invalid_field"),
        (body(15_100, note="قراءة\u202eمعكوسة"), 422, "invalid_field"),
        (body(15_100, source="neighbour"), 422, "invalid_field"),
        (body(15_100, account="0999999999"), 404, "unknown_account"),
        (body(15_100, rollover=True), 422, "invalid_field"),  # a rollover needs its reason
        (body(15_100, read_at=(TODAY + timedelta(days=2)).isoformat()), 422, "invalid_field"),
        (body(15_100) | {"reading": 1.5}, 422, "invalid_field"),
        (body(15_100, kind="x"), 400, "invalid_body"),
    ]
    for i, (doc, status, code) in enumerate(cases):
        got, problem, _ = await post(rn, doc, f"bad-{i}")
        assert (got, problem["code"]) == (status, code), (doc, problem)
        assert problem["title"] and problem["title_ar"] and problem["title"] != problem["title_ar"]
    payer = await post(rn, body(15_100), "by-a-cashier", who="cashier")
    assert (payer[0], payer[1]["code"]) == (403, "forbidden")  # `pay` does not read meters
    assert node_rows(rn) == before


async def test_rollover_and_an_implausible_jump(lk: Link) -> None:
    rn = lk.node
    assert (await post(rn, body(99_990, 10), "a"))[0] == 201
    # 420 kWh a cycle is ~7 kWh a day: 10x over 5 days is ~344 kWh.
    status, doc, _ = await post(rn, body(99_990 + 2_000, 5), "b")
    assert (status, doc["flag"], doc["previous"]["reading"]) == (201, "implausible_jump", 99_990)
    status, doc, _ = await post(rn, body(40, 0, rollover=True, note="العداد بدأ من الصفر"), "c")
    assert (status, doc["rollover"], doc["flag"]) == (201, True, None)
    status, doc, _ = await post(rn, body(100, 0), "d")
    assert (status, doc["flag"], doc["previous"]["reading"]) == (201, None, 40)

    async def all_applied() -> bool:
        return [row[2] for row in await centre_readings(lk)] == ["applied"] * 4

    await eventually(all_applied, what="four readings applied at the centre")


async def test_the_centre_rejects_a_reading_below_its_own_last(lk: Link) -> None:
    """Another node's reading of the meter is newer than anything this node knows: the centre
    answers `rejected` with `reading_below_last`, and this node stops counting the reading
    as the meter's last."""
    rn = lk.node
    first = (await post(rn, body(1_000, 9), "x"))[1]["reading_id"]

    async def applied(entry_id: str) -> bool:
        return entry_state(rn, entry_id)[1] is not None

    await eventually(lambda: applied(first), what="the first reading's verdict")
    await lk.centre.db.query(
        "INSERT INTO meter_readings (entry, node, governorate, account, meter, reading,"
        " read_at, source, rollover, verdict, received_at)"
        " VALUES ('dam-2_01JXQ4ZK2M8D3V5T7R9W1Y3B5C', 'dam-2', 'DAM', ?, ?, 5000, ?,"
        " 'inspector', 0, 'applied', 0)",
        ACCOUNT,
        METER,
        TODAY.isoformat(),
    )
    second = (await post(rn, body(1_200, 1), "y"))[1]
    await eventually(lambda: applied(second["reading_id"]), what="the second reading's verdict")
    assert entry_state(rn, second["reading_id"]) == ("rejected", "rejected", "reading_below_last")
    third = (await post(rn, body(1_100, 0), "z"))[1]
    assert third["previous"] == {"reading": 1_000, "read_at": body(0, 9)["read_at"]}
