"""`edge backup` and `edge restore`: verified copies of the live database, put back safely.

A backup is one SQLite backup-API step from a read-only connection (one read snapshot, so
it is consistent while payments are written), checked, then renamed into place. Copies and
checks run on an aiosqlite connection's thread, never on the event loop; the CLI asyncio.runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import socket
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
from edge.errors import EdgeError
from outbox import private, readers
from outbox.ids import node_of

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


def _chown_like(path: Path, like: Path) -> None:
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
                _chown_like(side, path)


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


def _fsync(path: Path, *, directory: bool = False) -> None:
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


def _snapshot(src: sqlite3.Connection, tmp: Path) -> Facts:
    """Copy `src` into `tmp`, check the copy, sync it: one job on the reader's thread."""
    private.create(tmp)  # a backup holds every subscriber's name: 0600 whatever the umask
    copy = sqlite3.connect(tmp, isolation_level=None)
    try:
        # pages=-1: one step under one read transaction, i.e. one consistent snapshot;
        # in WAL mode the node keeps committing meanwhile.
        src.backup(copy, pages=-1)
        # One self-contained file: no -wal beside a backup that may travel on a stick.
        copy.execute("PRAGMA journal_mode=DELETE")
        found = facts(copy, tmp)
    finally:
        copy.close()
    _fsync(tmp)
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
        _fsync(final.parent, directory=True)
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


def node_running(settings: config.Settings) -> bool:
    """Does something answer on the node's HTTP port?"""
    host = settings.http_host
    probe = config.probe_host(host)
    try:
        with socket.create_connection((probe, settings.http_port), timeout=1.0):
            return True
    except OSError:
        return False


async def _take(path: Path) -> aiosqlite.Connection:
    """Exclusive use of the database, WAL folded in; fails while another connection is open."""
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=0)
    try:
        # Leaving WAL mode needs every other connection closed: this is the "node running"
        # test that also catches an idle node, and it leaves a single self-contained file.
        await conn.execute_fetchall("PRAGMA journal_mode=DELETE")
        await conn.execute_fetchall("BEGIN EXCLUSIVE")
    except BaseException as exc:
        await conn.close()  # its thread would otherwise keep the process alive
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc)
        ):
            raise BackupError(
                f"{path} is in use: the node (or another program) has it open."
                " Stop it first: systemctl stop edge"
            ) from exc
        raise
    return conn


def compare(current: Facts, wanted: Facts, wanted_hash_at_current_end: str | None) -> str | None:
    """Why replacing `current` with `wanted` would lose outbox entries (None: it would not).

    Chained hashes make one comparison enough: equal hashes at a seq mean equal histories.
    """
    if current.last_seq > wanted.last_seq:
        lost = current.last_seq - wanted.last_seq
        return (
            f"the database's outbox goes to seq {current.last_seq}, the backup's only to"
            f" {wanted.last_seq}: restoring would lose {lost} entries"
        )
    if current.last_seq and wanted_hash_at_current_end != current.last_hash:
        return (
            f"the database holds entries the backup lacks (the chains differ at seq"
            f" {current.last_seq}: another node's or another history)"
        )
    return None


async def _why_not(
    held: aiosqlite.Connection, target: Path, src: Path, wanted: Facts
) -> str | None:
    try:
        current = await readers.run(held, lambda c: facts(c, target, check="quick_check"))
    except BackupError as exc:
        return f"the current database cannot be checked ({exc})"
    async with read_only(src) as conn:
        theirs = await readers.run(conn, lambda c: outbox.hash_at(c, current.last_seq))
    return compare(current, wanted, theirs)


def _copy_into(src: sqlite3.Connection, tmp: Path) -> None:
    private.create(tmp)
    copy = sqlite3.connect(tmp, isolation_level=None)
    try:
        src.backup(copy, pages=-1)
    finally:
        copy.close()
    _fsync(tmp)


async def restore(
    settings: config.Settings, src: Path, *, force: bool = False
) -> tuple[Facts, Path | None]:
    """Put the verified backup `src` in place; return its facts and where the old DB went."""
    wanted = await inspect(src)
    if wanted.node not in (None, settings.node_id) and not force:
        raise BackupError(f"{src} is a backup of node {wanted.node}; this is {settings.node_id}")
    if node_running(settings) and not force:
        raise BackupError(
            f"something answers on port {settings.http_port}: the node seems to"
            " be running. Stop it first: systemctl stop edge"
        )
    target = settings.db_path
    settings.node_data_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
    held: aiosqlite.Connection | None = None
    replaced: Path | None = None
    try:
        if target.exists():
            try:
                held = await _take(target)
                why = await _why_not(held, target, src, wanted)
            except sqlite3.Error as exc:
                why = f"the current database cannot be opened ({exc})"
            if why and not force:
                raise BackupError(
                    f"refused: {why}. Keep it, or restore with --force"
                    " (the current database is then kept beside it)"
                )
        async with read_only(src) as conn:
            await readers.run(conn, lambda c: _copy_into(c, tmp))
        if target.exists():
            stamp = datetime.now(UTC).strftime(STAMP)
            replaced = target.with_name(f"{target.name}.replaced-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                side = target.with_name(target.name + suffix)
                if side.exists():
                    os.replace(side, replaced.with_name(replaced.name + suffix))
        os.replace(tmp, target)
        _chown_like(target, settings.node_data_dir)
        _fsync(settings.node_data_dir, directory=True)
    finally:
        if held is not None:
            await held.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return wanted, replaced


# --- command line ----------------------------------------------------------------------


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


def cmd_restore(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    try:
        wanted, replaced = asyncio.run(restore(settings, args.src, force=args.force))
    except BackupError as exc:
        print(f"edge restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {settings.db_path} from {args.src}: {wanted.describe()}")
    if replaced is not None:
        print(f"the previous database is kept as {replaced}")
    print(
        "start the node (systemctl start edge): pending entries are replayed, and the"
        " centre counts any it already has once (verdict duplicate)"
    )
    return 0


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `backup` and `restore` to the `edge` command."""
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
    parser = sub.add_parser(
        "restore",
        help="put a backup in place of the node's database (node stopped)",
        description="Replace the node's database with a verified backup. Refuses while the"
        " node runs, and (without --force) when the current outbox has entries the backup"
        " lacks. The replaced database is kept as edge.db.replaced-<UTC time>.",
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="the backup file to restore")
    config.config_option(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace even a newer, divergent or unreadable database (it is kept), or while"
        " something answers on the node's port (an open database still refuses)",
    )
    parser.set_defaults(func=cmd_restore)
