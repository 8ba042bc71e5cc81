"""A power cut end to end: real upsd, the node and the reference centre as subprocesses.

The link is down during the cut; cashiers keep paying; the UPS goes OB then OB LB; the
node refuses money, exits 0 by itself with every acknowledged payment on disk; after the
restart on mains it serves again and replays them all to the centre. Last, a SIGTERM
during a burst of payments stops it cleanly.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import bills_csv, eventually, free_port
from procs import NO_LIMITS
from upsd import UPS, Upsd

from edge import tokens

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("edge")
EDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edge.cli"]
ACCOUNT, CYCLE = "0100234567", "2026-05"
BILL = f"DAM-{CYCLE}-{ACCOUNT}"

pytestmark = pytest.mark.slow


@dataclass
class Site:
    root: Path
    node_config: Path
    centre_config: Path
    node_url: str
    centre_url: str
    token: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        with log:
            proc = subprocess.Popen(  # stopped by PID in the fixture
                [*EDGE, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-4000:]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.root / "node" / "edge.db")


def write_site(root: Path, upsd: Upsd) -> Site:
    node_port, centre_port = free_port(), free_port()
    secret = root / "dam-1.secret"
    secret.write_text("power-test-secret-0123456789-0123456789\n")
    secret.chmod(0o600)
    (root / "bills.csv").write_text(bills_csv([ACCOUNT], cycle=CYCLE, amount=100_000_000))
    centre_config = root / "centre.toml"
    centre_config.write_text(
        f'[centre]\ndata_dir = "{root / "centre"}"\nhost = "127.0.0.1"\nport = {centre_port}\n'
        f'governorate = "DAM"\n[nodes.dam-1]\ngovernorate = "DAM"\nsecret_file = "{secret}"\n'
    )
    node_config = root / "edge.toml"
    node_config.write_text(
        f'[node]\nid = "dam-1"\ngovernorate = "DAM"\ndata_dir = "{root / "node"}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {node_port}\nshutdown_timeout_s = 5.0\n'
        f'[auth]\ntokens_file = "{root / "tokens.toml"}"\n'
        f'[centre]\nurl = "http://127.0.0.1:{centre_port}"\nsecret_file = "{secret}"\n'
        "timeout_s = 2.0\nretry_base_s = 0.2\nretry_cap_s = 1.0\n"
        "[storage]\nmin_free_mb = 0\n"
        f'[ups]\nport = {upsd.port}\nname = "{UPS}"\npoll_s = 0.3\npoll_battery_s = 0.2\n'
        'timeout_s = 1.0\n[power]\non_low = "shutdown"\nfinal_replay_s = 1.5\n' + NO_LIMITS
    )
    token = tokens.add_token(root / "tokens.toml", "counter-1", ["inquire", "pay"])
    return Site(root, node_config, centre_config, f"http://127.0.0.1:{node_port}",
                f"http://127.0.0.1:{centre_port}", token)  # fmt: skip


@pytest.fixture
async def site(tmp_path: Path, fresh_upsd: Upsd) -> AsyncIterator[Site]:
    s = write_site(tmp_path, fresh_upsd)
    imported = subprocess.run(
        [*EDGE, "centre", "import", "--config", str(s.centre_config), str(tmp_path / "bills.csv")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    try:
        yield s
    finally:
        for proc in s.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def until(what: str, check: Callable[[], Any], seconds: float = 20.0) -> None:
    await eventually(check, seconds, what, ignore=(aiohttp.ClientError,))  # not listening yet


async def exited(proc: subprocess.Popen[bytes], seconds: float) -> int:
    await eventually(lambda: proc.poll() is not None, seconds, "the process to exit")
    return proc.returncode


class Cashier:
    """Pays 1 SYP at a time, recording what was acknowledged (201) and what was refused."""

    def __init__(self, site: Site, session: aiohttp.ClientSession, prefix: str) -> None:
        self.site, self.session, self.prefix = site, session, prefix
        self.acked: list[str] = []
        self.refused: list[tuple[dict[str, Any], str | None]] = []
        self.n = 0

    async def pay(self) -> int | None:
        self.n += 1
        headers = {"Authorization": f"Bearer {self.site.token}",
                   "Idempotency-Key": f"{self.prefix}-{self.n}"}  # fmt: skip
        body = {"bill_id": BILL, "amount": 100, "method": "cash", "cashier": "rami"}
        try:
            async with self.session.post(
                f"{self.site.node_url}/v1/payments", json=body, headers=headers
            ) as resp:
                doc = await resp.json(content_type=None)
                if resp.status == 201:
                    self.acked.append(doc["payment_id"])
                elif resp.status == 503:
                    self.refused.append((doc, resp.headers.get("Retry-After")))
                else:
                    raise AssertionError(f"unexpected {resp.status}: {doc}")
                return resp.status
        except aiohttp.ClientConnectionError:
            return None  # the node is gone or going: nothing was acknowledged

    async def keep_paying(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.pay()
            await asyncio.sleep(0.01)


async def json_of(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json(content_type=None)


def stored_payments(site: Site) -> set[str]:
    """Payment ids in the node's outbox (a payment's id is its outbox entry's id)."""
    with closing(site.db()) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM outbox_entries WHERE kind = 'payment'")}


async def test_power_cut_low_battery_exit_restart_and_replay(site: Site, fresh_upsd: Upsd) -> None:
    upsd = fresh_upsd
    async with aiohttp.ClientSession() as session:

        async def power(state: str) -> bool:
            doc = await json_of(session, f"{site.node_url}/v1/status")
            return bool(doc["power"]["state"] == state)

        async def mirror_ready() -> bool:
            return bool((await json_of(session, f"{site.node_url}/v1/status"))["mirror"]["bills"])

        centre = site.start("centre", "centre", "serve", "--config", str(site.centre_config))
        node = site.start("node", "serve", "--config", str(site.node_config))
        await until("the node on mains with its mirror", lambda: power("mains"))
        await until("the mirror bootstrap", mirror_ready)

        # The cut takes the link down with it: payments queue locally.
        centre.send_signal(signal.SIGTERM)
        assert await exited(centre, 10) == 0
        cashier, stop = Cashier(site, session, "cut"), asyncio.Event()
        paying = asyncio.create_task(cashier.keep_paying(stop))
        await until("a few payments", lambda: len(cashier.acked) >= 5)
        await asyncio.to_thread(upsd.set_status, "OB")
        await until("battery", lambda: power("battery"), 5)
        on_battery = len(cashier.acked)
        await until("payments on battery", lambda: len(cashier.acked) > on_battery + 3)
        await asyncio.to_thread(upsd.set_status, "OB LB")
        code = await exited(node, 30)
        stop.set()
        await paying
        assert code == 0, site.log("node")
        assert "low battery: stopping the node now" in site.log("node")

        assert cashier.refused, "payments were refused between low battery and the exit"
        doc, retry_after = cashier.refused[0]
        assert (doc["code"], retry_after) == ("node_shutting_down", "600")
        assert "انقطاع في الكهرباء" in doc["detail"] and "Power cut" in doc["detail"]
        assert set(cashier.acked) <= stored_payments(site), "an acknowledged payment was lost"
        with closing(site.db()) as conn:
            transitions = conn.execute("SELECT from_state, to_state FROM power_events ORDER BY id")
            assert transitions.fetchall() == [
                ("unknown", "mains"), ("mains", "battery"), ("battery", "low"),
            ]  # fmt: skip
            pending = conn.execute("SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'")
            assert pending.fetchone()[0] == len(cashier.acked), "nothing reached the downed centre"

        # Power and link are back.
        await asyncio.to_thread(upsd.set_status, "OL")
        site.start("centre", "centre", "serve", "--config", str(site.centre_config))
        node = site.start("node", "serve", "--config", str(site.node_config))
        await until("the node back on mains", lambda: power("mains"))
        after = Cashier(site, session, "after")
        assert await after.pay() == 201

        async def replayed() -> bool:
            doc = await json_of(session, f"{site.node_url}/v1/status")
            return bool(doc["outbox"]["pending"] == 0)

        await until("the outbox replayed", replayed)
        ledger = subprocess.run(
            [*EDGE, "centre", "ledger", "--config", str(site.centre_config), "--node", "dam-1"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ledger.returncode == 0, ledger.stderr
        at_centre = {row["id"] for row in csv.DictReader(io.StringIO(ledger.stdout))}
        assert set(cashier.acked) | set(after.acked) <= at_centre

        # systemd's stop (e.g. upsmon shutting the host down): SIGTERM mid-burst.
        burst = Cashier(site, session, "burst")
        calls = [asyncio.create_task(burst.pay()) for _ in range(30)]
        await asyncio.sleep(0.05)
        node.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls)
        assert await exited(node, 20) == 0, site.log("node")
        assert set(results) <= {201, 503, None}
        assert set(burst.acked) <= stored_payments(site), "an acknowledged payment was lost"
        assert "node stopped cleanly" in site.log("node")
