"""Row 3 of the fault matrix: the reference centre kill -9'd while the node drains its backlog,
on SQLite and on PostgreSQL (a database of the session's throwaway cluster)."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from helpers import eventually
from loadgen import Cashiers
from procs import Site

ROUNDS = 5


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_centre_killed_mid_batch_records_each_entry_once(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    where = f"({store}, CRASH_SEED={seed})"
    database = "" if store == "sqlite" else request.getfixturevalue("pg_cluster").create_database()
    site = Site(tmp_path / "site", database=database)
    site.node_config.write_text(
        site.node_config.read_text().replace(
            "retry_base_s = 0.1", "batch_size = 100\nretry_base_s = 0.1"
        )
    )
    site.seed(200)
    try:
        site.start_centre()
        site.start_node()
        await asyncio.sleep(1.0)  # the mirror bootstraps
        site.centre.kill9()
        cashiers = Cashiers(site.url, site.token, site.bills(50), rng)
        load = asyncio.create_task(cashiers.run(16))
        await asyncio.sleep(2.0)  # a backlog builds while the centre is down
        cashiers.stop.set()
        await load
        kills = 0
        for _ in range(ROUNDS):
            await asyncio.to_thread(site.start_centre)
            await asyncio.sleep(rng.uniform(0.02, 0.25))  # somewhere inside the drain
            site.centre.kill9()
            kills += 1
        await asyncio.to_thread(site.start_centre)

        def drained() -> bool:
            with closing(site.node_db()) as conn:
                sql = "SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'"
                return not conn.execute(sql).fetchone()[0]

        await eventually(drained, 60, "the outbox to drain", every=0.2)
        ledger = site.ledger()
    finally:
        site.shutdown()
    with closing(site.node_db()) as conn:
        node = {
            r[0] for r in conn.execute("SELECT id FROM outbox_entries WHERE state = 'delivered'")
        }
        total = conn.execute("SELECT COUNT(*) FROM outbox_entries").fetchone()[0]
    ids = Counter(r["id"] for r in ledger)
    assert len(node) == total == len(cashiers.acked), f"entries not delivered {where}"
    assert set(ids) == node, f"centre and node differ {where}"
    assert max(ids.values()) == 1, f"an entry recorded twice {where}"
    assert [int(r["seq"]) for r in ledger] == list(range(1, total + 1)), where
    print(f"\n{kills} centre kills during a drain of {total} entries: 0 lost, 0 duplicated {where}")
