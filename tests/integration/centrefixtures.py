"""A real reference centre on loopback, behind a fault proxy, and a node pointed at it.

The centre's store is SQLite, or PostgreSQL (a fresh database of the session's throwaway
cluster) for the tests of a module marked `both_stores`, which run once on each: the
`centre_store` fixture picks it, `on_store(settings)` applies it to any CentreSettings.
`bill_input` and `eventually` are helpers', importable from here too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from faultproxy import FaultProxy
from helpers import CYCLE, GOV, bill_input, eventually
from nodefixtures import RunningNode, start_node

from sync.centre.app import STORE, create_app
from sync.centre.config import CentreSettings, NodeSettings
from sync.centre.stores import CentreDB

NODE = "dam-1"
SECRET = "a-shared-secret-for-dam-1-tests-0123456789"
T = TypeVar("T")
ACCOUNTS = [f"01000000{i:02d}" for i in range(1, 21)]

__all__ = ["ACCOUNTS", "CYCLE", "GOV", "NODE", "SECRET", "STORES", "Centre", "Link", "bill_input",
           "centre_store", "eventually", "link", "on_store", "start_link"]  # fmt: skip

STORES = ("sqlite", "postgresql")
_database = {"url": ""}  # the current test's PostgreSQL database; "" = SQLite


def on_store(settings: CentreSettings) -> CentreSettings:
    """`settings` on the current test's store (its PostgreSQL database, if it has one)."""
    url = _database["url"]
    return dataclasses.replace(settings, database=url) if url else settings


@pytest.fixture
def centre_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """ "sqlite" (the default), or "postgresql" with a fresh database of the session's cluster
    for the test (parametrized for the modules marked both_stores, conftest)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield kind
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    _database["url"] = url
    try:
        yield kind
    finally:
        _database["url"] = ""
        cluster.drop_database(url)


@dataclass
class Centre:
    settings: CentreSettings
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        self.app = create_app(self.settings)
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        context = self.settings.ssl_context()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=context).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = self.app = None

    @property
    def db(self) -> CentreDB:
        """The running centre's store (sync.centre.stores), SQLite or PostgreSQL."""
        assert self.app is not None
        return self.app[STORE]

    async def ledger(self) -> list[tuple[Any, ...]]:
        """(id, node, seq, bill_id, amount, verdict) of NODE's entries in seq order."""
        return [row[:6] for row in await self.db.ledger_rows(NODE)]

    async def bill(self, bill_id: str) -> tuple[int, int]:
        """(paid, version) of a bill at the centre."""
        found = await self.db.bill(bill_id)
        assert found is not None, bill_id
        return int(found["paid"]), int(found["version"])


@dataclass
class Link:
    centre: Centre
    proxy: FaultProxy
    node: RunningNode
    runner: web.AppRunner | None = None  # the node's: a test may stop the node alone

    async def stop_node(self) -> None:
        if self.runner is not None:
            await self.node.session.close()
            await self.runner.cleanup()
            self.runner = None


async def start_link(
    tmp_path: Path,
    *,
    clock: Callable[[], float] = time.time,
    accounts: list[str] = ACCOUNTS,
    proxy_mode: str = "pass",
    centre_overrides: dict[str, Any] | None = None,
    scheme: str = "http",
    **node_overrides: Any,
) -> tuple[Link, Callable[[], Awaitable[None]]]:
    secret_file = tmp_path / "dam-1.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    settings = CentreSettings(
        data_dir=tmp_path / "centre", host="127.0.0.1", port=0, governorate=GOV,
        nodes={NODE: NodeSettings(governorate=GOV, secret=SECRET.encode())},
    )  # fmt: skip
    settings = on_store(dataclasses.replace(settings, **(centre_overrides or {})))
    settings.data_dir.mkdir()
    centre = Centre(settings)
    await centre.start()
    now = time.time()
    await centre.db.upsert_bills(GOV, [bill_input(a) for a in accounts], now)
    proxy = FaultProxy(centre.port)
    proxy.mode = proxy_mode
    await proxy.start()
    overrides: dict[str, Any] = {
        "centre_url": f"{scheme}://127.0.0.1:{proxy.port}", "centre_secret_file": secret_file,
        "centre_retry_base_s": 0.05, "centre_retry_cap_s": 0.3, "centre_pull_interval_s": 0.2,
        "centre_config_fault_retry_s": 0.3, "centre_timeout_s": 5.0, "power_final_replay_s": 2.0,
    }  # fmt: skip
    overrides.update(node_overrides)
    runner, rn = await start_node(tmp_path / "node", [], clock=clock, **overrides)

    link = Link(centre, proxy, rn, runner)

    async def close() -> None:
        await link.stop_node()
        await proxy.close()
        await centre.stop()

    return link, close


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[Link]:
    lk, close = await start_link(tmp_path)
    try:
        yield lk
    finally:
        await close()
