"""Replay resumes as soon as the link is back, and a payment storm during an outage costs nothing.

A real reference centre and node on loopback (centrefixtures), the fault proxy taking the
centre "down" and back. The retry cap is the default 300 s: sleeping out the backoff would
take minutes, so delivery within seconds shows the link's recovery woke the replayer. The
pull interval is 1 s so that the puller's first successful contact (what wakes the
replayer; DESIGN 5.2) comes right as the proxy heals; by default it comes within 30 s.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link

import outbox
from sync.replayer import StepResult

pytestmark = pytest.mark.both_stores


async def pay(link: Link, account: str, amount: int, key: str) -> dict[str, Any]:
    rn = link.node
    async with rn.session.post(
        f"{rn.url}/v1/payments",
        json={"bill_id": f"{GOV}-{CYCLE}-{account}", "amount": amount, "method": "cash",
              "cashier": "rana"},
        headers=rn.headers(**{"Idempotency-Key": key}),
    ) as resp:  # fmt: skip
        body = await resp.json(content_type=None)
        assert resp.status == 201, body
        return body  # type: ignore[no-any-return]


def pending(link: Link) -> int:
    return link.node.node.db.read(lambda c: outbox.stats(c).pending)


async def ready_then_down(link: Link) -> None:
    node = link.node.node

    async def mirrored() -> bool:
        return node.db.read(lambda c: c.execute("SELECT COUNT(*) FROM bills").fetchone()[0]) == len(
            ACCOUNTS
        )

    await eventually(mirrored, what="the mirror to bootstrap")
    link.proxy.mode = "refuse"


def reports(link: Link) -> list[StepResult]:
    """Every replay attempt from now on, as the replayer reports it."""
    replayer = link.node.node.replication.replayer
    assert replayer is not None
    seen: list[StepResult] = []
    previous = replayer.on_result

    def record(result: StepResult) -> None:
        seen.append(result)
        if previous is not None:
            previous(result)

    replayer.on_result = record
    return seen


async def test_twenty_payments_taken_while_down_arrive_within_seconds_of_the_centre(
    tmp_path: Path,
) -> None:
    link, close = await start_link(
        tmp_path, centre_retry_base_s=1.0, centre_retry_cap_s=300.0, centre_pull_interval_s=1.0
    )
    try:
        node = link.node.node
        replayer = node.replication.replayer
        assert replayer is not None and replayer.policy.cap_s == 300.0
        await ready_then_down(link)
        taken = [await pay(link, a, 1_000 + i, f"down-{i}") for i, a in enumerate(ACCOUNTS)]
        assert len(taken) == 20

        async def link_down() -> bool:
            return node.link.state == "down"

        await eventually(link_down, what="the node to see the link down")
        # The backoff after hours of outage; reaching it for real takes as long as the outage.
        seen = reports(link)
        replayer.failures = 40
        replayer.wake()

        async def long_wait() -> bool:
            due = node.db.read(outbox.next_attempt_at)
            return due is not None and due - time.time() > 100

        await eventually(long_wait, what="a failed attempt scheduling the next one minutes away")
        assert seen and seen[-1].error is not None
        waited = seen[-1].retry_in_s
        assert waited >= 150.0
        assert pending(link) == 20

        link.proxy.mode = "pass"
        back = time.monotonic()

        async def delivered() -> bool:
            return pending(link) == 0

        await eventually(delivered, timeout=3.0, what="all 20 entries within 3 s of the centre")
        took = time.monotonic() - back
        rows = await link.centre.ledger()
        assert sorted(r[0] for r in rows) == sorted(t["payment_id"] for t in taken)
        assert [r[2] for r in rows] == list(range(1, 21)) and {r[5] for r in rows} == {"applied"}
        states = node.db.read(
            lambda c: c.execute("SELECT state, verdict FROM outbox_entries").fetchall()
        )
        assert Counter(states) == Counter({("delivered", "applied"): 20})
        assert replayer.failures == 0 and node.link.state == "up"
        print(f"\n20 payments delivered {took:.2f} s after the centre answered again"
              f" (the replayer's own wait was {waited:.0f} s)")  # fmt: skip
    finally:
        await close()


async def test_a_payment_storm_during_an_outage_adds_no_attempts(tmp_path: Path) -> None:
    base, cap = 0.2, 1.0
    link, close = await start_link(tmp_path, centre_retry_base_s=base, centre_retry_cap_s=cap)
    try:
        node = link.node.node
        await ready_then_down(link)
        await pay(link, ACCOUNTS[0], 500, "first")

        async def link_down() -> bool:
            return node.link.state == "down"

        await eventually(link_down, what="the node to see the link down")
        seen = reports(link)
        start = time.monotonic()
        for i in range(60):
            await pay(link, ACCOUNTS[i % len(ACCOUNTS)], 100, f"storm-{i}")
        while time.monotonic() - start < 2.0:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        attempts = len(seen)
        # Each wait is at least half its window (0.1, 0.2, 0.4, then 0.5 s): the backoff
        # alone allows about 2 + elapsed / 0.5 attempts; a wake per payment would be 60.
        assert attempts <= 3 + elapsed / (cap / 2), (attempts, elapsed)
        assert all(r.error is not None for r in seen)
        assert pending(link) == 61
        link.proxy.mode = "pass"

        async def delivered() -> bool:
            return pending(link) == 0

        await eventually(delivered, timeout=5.0, what="the storm to be delivered after the heal")
        assert len(await link.centre.ledger()) == 61
        print(f"\n60 payments during an outage: {attempts} replay attempts in {elapsed:.1f} s")
    finally:
        await close()
