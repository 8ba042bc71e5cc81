"""A real reference centre on loopback, behind a fault proxy, and a node pointed at it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from faultproxy import FaultProxy
from nodefixtures import RunningNode, start_node

from sync.centre import bills, ledger
from sync.centre.app import STORE, create_app
from sync.centre.config import CentreSettings, NodeSettings

NODE, GOV, CYCLE = "dam-1", "DAM", "2026-05"
SECRET = "a-shared-secret-for-dam-1-tests-0123456789"
T = TypeVar("T")


def bill_input(
    account: str, amount: int = 100_000, paid: int = 0, cycle: str = CYCLE
) -> bills.BillInput:
    return bills.BillInput(account=account, cycle=cycle, name="ليلى الشامي", address="دمشق، باب توما",
                           meter=f"EM-{account[-6:]}", kwh=300, amount=amount, paid=paid,
                           due_date="2026-07-15")  # fmt: skip


ACCOUNTS = [f"01000000{i:02d}" for i in range(1, 21)]


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
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = self.app = None

    async def write(self, job: Callable[[Any], T]) -> T:
        assert self.app is not None
        return await self.app[STORE].write(job)

    async def ledger(self) -> list[tuple[Any, ...]]:
        assert self.app is not None
        return await self.app[STORE].read(lambda c: list(ledger.ledger_rows(c, NODE)))

    async def bill(self, bill_id: str) -> tuple[int, int]:
        """(paid, version) of a bill at the centre."""
        assert self.app is not None
        row = await self.app[STORE].read(
            lambda c: c.execute(
                "SELECT paid, version FROM bills WHERE bill_id = ?", (bill_id,)
            ).fetchone()
        )
        return int(row[0]), int(row[1])


@dataclass
class Link:
    centre: Centre
    proxy: FaultProxy
    node: RunningNode


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")


async def start_link(
    tmp_path: Path,
    *,
    clock: Callable[[], float] = time.time,
    accounts: list[str] = ACCOUNTS,
    proxy_mode: str = "pass",
    **node_overrides: Any,
) -> tuple[Link, Callable[[], Awaitable[None]]]:
    secret_file = tmp_path / "dam-1.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    settings = CentreSettings(
        data_dir=tmp_path / "centre", host="127.0.0.1", port=0, governorate=GOV,
        nodes={NODE: NodeSettings(governorate=GOV, secret=SECRET.encode())},
    )  # fmt: skip
    settings.data_dir.mkdir()
    centre = Centre(settings)
    await centre.start()
    now = time.time()
    await centre.write(lambda c: bills.upsert_bills(c, GOV, [bill_input(a) for a in accounts], now))
    proxy = FaultProxy(centre.port)
    proxy.mode = proxy_mode
    await proxy.start()
    overrides: dict[str, Any] = {
        "centre_url": f"http://127.0.0.1:{proxy.port}", "centre_secret_file": secret_file,
        "centre_retry_base_s": 0.05, "centre_retry_cap_s": 0.3, "centre_pull_interval_s": 0.2,
        "centre_config_fault_retry_s": 0.3, "centre_timeout_s": 5.0, "power_final_replay_s": 2.0,
    }  # fmt: skip
    overrides.update(node_overrides)
    runner, rn = await start_node(tmp_path / "node", [], clock=clock, **overrides)

    async def close() -> None:
        await rn.session.close()
        await runner.cleanup()
        await proxy.close()
        await centre.stop()

    return Link(centre, proxy, rn), close


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[Link]:
    lk, close = await start_link(tmp_path)
    try:
        yield lk
    finally:
        await close()
