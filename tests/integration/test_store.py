"""The durable store on real files: open and migrate, WAL + FULL, group commit, disk full."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from helpers import unavailable

import outbox
from edge import mirror
from edge.db import DB_NAME, MIGRATIONS, Database
from edge.errors import DatabaseError


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    await database.open()
    yield database
    await database.close()


async def make_table(db: Database) -> None:
    await db.exclusive(lambda c: c.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, tag TEXT)"))


def rows(db: Database) -> list[int]:
    return [r[0] for r in db.read(lambda c: c.execute("SELECT n FROM t ORDER BY n").fetchall())]


# --- open and migrate -------------------------------------------------------------------


def recorded_migrations(c: sqlite3.Connection) -> list[tuple[str, float]]:
    return c.execute("SELECT name, applied_at FROM schema_migrations ORDER BY rowid").fetchall()


async def test_open_creates_the_database_and_records_each_migration_once(tmp_path: Path):
    data = tmp_path / "nested" / "data"
    first = Database(data)
    await first.open()
    recorded = first.read(recorded_migrations)
    await first.close()
    assert (data / DB_NAME).is_file()
    assert [name for name, _ in recorded] == [m.name for m in MIGRATIONS]

    again = Database(data)
    await again.open()
    try:
        assert again.read(recorded_migrations) == recorded  # not applied a second time
        assert await again.exclusive(lambda c: outbox.apply_migrations(c, MIGRATIONS)) == []
    finally:
        await again.close()


def files_held_open(under: Path) -> list[str]:
    """Files under `under` that this process still has open (Linux /proc)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)):
            held.append(target)
    return held


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    junk = b"these are not the bills you are looking for\n" * 200
    (data / DB_NAME).write_bytes(junk)
    database = Database(data)
    with pytest.raises(DatabaseError) as caught:
        await database.open()
    await database.close()
    assert str(data / DB_NAME) in str(caught.value)
    assert not database.is_open
    assert (data / DB_NAME).read_bytes() == junk
    assert files_held_open(data) == []


async def test_a_migration_that_fails_is_refused_with_the_path(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    with closing(sqlite3.connect(data / DB_NAME)) as foreign:
        foreign.execute("CREATE TABLE outbox_entries (something_else TEXT)")
        foreign.commit()
    database = Database(data)
    with pytest.raises(DatabaseError, match=r"outbox\.0001_entries") as caught:
        await database.open()
    await database.close()
    assert str(data / DB_NAME) in str(caught.value)
    assert files_held_open(data) == []
    with closing(sqlite3.connect(data / DB_NAME)) as check:
        columns = [row[1] for row in check.execute("PRAGMA table_info(outbox_entries)")]
        assert columns == ["something_else"]


async def test_a_data_dir_that_cannot_be_created_is_named(tmp_path: Path):
    (tmp_path / "taken").write_text("a file where the data directory should be")
    database = Database(tmp_path / "taken" / "data")
    with pytest.raises(DatabaseError, match=re.escape(str(tmp_path / "taken" / "data"))):
        await database.open()
    await database.close()


async def test_the_writer_runs_in_wal_mode_with_full_sync(db: Database):
    def pragmas(c: sqlite3.Connection) -> tuple[str, int]:
        return (
            c.execute("PRAGMA journal_mode").fetchone()[0],
            c.execute("PRAGMA synchronous").fetchone()[0],
        )

    assert await db.exclusive(pragmas) == ("wal", 2)  # 2 = FULL
    assert db.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"


async def test_read_slow_runs_off_the_loop_and_sees_each_committed_write(tmp_path: Path):
    database = Database(tmp_path / "data")
    await database.open()
    await make_table(database)
    loop_thread = threading.get_ident()

    def look(c: sqlite3.Connection) -> tuple[int, int, int]:
        count = c.execute("SELECT COUNT(*) FROM t").fetchone()[0]
        return threading.get_ident(), count, c.execute("PRAGMA query_only").fetchone()[0]

    try:
        threads = set()
        for n in range(3):
            await database.write(insert_job(n))
            thread, count, query_only = await database.read_slow(look)
            assert (count, query_only) == (n + 1, 1)  # the commit just answered is visible
            threads.add(thread)
        assert loop_thread not in threads and len(threads) == 1  # aiosqlite's one thread

        # While a slow read waits, the loop goes on serving point reads.
        release = threading.Event()

        def waiting(c: sqlite3.Connection) -> list[int]:
            release.wait(10)
            return [r[0] for r in c.execute("SELECT n FROM t ORDER BY n")]

        slow = asyncio.ensure_future(database.read_slow(waiting))
        await asyncio.sleep(0.05)
        assert not slow.done() and rows(database) == [0, 1, 2]
        release.set()
        assert await slow == [0, 1, 2]

        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await database.read_slow(lambda c: c.execute("INSERT INTO t (n) VALUES (9)"))
    finally:
        await database.close()
    # Its thread is gone with close(): aiosqlite's thread is no daemon and would hold the exit.
    assert not any(t.ident in threads for t in threading.enumerate())
    with pytest.raises(DatabaseError, match="not open"):
        await database.read_slow(look)


# --- group commit -----------------------------------------------------------------------


async def test_concurrent_writes_share_commits_and_each_is_answered_after_its_commit(db: Database):
    await make_table(db)
    commits_before = db.writer.commits

    async def insert(n: int) -> None:
        def job(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO t (n) VALUES (?)", (n,))
            return db.writer.commits  # commits done before this job's transaction

        commits_seen_by_job = await db.write(job)
        # Answered only once this job's transaction is committed: a later commit has been
        # counted, and another connection already sees the row.
        assert db.writer.commits > commits_seen_by_job
        assert db.read(lambda c: c.execute("SELECT 1 FROM t WHERE n = ?", (n,)).fetchone())

    await asyncio.gather(*(insert(n) for n in range(200)))
    commits = db.writer.commits - commits_before
    assert rows(db) == list(range(200))
    assert 1 <= commits <= 200 // 10, f"{commits} commits for 200 concurrent jobs"


async def hold_writer(database: Database) -> tuple[threading.Event, asyncio.Future[Any]]:
    """Keep the writer thread busy inside a job until released, so the next jobs queue up."""
    entered, release = threading.Event(), threading.Event()

    def block(c: sqlite3.Connection) -> bool:
        entered.set()
        return release.wait(10)

    held = asyncio.ensure_future(database.write(block))
    assert await asyncio.to_thread(entered.wait, 10), "the writer never ran the holding job"
    return release, held


def insert_job(n: int) -> Callable[[sqlite3.Connection], Any]:
    return lambda c: c.execute("INSERT INTO t (n) VALUES (?)", (n,))


async def queue_up(database: Database, jobs: list[Callable[[sqlite3.Connection], Any]]):
    """Submit the jobs and let each reach the writer's queue before returning."""
    futures = [asyncio.ensure_future(database.write(job)) for job in jobs]
    for _ in range(3):
        await asyncio.sleep(0)
    return futures


async def test_jobs_queued_during_a_commit_go_into_the_next_transaction_up_to_max_batch(
    tmp_path: Path,
):
    database = Database(tmp_path / "data", max_batch=64)
    await database.open()
    try:
        await make_table(database)
        before = database.writer.commits
        release, held = await hold_writer(database)
        queued = await queue_up(database, [insert_job(n) for n in range(200)])
        release.set()
        await asyncio.gather(held, *queued)
        assert database.writer.commits - before == 1 + 4  # the holding job's, then 64+64+64+8
        assert len(rows(database)) == 200
    finally:
        await database.close()


async def test_a_failing_job_does_not_fail_the_others_in_its_transaction(db: Database):
    await make_table(db)
    before = db.writer.commits

    def job(n: int) -> Callable[[sqlite3.Connection], int]:
        def run(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO t (n, tag) VALUES (?, 'ok')", (n,))
            if n == 57:
                raise ValueError("job 57 changed its mind")
            if n == 120:
                c.execute("INSERT INTO t (n) VALUES (1)")  # clashes with job 1's row
            return n

        return run

    release, held = await hold_writer(db)
    queued = await queue_up(db, [job(n) for n in range(1, 201)])
    release.set()
    await held
    results = await asyncio.gather(*queued, return_exceptions=True)

    assert isinstance(results[56], ValueError)
    assert isinstance(results[119], sqlite3.IntegrityError)
    assert [r for r in results if isinstance(r, BaseException)] == [results[56], results[119]]
    assert rows(db) == [n for n in range(1, 201) if n not in (57, 120)]
    assert db.writer.commits - before == 2  # the holding job's commit, then one for all 200


async def test_a_job_that_raises_leaves_nothing_written(db: Database, bill_factory, pay):
    bill = bill_factory()
    await db.write(lambda c: mirror.apply_changes(c, [bill], 1))
    tables = ("payments", "outbox_entries", "outbox_idempotency", "receipt_counters")

    def counts(c: sqlite3.Connection) -> list[int]:
        return [c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables]

    def pay_then_fail(c: sqlite3.Connection) -> None:
        pay(c, bill["bill_id"], 10_000, key="k1")
        assert counts(c) == [1, 1, 1, 1]  # everything was written inside the job...
        raise RuntimeError("the job failed after writing")

    with pytest.raises(RuntimeError, match="after writing"):
        await db.write(pay_then_fail)
    assert db.read(counts) == [0, 0, 0, 0]  # ...and none of it was kept
    reply = await db.write(lambda c: pay(c, bill["bill_id"], 10_000, key="k1"))
    assert json.loads(reply.body)["receipt"].endswith("-000001")
    assert db.read(lambda c: outbox.stats(c).last_seq) == 1


async def test_close_finishes_queued_jobs_then_refuses_new_ones(db: Database):
    await make_table(db)
    release, held = await hold_writer(db)
    queued = await queue_up(db, [insert_job(n) for n in range(50)])
    closing_task = asyncio.ensure_future(db.writer.close())
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(held, closing_task, *queued)
    with pytest.raises(outbox.WriterClosed):
        await db.write(lambda c: None)
    with closing(sqlite3.connect(db.path)) as check:
        assert check.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 50


# --- disk full --------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (needs root; CI runs as root)."""
    if os.geteuid() != 0:
        unavailable("mounting a 2 MiB tmpfs to fill the disk needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_a_full_disk_refuses_payments_whole_and_recovers_when_space_is_freed(
    tiny_disk: Path, bill_factory, pay
):
    database = Database(tiny_disk / "data")
    await database.open()
    try:
        bills = [bill_factory(account=str(n), amount=10**12) for n in range(1, 21)]
        await database.write(lambda c: mirror.apply_changes(c, bills, 1))
        acknowledged: set[str] = set()
        counter = iter(range(1_000_000))

        async def one(n: int) -> str:
            bill_id = bills[n % len(bills)]["bill_id"]
            reply = await database.write(
                lambda c: pay(c, bill_id, 100 + n, key=f"key-{n}-" + "x" * 200)
            )
            return str(json.loads(reply.body)["payment_id"])

        full: outbox.StorageError | None = None
        while full is None and len(acknowledged) < 200_000:
            results = await asyncio.gather(
                *(one(next(counter)) for _ in range(16)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, outbox.StorageError):
                    full = result
                elif isinstance(result, BaseException):
                    raise result
                else:
                    acknowledged.add(result)
        assert full is not None and full.full, "the 2 MiB disk never filled"
        print(f"disk full after {len(acknowledged)} acknowledged payments: {full}")
        assert acknowledged

        def audit(c: sqlite3.Connection) -> tuple[str, set[str], int]:
            return (
                c.execute("PRAGMA integrity_check").fetchone()[0],
                {
                    r[0]
                    for r in c.execute(
                        "SELECT o.id FROM payments p JOIN outbox_entries o ON o.seq = p.seq"
                    )
                },
                c.execute("SELECT COUNT(*) FROM outbox_entries").fetchone()[0],
            )

        integrity, stored, entries = await database.read_slow(audit)
        assert integrity == "ok"
        assert stored == acknowledged  # nothing lost, nothing half-written
        assert entries == len(stored)

        subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
        later = await one(next(counter))
        integrity, stored, entries = await database.read_slow(audit)
        assert integrity == "ok"
        assert stored == acknowledged | {later}
        assert entries == len(stored)
        chain = await database.read_slow(lambda c: outbox.verify_chain(outbox.iter_entries(c)))
        assert chain[0] == entries
    finally:
        await database.close()


async def test_equal_batchers_share_one_call_per_commit_and_refusals_reach_only_their_caller(
    db: Database,
):
    from dataclasses import dataclass

    calls: list[list[int]] = []

    @dataclass(frozen=True)
    class Double(outbox.Batcher[int, int]):
        tag: str

        def __call__(self, conn: sqlite3.Connection, items: list[int]) -> list[int | BaseException]:
            calls.append(list(items))
            conn.execute("SELECT 1")
            return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]

    # Held: the writer's thread is busy, so the next jobs queue up for one transaction.
    gate = threading.Event()
    blocker = asyncio.ensure_future(db.write(lambda c: gate.wait(5)))
    await asyncio.sleep(0.05)
    # A new (but equal) batcher per request, as a handler would build it.
    futures = [asyncio.ensure_future(db.write_batched(Double("a"), i)) for i in range(6)]
    await asyncio.sleep(0.05)
    gate.set()
    await blocker
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0,
        "odd 1",
        4,
        "odd 3",
        8,
        "odd 5",
    ]
    assert calls == [[0, 1, 2, 3, 4, 5]]
