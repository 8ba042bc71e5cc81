"""A restore that cannot break the chain (issue 19): an old backup against a real centre that
holds more of the node's entries. Refused with the reason; the old way (the file put back
as it was) leaves every new payment at 409 chain_broken; with --resync a new payment is
accepted, the chain holds and nothing is counted twice."""

from __future__ import annotations

import asyncio
import math
import shutil
import sqlite3
import time
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, SECRET, Link, eventually, start_link
from fakecentre import FakeCentre
from helpers import free_port
from nodefixtures import RunningNode, start_node

import outbox
from edge import cli, mirror, tokens
from edge.ops import backup, restore
from edge.ops.backup import BackupError
from sync import chain

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


@pytest.mark.both_stores
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
            held = broken.node.db.read(lambda c: outbox.get(c, stuck["payment_id"]))
            assert held is not None and held.state == "pending"
            assert "has seq 4, which the centre holds for another entry" in str(held.last_error)
        finally:
            await broken.session.close()
            await runner.cleanup()
        ledger = await link.centre.ledger()
        assert len(ledger) == 5 and stuck["payment_id"] not in {r[0] for r in ledger}
        # That database is another history now: no flag joins it to the centre's.
        forked = await backup.backup(broken.node.settings, tmp_path / "forked.db")
        with pytest.raises(BackupError, match="hold different entries at seq 4"):
            await restore.restore(settings, forked.path, force=True, resync_ok=True)
        assert rows(settings.db_path, "SELECT seq, id, hash FROM outbox_entries") == live
        # Its recovery (deploy/README.md): the backup that was put back, with --resync; and
        # --force, as the payment taken on it is lost from the node (kept beside, to re-enter).
        with pytest.raises(BackupError, match="entries the backup lacks"):
            await restore.restore(broken.node.settings, old.path, resync_ok=True)
        mended = await restore.restore(broken.node.settings, old.path, resync_ok=True, force=True)
        assert mended.replaced is not None and stuck["payment_id"] in {
            r[0] for r in rows(mended.replaced, "SELECT id FROM outbox_entries")
        }
        assert rows(old_way / "edge.db", "SELECT seq, id, hash FROM outbox_entries") == live

        # --resync, through the command line: no --force needed, as nothing local is lost.
        cfg = tmp_path / "edge.toml"
        cfg.write_text(
            f'[node]\nid = "dam-1"\ndata_dir = "{settings.node_data_dir}"\n[http]\nport = {free_port()}\n'
            f'[ups]\nsource = "none"\n[centre]\nurl = "{settings.centre_url}"\n'
            f'secret_file = "{settings.centre_secret_file}"\n'
        )
        argv = ["restore", str(old.path), "--config", str(cfg)]
        assert await asyncio.to_thread(cli.main, argv) == 1  # refused, in the same words
        assert "run the same command with --resync" in capsys.readouterr().err
        assert await asyncio.to_thread(cli.main, [*argv, "--resync"]) == 0
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


@pytest.mark.both_stores
async def test_pages_of_the_centres_chain_are_read_and_verified_whole(tmp_path: Path) -> None:
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        await eventually(lambda: rn.node.db.read(mirror.state).bills > 0, what="the mirror")
        for i in range(5):
            await pay(rn, f"p-{i}")
        await settled(rn)
        settings = rn.node.settings
        mine = rn.node.db.read(lambda c: list(outbox.iter_entries(c)))
        secret = settings.centre_secret_file.read_text().strip().encode()
        async with aiohttp.ClientSession() as session:

            async def read(after: int, limit: int = chain.MAX_PAGE) -> chain.View:
                return await chain.read(session, settings.centre_url, "dam-1", secret, after,
                                        time.time(), limit=limit)  # fmt: skip

            paged = await read(1, limit=2)  # three pages: 2..3, 4..5, and none
            assert [(e.seq, e.id, e.hash) for e in paged.entries] == [
                (e.seq, e.id, e.hash) for e in mine[1:]
            ]
            assert (paged.head, paged.head_hash, paged.after_hash) == (5, mine[-1].hash,
                                                                       mine[0].hash)  # fmt: skip
            assert {e.verdict for e in paged.entries} == {"applied"}
            assert [e.payload for e in paged.entries] == [e.payload for e in mine[1:]]
            assert (await read(1)).entries == paged.entries
            assert (await read(5)).entries == [] and (await read(5)).after_hash == mine[-1].hash
            beyond = await read(9)  # a backup ahead of the centre
            assert (beyond.head, beyond.after_hash, beyond.entries) == (5, None, [])
            # A clock 20 minutes slow (after a power cut): corrected from the signed refusal.
            late = await chain.read(session, settings.centre_url, "dam-1", secret, 3,
                                    time.time() - 1200)  # fmt: skip
            assert [e.seq for e in late.entries] == [4, 5]
    finally:
        await close()


@pytest.mark.both_stores
async def test_a_backup_ahead_of_the_centre_replays_and_an_unreachable_centre_refuses(
    tmp_path: Path,
) -> None:
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        await eventually(lambda: rn.node.db.read(mirror.state).bills > 0, what="the mirror")
        for i in range(2):
            await pay(rn, f"sent-{i}")
        await settled(rn)
        link.proxy.mode = "refuse"  # the link drops: two more stay pending
        for i in range(2):
            await pay(rn, f"queued-{i}")
        settings = rn.node.settings
        old = await backup.backup(settings, tmp_path / "ahead.db")
        assert (old.last_seq, old.pending) == (4, 2)
        await link.stop_node()

        # The centre cannot be asked: refused, nothing written, unless said so explicitly.
        with pytest.raises(BackupError, match="the centre could not tell what it holds"):
            await restore.restore(settings, old.path, resync_ok=True)
        assert sorted(p.name for p in settings.node_data_dir.iterdir()) == ["edge.db"]
        done = await restore.restore(settings, old.path, force=True, offline_unsafe=True)
        assert done.plan is None and done.replaced is not None

        # The link is back: the backup is ahead, which is normal. Its pending entries replay.
        link.proxy.mode = "pass"
        done = await restore.restore(settings, old.path)
        assert done.plan is not None and done.resynced is None
        assert done.plan.describe().startswith("the backup holds 2 entries the centre has not")
        runner, rn = await again(link, tmp_path / "restored", settings.node_data_dir)
        try:
            await settled(rn)
        finally:
            await rn.session.close()
            await runner.cleanup()
        ledger = await link.centre.ledger()
        assert [r[2] for r in ledger] == [1, 2, 3, 4]
        assert (await link.centre.bill(BILL))[0] == 4 * AMOUNT
    finally:
        await close()


@pytest.mark.parametrize("mode", ["unsigned", "wrong", "replay", "foreign"])
async def test_an_answer_the_node_cannot_trust_changes_nothing(tmp_path: Path, mode: str) -> None:
    fake = FakeCentre(SECRET.encode(), ACCOUNTS[1])
    await fake.start()
    link, close = await start_link(tmp_path, centre_url=f"http://127.0.0.1:{fake.port}")
    fake.upstream = f"http://127.0.0.1:{link.proxy.port}"
    try:
        rn = link.node
        await eventually(lambda: rn.node.db.read(mirror.state).bills > 0, what="the mirror")
        await pay(rn, "one")
        await settled(rn)
        settings = rn.node.settings
        old = await backup.backup(settings, tmp_path / "old.db")
        await pay(rn, "two")
        await settled(rn)
        await link.stop_node()
        before = rows(settings.db_path, "SELECT seq, id, state FROM outbox_entries")
        fake.mode = mode
        # `replay` keeps the first genuine answer (the node is told 503) and replays it.
        for _ in range(2 if mode == "replay" else 1):
            with pytest.raises(BackupError) as refused:
                await restore.restore(settings, old.path, resync_ok=True)
            assert "the centre could not tell what it holds" in str(refused.value)
        if mode == "foreign":  # signed with the node's own key: the links give it away
            assert "the centre's chain does not hold" in str(refused.value)
        assert rows(settings.db_path, "SELECT seq, id, state FROM outbox_entries") == before
        fake.mode = "pass"
        done = await restore.restore(settings, old.path, resync_ok=True)
        assert done.resynced is not None and done.resynced.entries == 1
    finally:
        await close()
        await fake.close()


async def post(
    rn: RunningNode, path: str, who: str, body: Any, key: str, status: int = 201
) -> dict[str, Any]:
    headers = rn.headers(who, **{"Idempotency-Key": key})
    async with rn.session.post(rn.url + path, json=body, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        doc: dict[str, Any] = await resp.json()
        return doc


@pytest.mark.both_stores
async def test_every_kind_the_backup_lacks_is_made_again_from_its_payload(
    tmp_path: Path,
) -> None:
    (tmp_path / "node").mkdir()
    extra = {
        name: tokens.add_token(tmp_path / "node" / "tokens.toml", name, [scope])
        for name, scope in (("super-1", "supervise"), ("meter-1", "read_meter"),
                            ("desk-1", "request"))
    }  # fmt: skip
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        rn.tokens.update(extra)
        await eventually(lambda: rn.node.db.read(mirror.state).bills > 0, what="the mirror")
        first = await pay(rn, "one")
        await settled(rn)
        settings = rn.node.settings
        old = await backup.backup(settings, tmp_path / "old.db")
        # After the backup: a void of the payment it holds, a payment, a reading, a request.
        await post(rn, f"/v1/payments/{first['payment_id']}/void", "super-1",
                   {"reason": "مبلغ خاطئ"}, "void-1", 200)  # fmt: skip
        await pay(rn, "two", OTHER)
        reading = {"account": ACCOUNTS[0], "meter": f"EM-{ACCOUNTS[0][-6:]}", "reading": 500,
                   "read_at": date.today().isoformat(), "source": "counter"}  # fmt: skip
        await post(rn, "/v1/meter-readings", "meter-1", reading, "reading-1")
        complaint = {"kind": "complaint", "account": ACCOUNTS[0], "text": "الفاتورة عالية"}
        filed = await post(rn, "/v1/requests", "desk-1", complaint, "request-1")
        await settled(rn)
        tables = ("payments", "payment_actions", "meter_readings", "requests")

        def everything(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
            # Times to the millisecond: the payloads carry ISO times (cut, not rounded).
            return {
                t: [tuple(math.floor(v * 1000 + 1e-3) if isinstance(v, float) else v for v in row)
                    for row in conn.execute(f"SELECT * FROM {t} ORDER BY seq")]
                for t in tables
            }  # fmt: skip

        lost = rn.node.db.read(everything)
        await link.stop_node()

        done = await restore.restore(settings, old.path, resync_ok=True)
        assert done.resynced is not None and done.resynced.unread == []
        with closing(sqlite3.connect(settings.db_path)) as conn:
            assert everything(conn) == lost  # what each kind wrote, made again
        (tmp_path / "restored").mkdir()
        desk = tokens.add_token(tmp_path / "restored" / "tokens.toml", "desk-1", ["request"])
        runner, rn = await again(link, tmp_path / "restored", settings.node_data_dir)
        rn.tokens["desk-1"] = desk
        try:
            again_filed = await post(rn, "/v1/requests", "desk-1", complaint, "request-2")
            assert again_filed["number"] != filed["number"]  # no number given twice
            await settled(rn)
        finally:
            await rn.session.close()
            await runner.cleanup()
        assert [r[2] for r in await link.centre.ledger()] == [1, 2, 3, 4, 5, 6]
    finally:
        await close()


# SQLite only: it puts the centre's database file back to an older copy.
async def test_a_centre_put_back_older_gets_what_it_lost_again_with_edge_resend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        await eventually(lambda: rn.node.db.read(mirror.state).bills > 0, what="the mirror")
        for i in range(3):
            await pay(rn, f"kept-{i}")
        await settled(rn)
        # The centre's own backup, taken now; then two more payments reach it.
        await link.centre.stop()
        centre_db = link.centre.settings.db_path
        saved = {p.name: p.read_bytes() for p in centre_db.parent.glob(centre_db.name + "*")}
        await link.centre.start()
        for i in range(2):
            await pay(rn, f"lost-{i}", OTHER)
        await settled(rn)
        # The centre's database is put back: it lost seq 4 and 5, which the node holds delivered.
        await link.centre.stop()
        for p in centre_db.parent.glob(centre_db.name + "*"):
            p.unlink()
        for name, data in saved.items():
            (centre_db.parent / name).write_bytes(data)
        await link.centre.start()
        assert len(await link.centre.ledger()) == 3
        gap = await pay(rn, "after-loss")
        entry = await eventually(
            lambda: (
                (e := rn.node.db.read(lambda c: outbox.get(c, gap["payment_id"])))
                and "chain_gap" in (e.last_error or "")
                and e
            ),
            what="409 chain_gap",
        )
        assert "seq 6 but node dam-1's chain at the centre ends at seq 3" in str(entry.last_error)
        settings = rn.node.settings
        await link.stop_node()

        cfg = tmp_path / "edge.toml"
        cfg.write_text(
            f'[node]\nid = "dam-1"\ndata_dir = "{settings.node_data_dir}"\n'
            f'[http]\nport = {free_port()}\n[ups]\nsource = "none"\n'
            f'[centre]\nurl = "{settings.centre_url}"\nsecret_file = "{settings.centre_secret_file}"\n'
        )
        assert await asyncio.to_thread(cli.main, ["resend", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "only to seq 3, the node to 6: 2 entries are pending again" in out
        assert rows(settings.db_path, "SELECT action, object FROM audit_log") == [
            ("outbox.resend", "seq 4..6")
        ]
        runner, rn = await again(link, tmp_path / "restarted", settings.node_data_dir)
        try:
            await settled(rn)
        finally:
            await rn.session.close()
            await runner.cleanup()
        ledger = await link.centre.ledger()
        assert [r[2] for r in ledger] == [1, 2, 3, 4, 5, 6] and len({r[0] for r in ledger}) == 6
        assert (await link.centre.bill(BILL))[0] == 4 * AMOUNT
        assert (await link.centre.bill(OTHER))[0] == 2 * AMOUNT
        # Once more: nothing left to send.
        assert await asyncio.to_thread(cli.main, ["resend", "--config", str(cfg)]) == 0
        assert "nothing to resend" in capsys.readouterr().out
    finally:
        await close()
