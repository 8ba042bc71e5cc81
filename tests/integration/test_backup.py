"""Backups taken while cashiers pay, restored into a fresh node; restore's refusals."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually, make_bill
from nodefixtures import RunningNode, start_node

import outbox
from edge import cli, config
from edge.ops import backup, restore

ACCOUNTS = [f"01002{i:05d}" for i in range(40)]
BILLS = [make_bill(a, amount=10_000_000) for a in ACCOUNTS]


def ids_in(db: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM outbox_entries")}


class Cashiers:
    """Concurrent counters paying small amounts; remembers every acknowledged payment."""

    def __init__(self, rn: RunningNode) -> None:
        self.rn = rn
        self.acked: list[str] = []
        self.keys = itertools.count()
        self.stop = asyncio.Event()

    async def pay_once(self) -> None:
        n = next(self.keys)
        body = {"bill_id": BILLS[n % len(BILLS)]["bill_id"], "amount": 100, "method": "cash",
                "cashier": "c1"}  # fmt: skip
        headers = self.rn.headers(**{"Idempotency-Key": f"k-{n}"})
        async with self.rn.session.post(f"{self.rn.url}/v1/payments", json=body,
                                        headers=headers) as resp:  # fmt: skip
            assert resp.status == 201, await resp.text()
            self.acked.append((await resp.json())["payment_id"])

    async def counter(self) -> None:
        while not self.stop.is_set():
            await self.pay_once()

    def settings(self) -> config.Settings:
        return self.rn.node.settings


async def test_backup_while_paying_then_restore_into_a_fresh_node(tmp_path: Path) -> None:
    runner, rn = await start_node(tmp_path / "live", BILLS)
    cashiers = Cashiers(rn)
    workers = [asyncio.create_task(cashiers.counter()) for _ in range(8)]
    dest = tmp_path / "backups"
    dest.mkdir()
    try:
        for round_ in range(3):
            # Payments keep arriving between the backups (and during them).
            goal = len(cashiers.acked) + 20
            await eventually(lambda g=goal: len(cashiers.acked) >= g, what="20 more payments")
            before = set(cashiers.acked)
            done = await backup.backup(cashiers.settings(), dest / f"b{round_}.db")
            # Everything acknowledged before the backup began is in it, whatever came during.
            assert before <= ids_in(done.path)
            assert done.last_seq == len(ids_in(done.path)) >= len(before) > 0
        cashiers.stop.set()
        await asyncio.gather(*workers)
        final = await backup.backup(cashiers.settings(), dest / "final.db")
    finally:
        cashiers.stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await rn.session.close()
        await runner.cleanup()
    assert len(cashiers.acked) > 50
    assert ids_in(final.path) == set(cashiers.acked)
    assert not Path(str(final.path) + "-wal").exists()  # one self-contained file

    fresh = cashiers.settings().replace(node_data_dir=tmp_path / "restored" / "data")
    done = await restore.restore(fresh, final.path)
    assert done.replaced is None and done.facts.last_seq == len(cashiers.acked)
    with closing(sqlite3.connect(fresh.db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        outbox.verify_chain(outbox.iter_entries(conn))
        paid = conn.execute("SELECT COUNT(*), SUM(amount) FROM payments").fetchone()
    assert paid == (len(cashiers.acked), 100 * len(cashiers.acked))

    # The restored database runs: the node opens it and knows every payment.
    runner, rn = await start_node(tmp_path / "restored", [])
    try:
        for payment_id in cashiers.acked[:: max(1, len(cashiers.acked) // 10)]:
            async with rn.session.get(f"{rn.url}/v1/payments/{payment_id}",
                                      headers=rn.headers()) as resp:  # fmt: skip
                assert resp.status == 200
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_restore_refuses_a_newer_outbox_without_force(tmp_path: Path) -> None:
    runner, rn = await start_node(tmp_path, BILLS)
    cashiers = Cashiers(rn)
    try:
        for _ in range(5):
            await cashiers.pay_once()
        old = await backup.backup(rn.node.settings, tmp_path / "old.db")
        for _ in range(3):
            await cashiers.pay_once()
        # While the node has the database open, nothing is replaced, even with --force.
        with pytest.raises(backup.BackupError, match="in use"):
            await restore.restore(rn.node.settings, old.path, force=True)
        running = rn.node.settings.replace(http_port=int(rn.url.rsplit(":", 1)[1]))
        with pytest.raises(backup.BackupError, match="seems to be running"):
            await restore.restore(running, old.path)
    finally:
        await rn.session.close()
        await runner.cleanup()
    settings = rn.node.settings
    with pytest.raises(backup.BackupError, match="would lose 3 entries"):
        await restore.restore(settings, old.path)
    assert ids_in(settings.db_path) == set(cashiers.acked)  # untouched

    replaced = (await restore.restore(settings, old.path, force=True)).replaced
    assert replaced is not None and replaced.name.startswith("edge.db.replaced-")
    assert ids_in(replaced) == set(cashiers.acked)  # the newer database is kept beside
    assert ids_in(settings.db_path) == set(cashiers.acked[:5])


async def test_restore_refuses_another_history_and_another_node(tmp_path: Path) -> None:
    stores = {}
    for name in ("a", "b"):
        runner, rn = await start_node(tmp_path / name, BILLS)
        try:
            for _ in range(2 if name == "a" else 4):
                await Cashiers(rn).pay_once()
        finally:
            await rn.session.close()
            await runner.cleanup()
        stores[name] = rn.node.settings
    b_copy = await backup.backup(stores["b"], tmp_path / "b.db")
    # Node a's two entries are not the first two of b's: their chains differ.
    with pytest.raises(backup.BackupError, match="entries the backup lacks"):
        await restore.restore(stores["a"], b_copy.path)
    other = stores["a"].replace(node_id="dam-2")
    with pytest.raises(backup.BackupError, match="backup of node dam-1"):
        await restore.restore(other, b_copy.path)


async def test_backup_refuses_a_tampered_outbox(
    tmp_path: Path, seed: Any, pay: Any, tx: Any, conn: sqlite3.Connection
) -> None:
    seed(conn, [make_bill("0100234567")])
    for key in ("k1", "k2"):
        tx(conn, lambda c, key=key: pay(c, "DAM-2026-05-0100234567", 5_000, key=key))
    conn.execute("UPDATE outbox_entries SET payload = x'00' WHERE seq = 1")
    conn.close()
    db = tmp_path / "data" / "edge.db"
    db.parent.mkdir()
    (tmp_path / "unit.db").rename(db)
    settings = config.Settings(node_data_dir=db.parent)
    with pytest.raises(backup.BackupError, match="hash chain does not hold"):
        await backup.backup(settings, tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy")] == []


async def test_cli_backup_into_a_directory_keeps_the_newest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner, rn = await start_node(tmp_path, BILLS)
    await Cashiers(rn).pay_once()
    await rn.session.close()
    await runner.cleanup()
    cfg = tmp_path / "edge.toml"
    # No centre: restore has no chain elsewhere to check (test_restore_chain has one).
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n[ups]\nsource = "none"\n[centre]\nurl = ""\n'
    )
    dest = tmp_path / "backups"
    dest.mkdir()
    (dest / "edge-dam-1-20200101T000000Z.db").write_bytes(b"an old one")
    (dest / "unrelated.txt").write_text("not a backup")
    args = ["backup", f"{dest}/", "--config", str(cfg), "--keep", "1"]
    assert await asyncio.to_thread(cli.main, args) == 0
    out = capsys.readouterr().out
    assert "integrity ok, outbox chain ok" in out and "removed old backup" in out
    names = sorted(p.name for p in dest.iterdir())
    assert len(names) == 2 and "unrelated.txt" in names
    assert names[0].startswith("edge-dam-1-") and names[0] != "edge-dam-1-20200101T000000Z.db"
    assert await asyncio.to_thread(cli.main, ["restore", str(dest / names[0]), "--config",
                                              str(cfg)]) == 0  # fmt: skip
    assert "previous database is kept" in capsys.readouterr().out
    fresh = tmp_path / "new" / "dir"
    assert await asyncio.to_thread(cli.main, ["backup", f"{fresh}/", "--config", str(cfg)]) == 0
    assert [p.name.startswith("edge-dam-1-") for p in fresh.iterdir()] == [True]
