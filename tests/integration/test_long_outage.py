"""Row 8 of the fault matrix: 50,000 payments queued over a simulated 72-hour outage, then replay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from centrefixtures import start_link
from helpers import CYCLE, GOV, eventually

import outbox
from edge import payments

PAYMENTS = 50_000
# About five payments per bill, as in life (a bill is paid once or twice a cycle).
ACCOUNTS = [f"{7_000_000_000 + i}" for i in range(10_000)]
OUTAGE_S = 72 * 3600

pytestmark = pytest.mark.slow  # ~30 s: on two workers it starts first (tests/conftest.py)


class Clock:
    """The node's wall clock, driven by the test: 72 hours pass while the payments arrive."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_72_hour_outage_with_50000_payments(tmp_path: Path) -> None:
    clock = Clock()
    link, close = await start_link(
        tmp_path, clock=clock, accounts=ACCOUNTS, centre_retry_cap_s=0.5, centre_pull_interval_s=1.0
    )
    node, rn = link.node.node, link.node
    try:
        await eventually(lambda: _mirror_ready(node), what="the mirror to bootstrap")
        link.proxy.mode = "refuse"
        start = clock.now
        bills = [f"{GOV}-{CYCLE}-{a}" for a in ACCOUNTS]
        inquiries: list[float] = []
        done = asyncio.Event()

        async def inquire() -> None:
            # A counter keeps asking about bills all through the outage.
            i = 0
            while not done.is_set():
                t0 = time.perf_counter()
                async with rn.session.get(f"{rn.url}/v1/accounts/{ACCOUNTS[i % len(ACCOUNTS)]}/bills",
                                          headers=rn.headers("viewer")) as resp:  # fmt: skip
                    assert resp.status == 200
                    assert (await resp.json())["bills"]
                inquiries.append(time.perf_counter() - t0)
                i += 1
                await asyncio.sleep(0.002)

        async def cashier(n: int) -> None:
            for i in range(n, PAYMENTS, 64):
                clock.now = start + OUTAGE_S * i / PAYMENTS
                req = payments.PaymentRequest(bills[i % len(bills)], 1, "cash", f"c{n}")
                call = payments.prepare(
                    node.settings.node_id, "counter-1", f"k{i}", req, clock.now, node.settings.tz
                )
                reply = await node.db.write_batched(node.acceptor, call)
                assert reply.status == 201

        reader = asyncio.create_task(inquire())
        await asyncio.gather(*(cashier(n) for n in range(64)))
        done.set()
        await reader
        stats = node.db.read(lambda c: outbox.stats(c, now=clock.now))
        assert stats.pending == PAYMENTS
        assert stats.oldest_pending_age_s is not None and stats.oldest_pending_age_s > 71 * 3600
        assert node.link.state in ("degraded", "down")

        healed = time.monotonic()
        link.proxy.mode = "pass"
        assert node.replication.replayer is not None
        node.replication.replayer.trigger()

        async def drained() -> bool:
            return node.db.read(lambda c: outbox.stats(c).pending) == 0

        # Polled every 0.25 s: each poll counts the outbox on the loop the replay runs on.
        await eventually(drained, 120, "the 72-hour backlog to drain", every=0.25)
        drain_s = time.monotonic() - healed
        rows = await link.centre.ledger()
        assert len(rows) == PAYMENTS
        assert [r[2] for r in rows] == list(range(1, PAYMENTS + 1))  # in the node's order
        assert len({r[0] for r in rows}) == PAYMENTS  # each once
        # The node's clock had run 72 h ahead of the centre's: the skew was measured and used.
        assert node.link.clock_skew_s is not None and node.link.clock_skew_s < -71 * 3600
        inquiries.sort()
        print(f"\n{PAYMENTS} payments over a simulated 72 h outage; {len(inquiries)} inquiries answered"
              f" during it (p50 {inquiries[len(inquiries) // 2] * 1000:.1f} ms, max {inquiries[-1] * 1000:.1f} ms);"
              f" drained in {drain_s:.1f} s after the link returned; 0 lost, 0 duplicated")  # fmt: skip
    finally:
        await close()


async def _mirror_ready(node: object) -> bool:
    from edge.node import Node

    assert isinstance(node, Node)
    return (
        node.db.read(lambda c: c.execute("SELECT cursor FROM mirror_state").fetchone()[0])
        is not None
    )
