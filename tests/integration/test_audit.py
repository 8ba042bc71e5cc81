"""The audit trail through a real node on loopback: one row per read or admin action, the
flush loop, the last flush on close, the bound when the writer is stuck, pruning, GET /v1/audit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually, make_bill
from nodefixtures import RunningNode, start_node

import edge.audit
from edge.audit import Entry, Query, select

BILL = "DAM-2026-05-0100234567"
OTHER = "0100999999"


@pytest.fixture
async def unlimited(tmp_path: Path) -> AsyncIterator[RunningNode]:
    """A node without rate limits: these tests send hundreds of reads from one token."""
    runner, rn = await start_node(tmp_path, [make_bill(), make_bill(OTHER)])
    try:
        yield rn
    finally:
        await rn.session.close()
        await runner.cleanup()


def entries(rn: RunningNode, **query: Any) -> list[Entry]:
    return rn.node.db.read(lambda c: list(select(c, Query(**query))))


async def rows_reach(rn: RunningNode, count: int) -> list[Entry]:
    """The trail once it holds `count` rows (the loop flushes within ~0.5 s)."""
    await eventually(lambda: len(entries(rn)) >= count, what=f"{count} audit rows")
    return entries(rn)


async def get(rn: RunningNode, path: str, who: str | None = "viewer") -> tuple[int, Any]:
    headers = rn.headers(who) if who else {}
    async with rn.session.get(rn.url + path, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def pay(rn: RunningNode, key: str = "k-1") -> str:
    body = {"bill_id": BILL, "amount": 10_000, "method": "cash", "cashier": "rami"}
    headers = rn.headers("cashier", **{"Idempotency-Key": key})
    async with rn.session.post(f"{rn.url}/v1/payments", json=body, headers=headers) as resp:
        assert resp.status == 201
        payment_id: str = (await resp.json())["payment_id"]
        return payment_id


def brief(e: Entry) -> tuple[str, str, str, str | None, str | None, int]:
    return (e.token, e.address, e.action, e.object, e.account, e.status)


async def test_each_personal_data_read_leaves_exactly_one_row(running: RunningNode) -> None:
    payment_id = await pay(running)
    unknown_payment = "dam-1_01M80JSB85SE3YAQZQY4MDSH4K"
    calls = [
        ("viewer", "/v1/accounts/0100234567/bills", 200),
        ("viewer", f"/v1/bills/{BILL}", 200),
        ("cashier", f"/v1/payments/{payment_id}", 200),  # its own channel's payment
        ("cashier", f"/v1/payments/{payment_id}/receipt?format=text", 200),
        ("viewer", f"/v1/payments/{payment_id}", 404),  # another channel's: as if unknown
        ("viewer", "/v1/accounts/0100000001/bills", 404),  # a guess: kept
        ("viewer", "/v1/bills/DAM-2026-05-0100000001", 404),
        ("viewer", f"/v1/payments/{unknown_payment}", 404),
        ("viewer", "/v1/accounts/12ab/bills", 400),  # names no account: not kept
        ("viewer", "/v1/bills/nonsense", 400),
    ]
    for who, path, status in calls:
        async with running.session.get(running.url + path, headers=running.headers(who)) as resp:
            assert resp.status == status, path
    assert (await get(running, "/v1/accounts/0100234567/bills", who=None))[0] == 401  # no one
    found = await rows_reach(running, 8)
    await running.node.audit.flush()  # anything still buffered would show below
    assert [brief(e) for e in entries(running)] == [
        ("kiosk-1", "127.0.0.1", "account.read", "0100234567", "0100234567", 200),
        ("kiosk-1", "127.0.0.1", "bill.read", BILL, "0100234567", 200),
        ("counter-1", "127.0.0.1", "payment.read", payment_id, "0100234567", 200),
        ("counter-1", "127.0.0.1", "receipt.read", payment_id, "0100234567", 200),
        ("kiosk-1", "127.0.0.1", "payment.read", payment_id, None, 404),
        ("kiosk-1", "127.0.0.1", "account.read", "0100000001", "0100000001", 404),
        ("kiosk-1", "127.0.0.1", "bill.read", "DAM-2026-05-0100000001", "0100000001", 404),
        ("kiosk-1", "127.0.0.1", "payment.read", unknown_payment, None, 404),
    ]
    seqs = [e.seq for e in found]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_finding_payments_is_recorded_with_whose_payments(running: RunningNode) -> None:
    payment_id = await pay(running)
    code, found = await get(running, f"/v1/payments/{payment_id}", who="cashier")
    assert code == 200
    receipt = found["receipt"]
    calls = [
        ("/v1/payments?account=0100234567", 200),
        ("/v1/payments", 200),
        (f"/v1/payments/by-receipt/{receipt}", 200),
    ]
    for path, code in calls:
        assert (await get(running, path, who="cashier"))[0] == code, path
    found_rows = await rows_reach(running, 4)
    await running.node.audit.flush()
    assert [brief(e) for e in entries(running)][1:] == [
        ("counter-1", "127.0.0.1", "payment.list", None, "0100234567", 200),
        ("counter-1", "127.0.0.1", "payment.list", None, None, 200),
        ("counter-1", "127.0.0.1", "payment.read", receipt, "0100234567", 200),
    ]
    assert found_rows[0].action == "payment.read"


async def test_a_read_refused_for_scope_is_kept_with_the_token_name(running: RunningNode) -> None:
    assert (await get(running, "/v1/accounts/0100234567/bills", who="auditor"))[0] == 403
    (row,) = await rows_reach(running, 1)
    assert brief(row) == ("audit-1", "127.0.0.1", "account.read", "0100234567", "0100234567",
                          403)  # fmt: skip


async def test_every_admin_action_leaves_one_row(running: RunningNode) -> None:
    headers = running.headers("admin")
    async with running.session.post(running.url + "/v1/admin/replay", headers=headers) as resp:
        assert resp.status == 409  # no centre: refused, and still an admin action
    assert (await get(running, "/v1/admin/rejected", who="admin"))[0] == 200
    assert (await get(running, "/v1/admin/rejected", who="viewer"))[0] == 403
    found = await rows_reach(running, 3)
    assert [brief(e) for e in found] == [
        ("ops", "127.0.0.1", "admin.replay", None, None, 409),
        ("ops", "127.0.0.1", "admin.rejected.list", None, None, 200),
        ("kiosk-1", "127.0.0.1", "admin.rejected.list", None, None, 403),
    ]


async def test_admin_actions_are_flushed_at_once(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(edge.audit, "FLUSH_EVERY_S", 3600.0)  # no tick during the test
    runner, rn = await start_node(tmp_path, [make_bill()])
    try:
        await eventually(lambda: rn.node.audit.loop is not None and rn.node.tasks.up("audit"))
        await get(rn, "/v1/accounts/0100234567/bills")
        assert len(rn.node.audit.rows) == 1  # a read waits for the next tick
        assert (await get(rn, "/v1/admin/rejected", who="admin"))[0] == 200
        found = await rows_reach(rn, 2)  # the admin action woke the loop: both written
        assert [e.action for e in found] == ["account.read", "admin.rejected.list"]
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_a_flood_of_inquiries_ends_with_every_row_and_few_commits(
    unlimited: RunningNode,
) -> None:
    running = unlimited
    writer = running.node.db.writer
    commits = writer.commits
    n = 2000

    async def one(i: int) -> int:
        account = "0100234567" if i % 2 else OTHER
        return (await get(running, f"/v1/accounts/{account}/bills"))[0]

    for start in range(0, n, 50):  # 50 at once: the node takes at most 64 connections an address
        assert set(await asyncio.gather(*(one(i) for i in range(start, start + 50)))) == {200}
    found = await rows_reach(running, n)
    assert len(found) == n
    assert sum(e.account == OTHER for e in found) == n // 2
    assert running.node.audit.dropped == 0
    # One write per flush, not one per inquiry (each flush is one commit at most).
    assert writer.commits - commits < n // 20


async def test_the_close_flushes_the_tail(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(edge.audit, "FLUSH_EVERY_S", 3600.0)  # only the close can write it
    runner, rn = await start_node(tmp_path, [make_bill()])
    try:
        await eventually(lambda: rn.node.audit.loop is not None and rn.node.tasks.up("audit"))
        for _ in range(3):
            assert (await get(rn, "/v1/bills/" + BILL))[0] == 200
        assert len(rn.node.audit.rows) == 3 and not entries(rn)
    finally:
        await rn.session.close()
        await runner.cleanup()
    with closing(sqlite3.connect(f"file:{rn.data_dir / 'edge.db'}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT token, action, object FROM audit_log ORDER BY seq").fetchall()
    assert rows == [("kiosk-1", "bill.read", BILL)] * 3


async def test_a_stuck_writer_bounds_the_buffer_and_counts_drops(
    unlimited: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    running = unlimited
    trail = running.node.audit
    trail.max_buffered = 50
    gate = threading.Event()
    stuck = asyncio.ensure_future(running.node.db.exclusive(lambda c: gate.wait(30)))
    try:
        with caplog.at_level(logging.WARNING, logger="edge.audit"):
            for _ in range(120):
                assert (await get(running, "/v1/accounts/0100234567/bills"))[0] == 200
                assert len(trail.rows) <= 50
            assert trail.dropped > 0
        drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drop_lines) == 1  # once a minute at most, not once per row
        async with running.session.get(running.url + "/metrics") as resp:
            text = await resp.text()
        assert f'edge_audit_rows_total{{result="dropped"}} {float(trail.dropped)}' in text
    finally:
        gate.set()
        await stuck
    await eventually(lambda: trail.written + trail.dropped == 120, what="the backlog written")
    assert len(entries(running)) == trail.written


async def test_a_failed_flush_keeps_its_rows_and_the_loop_retries(
    running: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    db, trail = running.node.db, running.node.audit
    await db.write(lambda c: c.execute("ALTER TABLE audit_log RENAME TO audit_away"))
    with caplog.at_level(logging.WARNING, logger="edge.audit"):
        for _ in range(5):
            assert (await get(running, "/v1/accounts/0100234567/bills"))[0] == 200
        await eventually(lambda: trail.loop is not None and trail.loop.failures > 0)
    assert any("audit failed" in r.getMessage() for r in caplog.records)
    # Kept in memory between attempts (a retry in flight takes them out for its moment).
    await eventually(lambda: len(trail.rows) == 5)
    assert trail.written == 0 and trail.dropped == 0
    await db.write(lambda c: c.execute("ALTER TABLE audit_away RENAME TO audit_log"))
    found = await rows_reach(running, 5)
    assert [e.action for e in found] == ["account.read"] * 5 and trail.dropped == 0


async def test_pruning_removes_rows_older_than_keep_days(tmp_path: Path) -> None:
    now = [1_780_000_000.0]
    runner, rn = await start_node(tmp_path, [make_bill()], clock=lambda: now[0], audit_keep_days=30)
    try:
        trail = rn.node.audit
        for age_days in (45, 31, 29, 1):  # recorded that many days before "now" below
            now[0] = 1_780_000_000.0 - age_days * 86400
            trail.record("counter-1", "127.0.0.1", "account.read", "1", "1", 200)
        now[0] = 1_780_000_000.0
        await trail.flush()
        assert await trail.prune(force=True) == 2
        ages = sorted(round((now[0] - e.at) / 86400) for e in entries(rn))
        assert ages == [1, 29]
        now[0] += 2 * 86400  # the 29-day row is now 31 days old, but an hour has not passed
        assert await trail.prune() == 0
        assert len(entries(rn)) == 2
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_the_audit_loop_is_supervised(running: RunningNode) -> None:
    assert (await get(running, "/v1/status", who=None))[1]["tasks"]["audit"]["state"] == "running"
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "audit"]
    task.cancel()
    await eventually(lambda: not running.node.tasks.up("audit"))
    status, body = await get(running, "/readyz", who=None)
    assert status == 503 and "task audit: cancelled" in body["detail"]


async def test_disabled_records_nothing(tmp_path: Path) -> None:
    runner, rn = await start_node(tmp_path, [make_bill()], audit_enabled=False)
    try:
        assert (await get(rn, "/v1/accounts/0100234567/bills"))[0] == 200
        assert not rn.node.audit.rows and "audit" not in rn.node.tasks.states()
    finally:
        await rn.session.close()
        await runner.cleanup()
    with closing(sqlite3.connect(f"file:{rn.data_dir / 'edge.db'}?mode=ro", uri=True)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


@pytest.mark.parametrize(("who", "status"), [
    ("viewer", 403), ("cashier", 403), ("admin", 403), (None, 401), ("auditor", 200),
])  # fmt: skip
async def test_the_audit_log_needs_the_audit_scope(
    running: RunningNode, who: str | None, status: int
) -> None:
    code, body = await get(running, "/v1/audit", who=who)
    assert code == status, body
    if status == 403:
        assert body["code"] == "forbidden"


async def test_reading_the_audit_log_pages_by_seq_and_is_itself_audited(
    running: RunningNode,
) -> None:
    for account in ("0100234567", OTHER, "0100234567", OTHER, "0100234567"):
        await get(running, f"/v1/accounts/{account}/bills")
    await get(running, "/v1/accounts/0100234567/bills", who="cashier")
    await rows_reach(running, 6)
    seen, after, pages = [], 0, 0
    while True:
        status, page = await get(running, f"/v1/audit?limit=2&after={after}", who="auditor")
        assert status == 200
        seen += page["entries"]
        pages += 1
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    assert [e["action"] for e in seen[:6]] == ["account.read"] * 6
    status, page = await get(running, "/v1/audit?account=0100234567&token=kiosk-1", who="auditor")
    assert [(e["token"], e["object"]) for e in page["entries"]] == [("kiosk-1", "0100234567")] * 3
    assert page["entries"][0]["at"].endswith("Z")
    # Each page read above is in the trail too, naming the auditor; the filtered one its account.
    await eventually(lambda: len(entries(running, token="audit-1")) == pages + 1)
    mine = entries(running, token="audit-1")
    assert {(e.address, e.status) for e in mine} == {("127.0.0.1", 200)}
    assert [e.account for e in mine] == [None] * pages + ["0100234567"]


@pytest.mark.parametrize("query", [
    "since=yesterday", "until=2026-13-01", "until=9999-12-31", "since=2026-05-28T25:00Z", "token=a%20b",
    "account=12ab", "limit=0", "limit=1001", "after=-1", "after=99999999999999999999",
    "colour=red",
])  # fmt: skip
async def test_a_bad_audit_query_is_a_400(running: RunningNode, query: str) -> None:
    status, body = await get(running, f"/v1/audit?{query}", who="auditor")
    assert (status, body["code"]) == (400, "invalid_query")


async def test_since_and_until_select_by_time(tmp_path: Path) -> None:
    now = [1_780_000_000.0]  # 2026-05-28T20:26:40Z, 23:26:40 in Damascus
    runner, rn = await start_node(tmp_path, [make_bill()], clock=lambda: now[0])
    try:
        for day in (0, 1, 2):
            now[0] = 1_780_000_000.0 + day * 86400
            rn.node.audit.record("counter-1", "127.0.0.1", "account.read", "1", "1", 200)
        await rn.node.audit.flush()
        cases = {
            "since=2026-05-29": 2,  # local days: the first row is 2026-05-28 in Damascus
            "since=2026-05-28&until=2026-05-29": 2,  # until a day includes that day
            "since=2026-05-29T20:26:40Z": 2,
            "since=2026-05-29T20:26:41Z": 1,
            "until=2026-05-29T20:26:40": 1,  # naive: UTC, and until is excluded
        }
        for query, count in cases.items():
            # token=: the reads of the trail are in it too
            status, page = await get(rn, f"/v1/audit?token=counter-1&{query}", who="auditor")
            assert (status, len(page["entries"])) == (200, count), query
    finally:
        await rn.session.close()
        await runner.cleanup()
