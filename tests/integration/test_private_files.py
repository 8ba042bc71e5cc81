"""Files holding names or secrets are 0600 under a permissive umask (outbox.private).

The test process sets umask 022, as a shell or cron job would, around the code under test:
the modules must not rely on edge.cli's umask 077.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from nodefixtures import make_bill, start_node

import outbox
from edge import tokens
from edge.db import Database
from edge.ops import backup
from outbox import private
from sync.centre.store import CentreStore


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sidecars(db: Path) -> list[Path]:
    return [db.with_name(db.name + s) for s in ("-wal", "-shm")]


async def test_database_wal_shm_tokens_and_backup_are_0600_under_umask_022(
    tmp_path: Path,
) -> None:
    with umask(0o022):
        runner, rn = await start_node(tmp_path, [make_bill("0100234567")])
        try:
            async with rn.session.post(
                f"{rn.url}/v1/payments",
                json={"bill_id": "DAM-2026-05-0100234567", "amount": 1000, "method": "cash",
                      "cashier": "rami"},
                headers=rn.headers(**{"Idempotency-Key": "perm-1"}),
            ) as resp:  # fmt: skip
                assert resp.status == 201
            db = rn.data_dir / "edge.db"
            assert [mode(p) for p in (db, *sidecars(db))] == [0o600] * 3
            assert mode(rn.data_dir) == 0o700
            assert mode(tmp_path / "tokens.toml") == 0o600
            (tmp_path / "backups").mkdir()
            facts = await backup.backup(rn.node.settings, tmp_path / "backups")
            assert facts.path.parent == tmp_path / "backups"
            assert mode(facts.path) == 0o600
        finally:
            await rn.session.close()
            await runner.cleanup()


async def test_looser_existing_files_are_tightened_at_open_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="outbox.private")
    tmp_path.chmod(0o700)
    db = tmp_path / "edge.db"
    with umask(0o022), closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (n INTEGER)")
        assert [mode(p) for p in (db, *sidecars(db))] == [0o644] * 3
        for _ in range(2):  # opened twice: tightened once, said once
            database = Database(tmp_path)
            await database.open()
            assert [mode(p) for p in (db, *sidecars(db))] == [0o600] * 3
            await database.close()
            for path in (db, *sidecars(db)):
                if path.exists():
                    path.chmod(0o644)
    said = [r.getMessage() for r in caplog.records if r.name == "outbox.private"]
    assert sorted(said) == sorted(
        f"{p} was mode 644, readable by others; now 600" for p in (db, *sidecars(db))
    )


async def test_centre_database_is_0600_under_umask_022(tmp_path: Path) -> None:
    path = tmp_path / "centre" / "centre.db"
    with umask(0o022):
        store = CentreStore(path)
        await store.open()
        try:
            await store.write(lambda c: c.execute("SELECT 1").fetchone())
            assert [mode(p) for p in (path, *sidecars(path))] == [0o600] * 3
        finally:
            await store.close()


def test_writer_connect_makes_a_new_file_0600(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with umask(0o000):  # the loosest umask: the mode comes from the code alone
        conn = outbox.writer.connect(str(path))
        try:
            conn.execute("CREATE TABLE t (n INTEGER)")
            assert [mode(p) for p in (path, *sidecars(path))] == [0o600] * 3
        finally:
            conn.close()


async def test_a_looser_tokens_file_is_tightened_when_loaded_or_added_to(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    tokens.add_token(path, "counter-1", ["inquire"])
    path.chmod(0o644)
    tokens.Tokens(path).load()
    assert mode(path) == 0o600
    path.chmod(0o640)
    tokens.add_token(path, "counter-2", ["inquire"])
    assert mode(path) == 0o600


def test_a_file_that_cannot_be_tightened_is_reported_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="outbox.private")
    assert private.tighten(tmp_path / "absent") is False  # nothing to do, nothing said
    assert not caplog.records
    # A file not ours (a read-only mount under systemd, another owner): /proc/self/status is
    # mode 444 and refuses chmod even to root, so it plays that part on any machine.
    assert private.tighten(Path("/proc/self/status")) is False
    assert any("cannot be tightened" in r.getMessage() for r in caplog.records)
