"""`edge backup`: verified copies of the live database (`edge restore` puts one back).

A backup is one SQLite backup-API step from a read-only connection (one read snapshot, so
it is consistent while payments are written), checked, then renamed into place. Copies and
checks run on an aiosqlite connection's thread, never on the event loop; the CLI asyncio.runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiosqlite

import outbox
from edge import config, mirror
from edge.db import DB_NAME
from edge.errors import EdgeError
from outbox import private, readers
from outbox.ids import node_of
from sync.progress import Progress

log = logging.getLogger(__name__)
STAMP = "%Y%m%dT%H%M%SZ"


class BackupError(EdgeError):
    """A backup or restore that cannot be done safely; the message says why and what to do."""


@dataclass(frozen=True)
class Facts:
    """What a database holds, after its integrity and its outbox chain were checked."""

    path: Path
    size: int
    last_seq: int
    last_hash: str
    pending: int
    bills: int
    node: str | None  # from the entry ids; None when the outbox is empty

    def describe(self) -> str:
        return (
            f"{self.size / 1e6:.1f} MB, {self.last_seq} outbox entries"
            f" ({self.pending} not yet at the centre), {self.bills} bills"
        )


def chown_like(path: Path, like: Path) -> None:
    # Files root makes in the node's data dir must stay the node's, or it cannot open them.
    if os.geteuid() == 0 and path.exists():
        st = like.stat()
        os.chown(path, st.st_uid, st.st_gid)


@contextlib.contextmanager
def _sides_owned(path: Path) -> Iterator[None]:
    """`path` must exist; side files (-wal, -shm) created meanwhile get the database's owner."""
    if not path.is_file():
        raise BackupError(f"{path} does not exist or is not a file")
    sides = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    existed = [side.exists() for side in sides]
    try:
        yield
    finally:
        for side, was in zip(sides, existed, strict=True):
            if not was:
                chown_like(side, path)


@contextlib.asynccontextmanager
async def read_only(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A read-only aiosqlite connection; WAL side files it had to create get the DB's owner."""
    with _sides_owned(path):
        async with readers.connect(f"file:{quote(str(path))}?mode=ro", uri=True) as conn:
            yield conn


def facts(conn: sqlite3.Connection, path: Path, *, check: str = "integrity_check") -> Facts:
    """Check the database (`integrity_check` or `quick_check`) and its whole outbox chain."""
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA {check}").fetchall()]
        if rows != ["ok"]:
            raise BackupError(f"{path} failed its {check}: {'; '.join(rows[:5])}")
        last_seq, last_hash = outbox.verify_chain(outbox.iter_entries(conn))
        stats = outbox.stats(conn)
        first = outbox.first_id(conn)
        bills = mirror.state(conn).bills
    except outbox.ChainBroken as exc:
        raise BackupError(f"{path}: the outbox hash chain does not hold: {exc}") from exc
    except sqlite3.Error as exc:
        raise BackupError(f"{path} is not a readable node database: {exc}") from exc
    return Facts(
        path,
        path.stat().st_size,
        last_seq,
        last_hash,
        stats.pending,
        bills,
        None if first is None else node_of(first),
    )


async def inspect(path: Path) -> Facts:
    """`facts` of the database at `path`, read on its own aiosqlite connection."""
    async with read_only(path) as conn:
        return await readers.run(conn, lambda c: facts(c, path))


def fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def target_path(dest: Path, node: str, now: float) -> Path:
    """A directory gets a dated file named after the node; anything else is the file itself."""
    if dest.is_dir():
        return dest / f"edge-{node}-{datetime.fromtimestamp(now, UTC).strftime(STAMP)}.db"
    return dest


STEP_PAGES = 1024  # pages per backup step: progress every few MB


def copy_pages(src: sqlite3.Connection, dest: sqlite3.Connection, label: str) -> None:
    """`src` into `dest` page by page, with progress, as one consistent snapshot.

    The steps all read inside one read transaction held on `src`, so in WAL mode they copy
    one snapshot while the node keeps committing (SQLite restarts a stepped backup only
    when it sees the source change, and a held snapshot does not).
    """
    with Progress(label, None, unit="pages") as progress:

        def step(status: int, remaining: int, total: int) -> None:
            if progress.total != total:
                progress.set_total(total)
            progress.advance(total - remaining - progress.done)

        src.execute("BEGIN")
        try:
            src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the snapshot starts
            src.backup(dest, pages=STEP_PAGES, progress=step)
        finally:
            src.execute("COMMIT")


def _snapshot(src: sqlite3.Connection, tmp: Path) -> Facts:
    """Copy `src` into `tmp`, check the copy, sync it: one job on the reader's thread."""
    private.create(tmp)  # a backup holds every subscriber's name: 0600 whatever the umask
    copy = sqlite3.connect(tmp, isolation_level=None)
    try:
        copy_pages(src, copy, f"backup {DB_NAME}")
        # One self-contained file: no -wal beside a backup that may travel on a stick.
        copy.execute("PRAGMA journal_mode=DELETE")
        started = time.monotonic()
        found = facts(copy, tmp)
        log.info("backup checked (integrity, outbox chain) in %.1f s", time.monotonic() - started)
    finally:
        copy.close()
    fsync_path(tmp)
    return found


async def backup(settings: config.Settings, dest: Path, *, now: float | None = None) -> Facts:
    """Copy the node's database to `dest` (file or directory), verify the copy, then publish."""
    final = target_path(dest, settings.node_id, time.time() if now is None else now)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        async with read_only(settings.db_path) as src:
            found = await readers.run(src, lambda c: _snapshot(c, tmp))
        os.replace(tmp, final)
        fsync_path(final.parent, directory=True)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {settings.db_path}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dataclasses.replace(found, path=final)


def prune(directory: Path, node: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups of `node` in `directory` (dated names sort)."""
    mine = sorted(directory.glob(f"edge-{node}-*.db"))
    doomed = mine[:-keep] if keep > 0 else mine
    for path in doomed:
        path.unlink()
    return doomed


def cmd_backup(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    dest = Path(args.dest)
    if args.dest.endswith("/"):
        dest.mkdir(parents=True, exist_ok=True)
    if args.keep is not None and not dest.is_dir():
        print("edge backup: --keep needs DEST to be a directory", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        done = asyncio.run(backup(settings, dest))
    except BackupError as exc:
        print(f"edge backup: FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        f"backup {done.path}: {done.describe()}; integrity ok, outbox chain ok"
        f" ({time.monotonic() - started:.1f} s)"
    )
    if args.keep is not None:
        for old in prune(done.path.parent, settings.node_id, args.keep):
            print(f"removed old backup {old}")
    return 0


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `backup` to the `edge` command."""
    parser = sub.add_parser(
        "backup",
        help="copy the node's database while it runs, verified",
        description="Copy the database (consistent while the node runs), check the copy's"
        " integrity and outbox chain, then publish it atomically. DEST is a file, or a"
        " directory (a trailing / creates it) that gets edge-<node>-<UTC time>.db.",
    )
    # A str: Path would drop a trailing '/'.
    parser.add_argument("dest", metavar="DEST", help="a file, or a directory (ending in /)")
    config.config_option(parser)
    parser.add_argument(
        "--keep",
        type=_count,
        metavar="N",
        help="then keep only the newest N backups of this node in DEST",
    )
    parser.set_defaults(func=cmd_backup)
