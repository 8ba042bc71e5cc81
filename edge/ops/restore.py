"""`edge restore`: put a verified backup in place of the node's database, safely.

It refuses to lose local entries (unless --force) and to break the chain the centre holds
for the node (DESIGN 5.20): the centre is asked first, and when it holds entries after the
backup's last one the restore is refused, or with --resync continues after them.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

import outbox
from edge import config
from edge.db import DB_NAME
from edge.ops import backup, resync
from edge.ops.backup import BackupError, Facts, read_only
from outbox import private, readers
from sync.errors import SyncError


def node_running(settings: config.Settings) -> bool:
    """Does something answer on the node's HTTP port?"""
    host = settings.http_host
    probe = config.probe_host(host)
    try:
        with socket.create_connection((probe, settings.http_port), timeout=1.0):
            return True
    except OSError:
        return False


async def take(path: Path) -> aiosqlite.Connection:
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


def compare(current: Facts, last_seq: int, hash_at_current_end: str | None) -> str | None:
    """Why replacing `current` with a restore that ends at `last_seq` (the backup's, or the
    centre's after a resync) would lose outbox entries (None: it would not).

    Chained hashes make one comparison enough: equal hashes at a seq mean equal histories.
    """
    if current.last_seq > last_seq:
        lost = current.last_seq - last_seq
        return (
            f"the database's outbox goes to seq {current.last_seq}, the backup's only to"
            f" {last_seq}: restoring would lose {lost} entries"
        )
    if current.last_seq and hash_at_current_end != current.last_hash:
        return (
            f"the database holds entries the backup lacks (the chains differ at seq"
            f" {current.last_seq}: another node's or another history)"
        )
    return None


async def _why_not(
    held: aiosqlite.Connection, target: Path, src: Path, wanted: Facts, plan: resync.Plan | None
) -> str | None:
    try:
        current = await readers.run(held, lambda c: backup.facts(c, target, check="quick_check"))
    except BackupError as exc:
        return f"the current database cannot be checked ({exc})"
    adopted = {e.seq: e.hash for e in plan.missing} if plan is not None else {}
    if current.last_seq in adopted:
        theirs: str | None = adopted[current.last_seq]
    else:
        async with read_only(src) as conn:
            theirs = await readers.run(conn, lambda c: outbox.hash_at(c, current.last_seq))
    return compare(current, max([wanted.last_seq, *adopted]), theirs)


def _copy_into(src: sqlite3.Connection, tmp: Path) -> None:
    private.create(tmp)
    copy = sqlite3.connect(tmp, isolation_level=None)
    try:
        backup.copy_pages(src, copy, f"restore {DB_NAME}")  # with progress
    finally:
        copy.close()
    backup.fsync_path(tmp)


@dataclass(frozen=True)
class Restored:
    """What a restore put in place: the backup's facts, where the old database went, what
    the centre holds against it (None: no centre, or not asked) and what a resync recorded."""

    facts: Facts
    replaced: Path | None
    plan: resync.Plan | None = None
    resynced: resync.Resynced | None = None


async def _against_centre(
    settings: config.Settings,
    src: Path,
    wanted: Facts,
    *,
    resync_ok: bool,
    offline_unsafe: bool,
) -> resync.Plan | None:
    """The centre's head against the backup's (DESIGN 5.20); BackupError when it forbids this."""
    if not settings.centre_url:
        return None  # no centre: no chain anywhere else to break
    try:
        view = await resync.centre_view(settings, wanted.last_seq)
    except SyncError as exc:
        if offline_unsafe:
            return None
        raise BackupError(resync.unreachable(exc)) from exc
    async with read_only(src) as conn:
        hashes = await readers.run(
            conn, lambda c: {view.head: outbox.hash_at(c, view.head)} if view.head else {}
        )
    plan = resync.judge(wanted.last_seq, wanted.last_hash, hashes.get, view)
    if plan.missing and not resync_ok:
        raise BackupError(resync.refusal(plan))
    return plan


async def _resync(tmp: Path, plan: resync.Plan, target: Path) -> tuple[resync.Resynced, Facts]:
    """Record what the backup lacks in the copy `tmp`, then check the copy ends where the
    centre's chain does; BackupError (nothing put in place) otherwise."""
    try:
        done = await asyncio.to_thread(resync.apply_to, str(tmp), plan, time.time())
        backup.fsync_path(tmp)
        found = await backup.inspect(tmp)
    except (sqlite3.Error, outbox.OutboxError) as exc:
        raise BackupError(f"the resync failed, nothing was changed: {exc}") from exc
    if (found.last_seq, found.last_hash) != (plan.centre_seq, plan.centre_hash):
        raise BackupError(
            f"the resync did not end at the centre's head (seq {found.last_seq}, not"
            f" {plan.centre_seq}); nothing was changed"
        )
    return done, dataclasses.replace(found, path=target)


async def restore(
    settings: config.Settings,
    src: Path,
    *,
    force: bool = False,
    resync_ok: bool = False,
    offline_unsafe: bool = False,
) -> Restored:
    """Put the verified backup `src` in place. `force` overrides the local checks only; a
    centre that holds entries after the backup's head refuses it unless `resync_ok`."""
    wanted = await backup.inspect(src)
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
    resynced: resync.Resynced | None = None
    why: str | None = None
    try:
        if target.exists():
            try:
                held = await take(target)
            except sqlite3.Error as exc:
                why = f"the current database cannot be opened ({exc})"
        plan = await _against_centre(
            settings, src, wanted, resync_ok=resync_ok, offline_unsafe=offline_unsafe
        )
        if held is not None:
            try:
                why = await _why_not(held, target, src, wanted, plan)
            except sqlite3.Error as exc:
                why = f"the current database cannot be opened ({exc})"
        if target.exists() and why and not force:
            raise BackupError(
                f"refused: {why}. Keep it, or restore with --force"
                " (the current database is then kept beside it)"
            )
        async with read_only(src) as conn:
            await readers.run(conn, lambda c: _copy_into(c, tmp))
        if plan is not None and plan.missing:
            resynced, wanted = await _resync(tmp, plan, target)
        if target.exists():
            stamp = datetime.now(UTC).strftime(backup.STAMP)
            replaced = target.with_name(f"{target.name}.replaced-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                side = target.with_name(target.name + suffix)
                if side.exists():
                    os.replace(side, replaced.with_name(replaced.name + suffix))
        os.replace(tmp, target)
        backup.chown_like(target, settings.node_data_dir)
        backup.fsync_path(settings.node_data_dir, directory=True)
    finally:
        if held is not None:
            await held.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return Restored(wanted, replaced, plan, resynced)


# --- command line ----------------------------------------------------------------------


def cmd_restore(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    try:
        done = asyncio.run(
            restore(
                settings, args.src, force=args.force, resync_ok=args.resync,
                offline_unsafe=args.offline_unsafe,
            )
        )  # fmt: skip
    except BackupError as exc:
        print(f"edge restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {settings.db_path} from {args.src}: {done.facts.describe()}")
    if done.replaced is not None:
        print(f"the previous database is kept as {done.replaced}")
    if done.resynced is not None:
        r = done.resynced
        print(
            f"resynced: {r.entries} entries the centre acknowledged after this backup (seq"
            f" {r.first}..{r.last}, {r.payments} of them payments) are recorded as the centre"
            f" holds them; the next entry is seq {r.last + 1}. The audit trail has it"
            " (restore.resync)"
        )
        if r.unread:
            print(
                f"WARNING: the entries at seq {', '.join(map(str, r.unread))} are in the outbox,"
                " but their payloads could not be read back into their own tables"
            )
    elif done.plan is not None:
        print(done.plan.describe())
    elif settings.centre_url:
        print(
            "WARNING: the centre was not asked (--offline-unsafe). If it holds entries this"
            " backup lacks, replay stops with 409 chain_broken: see deploy/README.md"
        )
    print(
        "start the node (systemctl start edge): pending entries are replayed, and the"
        " centre counts any it already has once (verdict duplicate)"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `restore` to the `edge` command."""
    parser = sub.add_parser(
        "restore",
        help="put a backup in place of the node's database (node stopped)",
        description="Replace the node's database with a verified backup. Refuses while the"
        " node runs, and (without --force) when the current outbox has entries the backup"
        " lacks. Asks the centre (a signed read) what it holds for this node first: when it"
        " holds entries after the backup's last one, refuses (--resync records them and goes"
        " on after them). The replaced database is kept as edge.db.replaced-<UTC time>.",
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="the backup file to put back")
    config.config_option(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace even a newer, divergent or unreadable database (it is kept), or while"
        " something answers on the node's port (an open database still refuses); never skips"
        " the centre's check",
    )
    parser.add_argument(
        "--resync",
        action="store_true",
        help="when the centre holds entries the backup lacks, record them as the centre"
        " acknowledged them and continue the sequence after the centre's last",
    )
    parser.add_argument(
        "--offline-unsafe",
        action="store_true",
        help="restore even when the centre cannot be asked; if it holds entries the backup"
        " lacks, replay then stops with chain_broken",
    )
    parser.set_defaults(func=cmd_restore)
