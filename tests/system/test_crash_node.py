"""Row 1 of the fault matrix: the node kill -9'd at random moments under 32 paying clients."""

from __future__ import annotations

import asyncio
import json
import os
import random
import urllib.request
from collections import Counter
from contextlib import closing
from pathlib import Path

from helpers import eventually
from loadgen import Cashiers
from procs import Site

import outbox

ROUNDS = 8
CLIENTS = 32


def status(site: Site) -> dict[str, object]:
    with urllib.request.urlopen(f"{site.url}/v1/status", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def test_kill_9_under_load_loses_nothing_and_counts_once(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    where = f"(CRASH_SEED={seed})"
    site = Site(tmp_path / "site")
    site.seed(300)
    try:
        site.start_centre()
        site.start_node()
        cashiers = Cashiers(site.url, site.token, site.bills(60), rng)
        load = asyncio.create_task(cashiers.run(CLIENTS))
        for _ in range(ROUNDS):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            site.node.kill9()
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            await asyncio.to_thread(site.start_node)
        await asyncio.sleep(1.0)
        cashiers.stop.set()
        await load
        await eventually(lambda: not status(site)["outbox"]["pending"], 60,  # type: ignore[index]
                         "the outbox to drain", every=0.2)  # fmt: skip
        assert site.node.stop() == 0, site.node.tail()
    finally:
        site.shutdown()

    with closing(site.node_db()) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        outbox.verify_chain(outbox.iter_entries(conn))
        node = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
            "SELECT o.id, o.state, p.bill_id, p.amount FROM outbox_entries o JOIN payments p ON p.seq = o.seq")}  # fmt: skip
    ledger = site.ledger()
    acked = set(cashiers.acked.values())
    assert acked <= set(node), f"{len(acked - set(node))} acknowledged payments lost {where}"
    assert len(node) == len(acked), f"payments nobody was told about {where}"
    assert all(state == "delivered" for state, _, _ in node.values()), where
    ids = Counter(row["id"] for row in ledger)
    assert set(ids) == set(node) and max(ids.values()) == 1, f"centre ledger differs {where}"
    sums_node: Counter[str] = Counter()
    sums_centre: Counter[str] = Counter()
    for _, bill, amount in node.values():
        sums_node[bill] += amount
    for row in ledger:
        sums_centre[row["bill_id"]] += int(row["amount"])
    assert sums_node == sums_centre, where
    print(f"\n{ROUNDS} kills, {len(acked)} payments acknowledged, {cashiers.replayed} retries answered"
          f" from the idempotency record, 0 lost, 0 duplicated {where}")  # fmt: skip
