"""The loop reader's held snapshot (edge/db.py): read-your-writes over HTTP under concurrency,
commits visible at once (ours) or within the renewal bound (another process's), and a WAL
that checkpoints still bound while inquiries hold snapshots and payments commit."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import make_bill
from nodefixtures import RunningNode, start_node

from edge import mirror
from edge.db import DB_NAME, SNAPSHOT_S, Database

ACCOUNTS = [f"01{i:08d}" for i in range(40)]


@pytest.fixture
async def crowd(tmp_path: Path) -> AsyncIterator[RunningNode]:
    bills = [make_bill(a, amount=10_000_000) for a in ACCOUNTS]
    runner, rn = await start_node(tmp_path, bills)
    try:
        yield rn
    finally:
        await rn.session.close()
        await runner.cleanup()


def bill_of(account: str) -> str:
    return make_bill(account)["bill_id"]


async def inquire(session: aiohttp.ClientSession, rn: RunningNode, account: str) -> Any:
    async with session.get(
        f"{rn.url}/v1/accounts/{account}/bills", headers=rn.headers("viewer")
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def background_inquiries(rn: RunningNode, stop: asyncio.Event) -> int:
    """Inquiries as fast as the node answers: the loop's reader always holds a snapshot."""
    done = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            await inquire(session, rn, random.choice(ACCOUNTS))
            done += 1
    return done


async def test_a_payment_is_in_the_next_inquiry_of_another_client(crowd: RunningNode):
    rn = crowd
    stop = asyncio.Event()
    load = [asyncio.create_task(background_inquiries(rn, stop)) for _ in range(3)]
    checked = 0

    async def pair(account: str, rounds: int) -> None:
        nonlocal checked
        async with aiohttp.ClientSession() as payer, aiohttp.ClientSession() as other:
            total = 0
            for n in range(rounds):
                amount = random.randint(1, 500)
                async with payer.post(
                    f"{rn.url}/v1/payments",
                    json={
                        "bill_id": bill_of(account),
                        "amount": amount,
                        "method": "cash",
                        "cashier": "c",
                    },
                    headers=rn.headers("cashier", **{"Idempotency-Key": f"{account}-{n}"}),
                ) as resp:
                    assert resp.status == 201, await resp.text()
                total += amount
                # Another client, another connection, right after the 201.
                seen = (await inquire(other, rn, account))["bills"][0]
                assert seen["pending_local"] == total, (account, n)
                assert seen["due"] == 10_000_000 - total
                checked += 1

    try:
        await asyncio.gather(*(pair(a, 25) for a in ACCOUNTS[:8]))
    finally:
        stop.set()
        served = sum(await asyncio.gather(*load))
    assert checked == 200
    assert served > 0
    # The reads did share snapshots: far fewer read transactions than reads.
    assert rn.node.db.snapshots < served + checked


async def test_a_mirror_pull_shows_in_the_next_inquiry(crowd: RunningNode):
    rn = crowd
    account = ACCOUNTS[0]
    assert (await inquire(rn.session, rn, account))["bills"][0]["version"] == 1
    newer = make_bill(account, amount=10_000_000, paid=4_000_000, version=2)
    # The puller's write job (sync/puller.py applies each batch through db.write).
    await rn.node.db.write(lambda c: mirror.apply_changes(c, [newer], 2))
    bill = (await inquire(rn.session, rn, account))["bills"][0]
    assert (bill["version"], bill["paid"], bill["due"]) == (2, 4_000_000, 6_000_000)


async def test_another_process_commit_shows_within_the_renewal_bound(tmp_path: Path):
    db = Database(tmp_path / "data")
    await db.open()
    try:
        await db.write(lambda c: mirror.apply_changes(c, [make_bill(ACCOUNTS[0])], 1))

        def count(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT COUNT(*) FROM bills").fetchone()[0])

        assert db.read(count) == 1
        begun = db.snapshots
        with closing(sqlite3.connect(tmp_path / "data" / DB_NAME)) as outside:
            with outside:
                outside.execute(
                    "INSERT INTO bills SELECT 'DAM-2026-05-0100000001', '0100000001',"
                    " governorate, cycle, name, address, meter, kwh, amount, paid, due_date,"
                    " version, updated_at, credit, fine_paid FROM bills"
                )
            # No await since the first read: the loop held its snapshot (no other commit seen).
            assert db.read(count) == 1
            assert db.snapshots == begun
            await asyncio.sleep(SNAPSHOT_S * 1.5)
            assert db.read(count) == 2
            assert db.snapshots == begun + 1
    finally:
        await db.close()


async def test_the_wal_stays_bounded_under_inquiries_and_payments(crowd: RunningNode):
    rn = crowd
    db = rn.node.db
    wal = rn.data_dir / f"{DB_NAME}-wal"
    # Small sizes, so that a few hundred payments show it: SQLite's own checkpoint every 25
    # pages (100 KB) and ours past 256 KB. Without the readers stepping aside, held snapshots
    # keep SQLite from restarting the WAL and it grows with every payment.
    await db.exclusive(lambda c: c.execute("PRAGMA wal_autocheckpoint=25"))
    db.wal_limit = 256 * 1024
    stop = asyncio.Event()
    load = [asyncio.create_task(background_inquiries(rn, stop)) for _ in range(3)]
    sizes: list[int] = []

    async def payer(k: int) -> None:
        async with aiohttp.ClientSession() as session:
            for n in range(120):
                async with session.post(
                    f"{rn.url}/v1/payments",
                    json={
                        "bill_id": bill_of(ACCOUNTS[(k * 120 + n) % len(ACCOUNTS)]),
                        "amount": 1,
                        "method": "cash",
                        "cashier": "c",
                    },
                    headers=rn.headers("cashier", **{"Idempotency-Key": f"w{k}-{n}"}),
                ) as resp:
                    assert resp.status == 201, await resp.text()
                sizes.append(os.stat(wal).st_size)

    try:
        await asyncio.gather(*(payer(k) for k in range(10)))
    finally:
        stop.set()
        served = sum(await asyncio.gather(*load))
    assert served > 0
    assert db.wal_checkpoints >= 1
    # Past the limit by at most the commits queued before the checkpoint's turn.
    assert max(sizes) < 4 * db.wal_limit, max(sizes)
