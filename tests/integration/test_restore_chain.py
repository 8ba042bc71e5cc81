"""A restore that cannot break the chain (issue 19): an old backup against a real centre that
holds more of the node's entries. Refused with the reason; the old way (the file put back
as it was) leaves every new payment at 409 chain_broken; with --resync a new payment is
accepted, the chain holds and nothing is counted twice."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link
from helpers import free_port
from nodefixtures import RunningNode, start_node

import outbox
from edge import cli, mirror
from edge.ops import backup, restore
from edge.ops.backup import BackupError

AMOUNT, BILLED = 10_000, 100_000  # each payment; each bill (helpers.make_bill)
BILL, OTHER = f"{GOV}-{CYCLE}-{ACCOUNTS[0]}", f"{GOV}-{CYCLE}-{ACCOUNTS[1]}"
# The node's link settings of start_link, for a node started again on a restored database.
LINK_KEYS = ("centre_url", "centre_secret_file", "centre_retry_base_s", "centre_retry_cap_s",
             "centre_pull_interval_s", "centre_config_fault_retry_s", "centre_timeout_s",
             "power_final_replay_s")  # fmt: skip


async def pay(rn: RunningNode, key: str, bill_id: str = BILL) -> dict[str, Any]:
    body = {"bill_id": bill_id, "amount": AMOUNT, "method": "cash", "cashier": "huda"}
    headers = rn.headers(**{"Idempotency-Key": key})
    async with rn.session.post(f"{rn.url}/v1/payments", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        doc: dict[str, Any] = await resp.json()
        return doc


async def settled(rn: RunningNode) -> None:
    def pending() -> int:
        return int(rn.node.db.read(lambda c: outbox.stats(c).pending))

    await eventually(lambda: pending() == 0, what="every entry delivered")


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


async def again(link: Link, where: Path, data_dir: Path) -> tuple[Any, RunningNode]:
    """A node started on `data_dir` (a restored database), linked to the same centre."""
    settings = link.node.node.settings
    linked = {key: getattr(settings, key) for key in LINK_KEYS}
    return await start_node(where, [], node_data_dir=data_dir, **linked)


async def test_an_old_backup_is_refused_and_resync_continues_after_the_centre(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        await eventually(lambda: rn.node.db.read(mirror.state).bills == len(ACCOUNTS),
                         what="the mirror")  # fmt: skip
        for i in range(3):
            await pay(rn, f"before-{i}")
        await settled(rn)
        settings = rn.node.settings
        old = await backup.backup(settings, tmp_path / "old.db")
        assert old.last_seq == 3 and old.pending == 0
        later = [await pay(rn, f"after-{i}", OTHER) for i in range(2)]
        await settled(rn)
        await link.stop_node()
        assert len(await link.centre.ledger()) == 5
        live = rows(settings.db_path, "SELECT seq, id, hash FROM outbox_entries ORDER BY seq")

        # Refused in plain words, with and without --force, and nothing is written.
        for force in (False, True):
            with pytest.raises(BackupError) as refused:
                await restore.restore(settings, old.path, force=force)
            text = str(refused.value)
            assert "the centre holds 2 entries of this node after the backup's last" in text
            assert "(seq 4..5)" in text and "409 chain_broken" in text
            assert "--resync" in text and "continues at seq 6" in text
            assert rows(settings.db_path, "SELECT seq, id, hash FROM outbox_entries") == live
            assert sorted(p.name for p in settings.node_data_dir.iterdir()) == ["edge.db"]

        # The old way, as a regression proof: the file put back as it was. Its next payment
        # gets seq 4, which the centre holds for another entry: refused, held, never counted.
        old_way = tmp_path / "old-way" / "data"
        old_way.mkdir(parents=True)
        shutil.copy(old.path, old_way / "edge.db")
        runner, broken = await again(link, tmp_path / "old-way", old_way)
        try:
            await eventually(lambda: broken.node.db.read(mirror.state).bills > 0, what="pull")
            stuck = await pay(broken, "old-way")
            await eventually(lambda: "chain_broken" in (broken.node.link.last_error or ""),
                             what="409 chain_broken")  # fmt: skip
            assert "has seq 4, which the centre holds for another entry" in str(
                broken.node.link.last_error
            )
            assert broken.node.link.state == "degraded"
        finally:
            await broken.session.close()
            await runner.cleanup()
        ledger = await link.centre.ledger()
        assert len(ledger) == 5 and stuck["payment_id"] not in {r[0] for r in ledger}

        # --resync, through the command line: no --force needed, as nothing local is lost.
        cfg = tmp_path / "edge.toml"
        cfg.write_text(
            f'[node]\nid = "dam-1"\ndata_dir = "{settings.node_data_dir}"\n[http]\nport = {free_port()}\n'
            f'[ups]\nsource = "none"\n[centre]\nurl = "{settings.centre_url}"\n'
            f'secret_file = "{settings.centre_secret_file}"\n'
        )
        argv = ["restore", str(old.path), "--config", str(cfg), "--resync"]
        assert await asyncio.to_thread(cli.main, argv) == 0
        out = capsys.readouterr().out
        assert "resynced: 2 entries the centre acknowledged after this backup (seq 4..5" in out
        assert "the next entry is seq 6" in out
        db = settings.db_path
        assert rows(db, "SELECT seq, id, hash FROM outbox_entries ORDER BY seq") == live
        assert rows(db, "SELECT seq, state, verdict FROM outbox_entries WHERE seq > 3") == [
            (4, "delivered", "applied"), (5, "delivered", "applied")
        ]  # fmt: skip
        assert rows(db, "SELECT seq, receipt FROM payments WHERE seq > 3") == [
            (4, later[0]["receipt"]), (5, later[1]["receipt"])
        ]  # fmt: skip
        assert rows(db, "SELECT token, action, object FROM audit_log") == [
            ("cli", "restore.resync", "seq 4..5")
        ]
        with closing(sqlite3.connect(db)) as conn:
            assert outbox.verify_chain(outbox.iter_entries(conn))[0] == 5

        # The restored node's next payment is seq 6, accepted, chained; nothing counted twice.
        runner, rn = await again(link, tmp_path / "restored", settings.node_data_dir)
        try:
            new = await pay(rn, "after-restore", OTHER)
            await settled(rn)
            assert rn.node.link.last_error is None or "chain" not in rn.node.link.last_error
            entry = rn.node.db.read(lambda c: outbox.get(c, new["payment_id"]))
            assert entry is not None and (entry.seq, entry.verdict) == (6, "applied")
            # No receipt printed before is given again.
            assert new["receipt"] not in {p["receipt"] for p in later}
            # At the node too: due once less the three payments, before and after the pull.
            centre_version = (await link.centre.bill(OTHER))[1]

            async def due() -> tuple[int, int]:
                async with rn.session.get(f"{rn.url}/v1/bills/{OTHER}", headers=rn.headers()) as r:
                    doc = await r.json()
                    return doc["due"], doc["version"]

            assert (await due())[0] == BILLED - 3 * AMOUNT

            async def pulled() -> bool:
                return await due() == (BILLED - 3 * AMOUNT, centre_version)

            await eventually(pulled, what="the centre's version of the bill in the mirror")
        finally:
            await rn.session.close()
            await runner.cleanup()
        ledger = await link.centre.ledger()
        assert [r[2] for r in ledger] == [1, 2, 3, 4, 5, 6]
        assert len({r[0] for r in ledger}) == 6 and {r[5] for r in ledger} == {"applied"}
        # Bill 0 took three payments, bill 1 three: each counted once at the centre.
        assert (await link.centre.bill(BILL))[0] == 3 * AMOUNT
        assert (await link.centre.bill(OTHER))[0] == 3 * AMOUNT
    finally:
        await close()
