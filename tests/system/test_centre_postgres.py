"""The centre on PostgreSQL as real processes (issue 20): two `edge centre serve` processes on
one database given the same node's batches at once, and PostgreSQL itself restarted while a
node drains its backlog into the centre. (The centre kill -9'd mid-batch on PostgreSQL is
test_crash_centre's postgresql case.)
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from helpers import eventually, free_port, unavailable
from loadgen import Cashiers
from pgcluster import Cluster, bindir
from procs import NODE, Proc, Site, edge, wait_http

import outbox
from sync import protocol

pytestmark = pytest.mark.slow
SECRET = b"system-test-secret-0123456789-0123456789"  # procs.Site's
ENTRIES, BATCH, STEP = 240, 30, 24  # batches overlap by BATCH - STEP entries


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own: it is restarted under the centre."""
    found = bindir()
    if found is None:
        unavailable("PostgreSQL is not installed (initdb; .ci/apt-packages has postgresql)")
    cluster = Cluster.start(found)
    try:
        yield cluster
    finally:
        cluster.stop()


def payments(bills: list[str], count: int) -> list[protocol.WireEntry]:
    """`count` payments of 100 piastres chained as dam-1's outbox writes them."""
    out, prev = [], outbox.GENESIS
    for seq in range(1, count + 1):
        eid = outbox.new_entry_id(NODE)
        bill_id = bills[seq % len(bills)]
        payload = msgpack.packb(
            {"payment_id": eid, "bill_id": bill_id, "account": bill_id.rsplit("-", 1)[1],
             "amount": 100, "channel": "counter-1", "idempotency_key": eid, "method": "cash",
             "cashier": "c1", "accepted_at": "2026-06-01T08:00:00.000Z",
             "receipt": f"DAM-20260601-{seq:06d}"},
            use_bin_type=True,
        )  # fmt: skip
        digest = outbox.entry_hash(prev, seq, eid, "payment", payload)
        out.append(protocol.WireEntry(seq, eid, "payment", payload, prev, digest))
        prev = digest
    return out


async def post(
    session: aiohttp.ClientSession, port: int, entries: list[protocol.WireEntry]
) -> tuple[int, Any]:
    path = f"/v1/nodes/{NODE}/outbox"
    body = protocol.encode_batch(NODE, entries)
    headers = protocol.sign(SECRET, NODE, "POST", path, body, int(time.time()))
    headers["Content-Type"] = protocol.CONTENT_TYPE
    async with session.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as r:
        raw = await r.read()
        if r.status == 200:
            return 200, protocol.decode_reply(raw)
        return r.status, protocol.decode_error(raw)[0]


async def test_two_centre_processes_on_one_database_extend_the_chain_once(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    site = Site(tmp_path / "site", database=pg_cluster.create_database())
    site.seed(40)
    second_config = site.base / "centre-2.toml"
    second_port = free_port()
    second_config.write_text(
        site.centre_config.read_text().replace(
            f"port = {site.centre_port}", f"port = {second_port}"
        )
    )
    second = Proc(edge("centre", "serve", "--config", str(second_config)), site.base / "c2.log")
    try:
        site.start_centre()
        second.start()
        wait_http(f"http://127.0.0.1:{second_port}/healthz", second)
        bills = site.bills(12)
        before = dict(site.centre_query("SELECT bill_id, paid FROM bills"))
        chain = payments(bills, ENTRIES)
        ports = (site.centre_port, second_port)
        first_verdicts: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        refused: Counter[str] = Counter()
        async with aiohttp.ClientSession() as session:
            for start in range(0, ENTRIES, STEP):
                batch = chain[start : start + BATCH]
                # The same batch to both processes at once, twice over, and the next batch
                # racing it: the one that finds the chain behind it is refused (chain_gap).
                # (Every other step, so the head is then behind it until `batch` commits.)
                ahead = chain[start + BATCH : start + BATCH + STEP] if start % (2 * STEP) else []
                sends = [post(session, ports[start % 2], ahead)] if ahead else []
                sends += [post(session, port, batch) for port in ports * 2]
                for status, answer in await asyncio.gather(*sends):
                    if status != 200:
                        refused[answer] += 1
                        continue
                    for v in answer.results:
                        # A duplicate names the first verdict (PROTOCOL 5.1): the entry's
                        # recorded verdict, from whichever process recorded it.
                        shown = v.reason if v.verdict == "duplicate" else v.verdict
                        first_verdicts[v.id].append((shown or "", v.version))
                        if v.verdict != "duplicate":
                            first_verdicts[v.id].append(("recorded", None))
            # Everything sent once more, to each: all of it known now.
            for port in ports:
                status, answer = await post(session, port, chain[-BATCH:])
                assert status == 200 and answer.acked_seq == ENTRIES, answer
        rows = site.centre_query(
            "SELECT seq, id, prev_hash, hash, verdict, bill_id, amount FROM entries"
            " WHERE node = ? ORDER BY seq",
            NODE,
        )
        head = site.centre_query("SELECT seq, hash FROM chain_heads WHERE node = ?", NODE)
        after = dict(site.centre_query("SELECT bill_id, paid FROM bills"))
    finally:
        second.kill9()
        site.shutdown()
    assert set(refused) <= {"chain_gap"}, refused
    # Each entry recorded once, in chain order, the chain intact end to end.
    assert [r[0] for r in rows] == list(range(1, ENTRIES + 1))
    assert [r[1] for r in rows] == [e.id for e in chain]
    assert all(rows[i][2] == rows[i - 1][3] for i in range(1, ENTRIES)), "the chain is broken"
    assert head == [(ENTRIES, chain[-1].hash)]
    # Verdicts consistent: one process recorded each entry, every answer names that verdict.
    for e in chain:
        answers = first_verdicts[e.id]
        assert answers.count(("recorded", None)) == 1, (e.seq, answers)
        assert {a for a in answers if a[0] != "recorded"} == {("applied", answers[0][1])}
    assert {r[4] for r in rows} == {"applied"}
    # The money once: each bill's paid rose by 100 per entry recorded for it.
    paid = Counter(str(r[5]) for r in rows)
    assert {b: int(after[b]) - int(before[b]) for b in bills} == {b: 100 * paid[b] for b in bills}
    print(f"\n2 centre processes, {ENTRIES} entries: each recorded once; {sum(refused.values())}"
          " racing batches refused chain_gap")  # fmt: skip


async def test_postgresql_restarted_mid_drain_loses_and_doubles_nothing(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    where = f"(CRASH_SEED={seed})"
    site = Site(tmp_path / "site", database=own_cluster.create_database())
    site.node_config.write_text(
        site.node_config.read_text().replace(
            "retry_base_s = 0.1", "batch_size = 100\nretry_base_s = 0.1"
        )
    )
    site.seed(200)
    restarts = 0
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
        await asyncio.to_thread(site.start_centre)
        for mode in ("immediate", "fast", "immediate"):
            await asyncio.sleep(rng.uniform(0.05, 0.4))  # somewhere inside the drain
            await asyncio.to_thread(own_cluster.restart, mode)
            restarts += 1

        def drained() -> bool:
            with closing(site.node_db()) as conn:
                sql = "SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'"
                return not conn.execute(sql).fetchone()[0]

        await eventually(drained, 90, "the outbox to drain", every=0.2)
        assert site.centre.alive(), (
            f"the centre died with its database {where}\n{site.centre.tail()}"
        )
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
    print(f"\n{restarts} PostgreSQL restarts during a drain of {total} entries: 0 lost,"
          f" 0 duplicated {where}")  # fmt: skip
