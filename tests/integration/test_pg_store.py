"""The PostgreSQL store's own guarantees: its migrations are recorded and applied once even
when several centre processes start at once, and a database that goes away mid-run costs a
503 the node retries (nothing recorded, never a 500), until it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from helpers import bill_input, unavailable
from pgcluster import Cluster, bindir
from test_centre import GOV, NODE, SECRETS, UNPAID, Centre, Chain

from sync import protocol
from sync.centre import pgschema
from sync.centre.app import create_app
from sync.centre.config import CentreSettings, NodeSettings
from sync.centre.pgstore import PgCentre
from sync.errors import SyncError


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    found = bindir()
    if found is None:
        unavailable("PostgreSQL is not installed (initdb; .ci/apt-packages has postgresql)")
    cluster = Cluster.start(found)
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_migrations_are_recorded_once_when_processes_start_together(
    pg_cluster: Cluster,
) -> None:
    url = pg_cluster.create_database()
    stores = [PgCentre(url, pool_size=2) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        conn = await asyncpg.connect(url)
        try:
            names = [m.name for m in pgschema.PG_MIGRATIONS]
            assert await pgschema.applied(conn) == names
            assert await pgschema.apply_migrations(conn) == []  # nothing left to apply
            assert await conn.fetchval("SELECT last FROM change_counter") == 0
        finally:
            await conn.close()
    finally:
        for s in stores:
            await s.close()
        pg_cluster.drop_database(url)


async def test_opening_a_missing_database_is_a_sync_error_naming_it(
    pg_cluster: Cluster,
) -> None:
    url = f"postgresql://centre@127.0.0.1:{pg_cluster.port}/no_such_database"
    store = PgCentre(url)
    with pytest.raises(SyncError) as caught:
        await store.open()
    assert "no_such_database" in caught.value.detail


@pytest.fixture
async def pg_centre(own_cluster: Cluster) -> AsyncIterator[tuple[Centre, Cluster]]:
    settings = CentreSettings(
        governorate=GOV, database=own_cluster.create_database(),
        nodes={NODE: NodeSettings(governorate=GOV, secret=SECRETS[NODE])},
    )  # fmt: skip
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        centre = Centre(server, session, settings)
        await centre.db.upsert_bills(GOV, [bill_input(UNPAID, cycle="2026-05")], time.time())
        yield centre, own_cluster
    await server.close()


async def test_a_database_gone_mid_run_is_a_503_and_then_the_centre_resumes(
    pg_centre: tuple[Centre, Cluster],
) -> None:
    centre, cluster = pg_centre
    chain = Chain()
    chain.pay(UNPAID, 1_000)
    await asyncio.to_thread(cluster.pg_ctl, "stop", "immediate")
    try:
        status, raw = await centre.post(chain.entries)
        assert (status, protocol.decode_error(raw)[0]) == (503, "storage_unavailable")
        status, raw, _ = await centre.request("GET", "/v1/governorates/DAM/bills/changes")
        assert (status, protocol.decode_error(raw)[0]) == (503, "storage_unavailable")
    finally:
        await asyncio.to_thread(cluster.pg_ctl, "start")
    # The node's retry (a new request, a new nonce) is recorded once, as if nothing happened.
    reply = await centre.send(chain.entries)
    assert [(r.verdict, r.version) for r in reply.results] == [("applied", 2)]
    assert [r[5] for r in await centre.ledger()] == ["applied"]
    assert (await centre.bill(UNPAID))["paid"] == 1_000
