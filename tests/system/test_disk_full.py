"""Fault matrix row 5: the node's data disk fills up (issue 8).

The node runs as a subprocess (`edge serve`) with its data dir on a 6 MB tmpfs, against a
reference centre on loopback whose data lives elsewhere. Cashiers pay until the disk is
full, in two configurations: with the free-space floor (`storage.min_free_mb = 1`: the node
refuses money before SQLite runs out) and without it (`min_free_mb = 0`: SQLite's own
SQLITE_FULL is what refuses). Either way a payment that cannot be stored gets
`507 storage_full` and writes nothing: payments rows equal outbox rows, every 201 is on
disk, `PRAGMA integrity_check` is ok and the outbox hash chain verifies. While full,
inquiries keep answering 200 and a retried payment still gets its first receipt. When
space is freed (`mount -o remount,size=64m`) the same process takes payments again (201)
and replays everything to the centre, with no restart. Needs root (mount).
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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import outbox
from edge import auth

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from upsd import free_port

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("edge")
EDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edge.cli"]
CYCLE = "2026-05"
ACCOUNTS = [f"01000000{i:02d}" for i in range(1, 13)]
BILLS = [f"DAM-{CYCLE}-{a}" for a in ACCOUNTS]
DISK_MB, FREED_MB, CASHIERS = 6, 64, 8
FULL_IN_A_ROW = 40  # consecutive 507s that mean "the disk is full", not a passing hiccup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: mounts a tiny tmpfs as the node's data disk"
    ),
]


def sh(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr.strip()}"
    return done.stdout


@dataclass
class Site:
    root: Path
    disk: Path
    node_config: Path
    centre_config: Path
    node_url: str
    token: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(  # stopped by PID in the fixture
                [*EDGE, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self, name: str) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.disk / 'edge.db'}?mode=ro", uri=True, timeout=10)


def write_site(root: Path, disk: Path, min_free_mb: int) -> Site:
    node_port, centre_port = free_port(), free_port()
    secret = root / "dam-1.secret"
    secret.write_text("disk-full-test-secret-0123456789\n")
    rows = "".join(
        f"{a},{CYCLE},سمير الحلبي,دمشق، المزة,EM-{a[-6:]},420,100000000,0,2026-07-15\n"
        for a in ACCOUNTS
    )
    (root / "bills.csv").write_text(
        "account,cycle,name,address,meter,kwh,amount,paid,due_date\n" + rows
    )
    centre_config = root / "centre.toml"
    centre_config.write_text(
        f'[centre]\ndata_dir = "{root / "centre"}"\nhost = "127.0.0.1"\nport = {centre_port}\n'
        f'governorate = "DAM"\n[nodes.dam-1]\ngovernorate = "DAM"\nsecret_file = "{secret}"\n'
    )
    node_config = root / "edge.toml"
    node_config.write_text(
        f'[node]\nid = "dam-1"\ngovernorate = "DAM"\ndata_dir = "{disk}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {node_port}\nshutdown_timeout_s = 5.0\n'
        f'[auth]\ntokens_file = "{root / "tokens.toml"}"\n'
        f'[centre]\nurl = "http://127.0.0.1:{centre_port}"\nsecret_file = "{secret}"\n'
        "timeout_s = 5.0\nretry_base_s = 0.5\nretry_cap_s = 2.0\npull_interval_s = 2.0\n"
        f'[storage]\nmin_free_mb = {min_free_mb}\n[ups]\nsource = "none"\n'
        "[power]\nfinal_replay_s = 2.0\n"
    )
    token = auth.add_token(root / "tokens.toml", "counter-1", ["inquire", "pay"])
    return Site(root, disk, node_config, centre_config, f"http://127.0.0.1:{node_port}", token)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    sh("mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0755", "tmpfs", str(disk))
    try:
        yield disk
    finally:
        # The node is stopped by now (fixture order); lazily detach if something still holds it.
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture(params=[1, 0], ids=["floor_1MB", "sqlite_full"])
async def site(
    tmp_path: Path, tiny_disk: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Site]:
    s = write_site(tmp_path, tiny_disk, request.param)
    sh(*EDGE, "centre", "import", "--config", str(s.centre_config), str(tmp_path / "bills.csv"))
    try:
        yield s
    finally:
        for name in ("node", "centre"):
            s.stop(name)


async def until(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if await check():
                return
        except aiohttp.ClientError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        await asyncio.sleep(0.1)


@dataclass
class Till:
    """The cashiers' view: every payment answered, by status."""

    site: Site
    session: aiohttp.ClientSession
    acked: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # key -> id, body
    refused: int = 0
    in_a_row: int = 0
    n: int = 0

    async def pay(self, bill: str) -> tuple[int, dict[str, Any]]:
        self.n += 1
        key = f"k-{self.n}"
        body = {"bill_id": bill, "amount": 100, "method": "cash", "cashier": "rania"}
        status, doc = await self.post(key, body)
        if status == 201:
            self.acked[key] = (doc["payment_id"], body)
            self.in_a_row = 0
        elif status == 507:
            assert doc["code"] == "storage_full", doc
            assert doc["title_ar"], doc
            self.refused += 1
            self.in_a_row += 1
        else:
            raise AssertionError(f"payment answered {status}: {doc}")
        return status, doc

    async def post(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.site.token}", "Idempotency-Key": key}
        async with self.session.post(
            f"{self.site.node_url}/v1/payments", json=body, headers=headers
        ) as resp:
            doc = await resp.json(content_type=None)
            if resp.headers.get("Idempotent-Replayed") == "true":
                doc["_replayed"] = True
            return resp.status, doc

    async def inquire(self, account: str) -> int:
        headers = {"Authorization": f"Bearer {self.site.token}"}
        async with self.session.get(
            f"{self.site.node_url}/v1/accounts/{account}/bills", headers=headers
        ) as resp:
            doc = await resp.json(content_type=None)
            assert resp.status != 200 or doc["account"] == account
            return resp.status


def check_store(site: Site, acked: set[str]) -> dict[str, int]:
    """Nothing half-written: the invariants of the node's database, read from its file."""
    with closing(site.db()) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = {r[0] for r in conn.execute("SELECT id FROM outbox_entries WHERE kind = 'payment'")}
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("payments", "outbox_entries", "outbox_idempotency")
        }
        last_seq, _ = outbox.verify_chain(outbox.iter_entries(conn))
    assert counts["payments"] == counts["outbox_entries"] == counts["outbox_idempotency"], counts
    assert last_seq == counts["outbox_entries"]
    # Exactly what was acknowledged: every 201 is there, and no refused payment left a trace.
    assert ids == acked, (len(ids), len(acked))
    return counts


async def test_disk_full_refuses_money_cleanly_and_recovers_without_restart(site: Site) -> None:
    site.start("centre", "centre", "serve", "--config", str(site.centre_config))
    site.start("node", "serve", "--config", str(site.node_config))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        till = Till(site, session)

        async def status() -> dict[str, Any]:
            async with session.get(f"{site.node_url}/v1/status") as resp:
                doc: dict[str, Any] = await resp.json(content_type=None)
                return doc

        async def mirror_ready() -> bool:
            return bool((await status())["mirror"]["bills"] == len(ACCOUNTS))

        await until("the mirror bootstrap", mirror_ready)

        # Pay until the disk is full: many refusals in a row, from every cashier.
        started = time.monotonic()

        async def cashier(n: int) -> None:
            i = n
            while till.in_a_row < FULL_IN_A_ROW:
                assert time.monotonic() - started < 120, "the disk never filled"
                await till.pay(BILLS[i % len(BILLS)])
                i += 1

        await asyncio.gather(*(cashier(n) for n in range(CASHIERS)))
        fill_s = time.monotonic() - started
        assert till.acked and till.refused >= FULL_IN_A_ROW
        free_kb = os.statvfs(site.disk).f_bavail * os.statvfs(site.disk).f_frsize // 1024
        print(f"\n{site.node_config.read_text().split('min_free_mb = ')[1].split()[0]} MB floor:"
              f" full after {len(till.acked)} payments in {fill_s:.1f} s, {till.refused} refused,"
              f" {free_kb} KiB free")  # fmt: skip

        # Full: inquiries still answer, a retry still gets its receipt, new money is refused.
        answered = [await till.inquire(ACCOUNTS[i % len(ACCOUNTS)]) for i in range(50)]
        assert answered == [200] * 50
        key, (payment_id, body) = next(iter(till.acked.items()))
        retried, doc = await till.post(key, body)
        assert (retried, doc["payment_id"], doc.get("_replayed")) == (201, payment_id, True)
        before = till.refused
        assert [(await till.pay(BILLS[0]))[0] for _ in range(5)] == [507] * 5
        assert till.refused == before + 5
        assert (await status())["outbox"]["pending"] >= 0  # the status page still answers
        counts_full = check_store(site, {pid for pid, _ in till.acked.values()})

        # Space comes back: the same process takes money again, and replays everything.
        sh("mount", "-o", f"remount,size={FREED_MB}m", str(site.disk))
        freed_at, refused_after_freeing = time.monotonic(), till.refused
        while (await till.pay(BILLS[1]))[0] != 201:
            assert time.monotonic() - freed_at < 30, (
                "the node did not recover after space was freed"
            )
            await asyncio.sleep(0.1)
        recovered_s = time.monotonic() - freed_at
        assert [(await till.pay(BILLS[i % len(BILLS)]))[0] for i in range(30)] == [201] * 30

        async def replayed() -> bool:
            return bool((await status())["outbox"]["pending"] == 0)

        await until("the outbox replayed to the centre", replayed, 60)
        print(f"recovered {recovered_s:.2f} s after space was freed"
              f" ({till.refused - refused_after_freeing} refused meanwhile);"
              f" {len(till.acked)} payments acknowledged, store at full: {counts_full}")  # fmt: skip

    acked = {pid for pid, _ in till.acked.values()}
    check_store(site, acked)
    assert site.stop("node") == 0, site.log("node")
    ledger = sh(*EDGE, "centre", "ledger", "--config", str(site.centre_config), "--node", "dam-1")
    at_centre = [row["id"] for row in csv.DictReader(io.StringIO(ledger))]
    assert len(at_centre) == len(set(at_centre)), "the centre counted an entry twice"
    assert set(at_centre) == acked, (
        "the centre's ledger differs from the node's acknowledged payments"
    )
