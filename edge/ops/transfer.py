"""`edge export outbox` and `edge import verdicts|bills`: a node's transfer files (PROTOCOL.md
11), for a governorate without a link. Each may run while the node serves (its writes go
through edge.db's writer, the reads in one read transaction); each prints what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import outbox
from edge import config, mirror, transfers
from edge.db import Database
from edge.errors import ConfigError
from sync import protocol, signing
from sync.errors import ProtocolError, SyncError, TransferRefused
from sync.progress import Progress
from sync.transfer import Header, TransferFile, write_file


def _secret(settings: config.Settings) -> bytes:
    try:
        return signing.read_secret(settings.centre_secret_file)
    except SyncError as exc:
        raise ConfigError(f"centre.secret_file: {exc.detail}") from exc


def _open(settings: config.Settings) -> Database:
    return Database(settings.node_data_dir, synchronous=settings.storage_synchronous)


def _check(settings: config.Settings, f: TransferFile, kind: str) -> str:
    """Refuse a file of another kind, node or governorate; verify it; return its SHA-256."""
    h = f.header
    if h.kind != kind:
        raise TransferRefused(
            f"{f.path} is a {h.kind} file, not a {kind} file; nothing was changed"
        )
    if h.node != settings.node_id:
        raise TransferRefused(f"{f.path} is for node {h.node}, and this is node"
                              f" {settings.node_id}; nothing was changed")  # fmt: skip
    if h.governorate != settings.node_governorate:
        raise TransferRefused(f"{f.path} is for governorate {h.governorate}, and this node"
                              f" serves {settings.node_governorate}; nothing was changed")  # fmt: skip
    return f.verify(_secret(settings))


async def export_outbox(settings: config.Settings, to: Path) -> int:
    secret, node = _secret(settings), settings.node_id
    db = _open(settings)
    await db.open()
    try:

        def run(conn: sqlite3.Connection) -> transfers.Transfer | None:
            conn.execute("BEGIN")  # one snapshot: the header and the frames agree
            try:
                count, first, last, head = outbox.pending_range(conn)
                if not count:
                    return None
                progress = Progress(f"export {to.name}", count, unit="entries")
                header = Header("outbox", node, settings.node_governorate, "", time.time(),
                                first, last, head, count)  # fmt: skip

                def frames() -> Iterator[bytes]:
                    after = 0
                    while batch := outbox.claim(conn, protocol.MAX_BATCH, after_seq=after):
                        progress.advance(len(batch))
                        yield protocol.encode_batch(node, batch)
                        after = batch[-1].seq

                with progress:
                    digest = write_file(to, secret, header, frames())
            finally:
                conn.execute("COMMIT")
            return transfers.Transfer(header.created_at, "export", "outbox", count, 0, first,
                                      last, None, digest)  # fmt: skip

        done = await db.read_slow(run)
        if done is None:
            print("nothing to export: the centre has acknowledged every entry")
            return 0
        await db.write(lambda c: transfers.record(c, done))
    finally:
        await db.close()
    print(f"exported {done.entries} unacknowledged entries (seq {done.first_seq}..{done.last_seq})"
          f" to {to}, sha256 {done.digest}")  # fmt: skip
    return 0


async def import_verdicts(settings: config.Settings, path: Path) -> int:
    with TransferFile(path) as f:
        digest = _check(settings, f, "verdicts")
        try:
            verdicts = [v for frame in f.frames() for v in protocol.decode_reply(frame).results]
        except ProtocolError as exc:
            raise TransferRefused(
                f"{path}: a bad frame: {exc.detail}; nothing was changed"
            ) from exc
        header = f.header
    if len(verdicts) != header.count:
        raise TransferRefused(f"{path}: its frames do not match its header; nothing was changed")
    db = _open(settings)
    await db.open()
    try:
        now = time.time()

        def job(conn: sqlite3.Connection) -> tuple[int, int]:
            matched, changed = transfers.settle_verdicts(conn, verdicts, now)
            if changed:
                transfers.record(conn, transfers.Transfer(
                    now, "import", "verdicts", len(verdicts), changed, header.first_seq,
                    header.last_seq, None, digest,
                ))  # fmt: skip
            return matched, changed

        matched, changed = await db.write(job)
    finally:
        await db.close()
    if not changed:
        print(f"{path}: all {matched} verdicts were already settled: nothing changed")
        return 0
    print(f"settled {changed} entries from {path} ({matched - changed} already settled,"
          f" {len(verdicts) - matched} not of this outbox)")  # fmt: skip
    return 0


async def import_bills(settings: config.Settings, path: Path) -> int:
    with TransferFile(path) as f:
        digest = _check(settings, f, "bills")
        h = f.header
        db = _open(settings)
        await db.open()
        try:
            held = db.read(mirror.state).cursor
            if held is not None and h.cursor <= held:
                raise TransferRefused(
                    f"{path} brings the mirror to cursor {h.cursor}, and it is at {held}"
                    " already: an old file; nothing was changed"
                )
            if h.since is not None and h.since > (held or 0):
                raise TransferRefused(
                    f"{path} holds the changes since cursor {h.since}, and the mirror is at"
                    f" {'empty' if held is None else held}: ask the centre for `--since {held or 0}` (an empty mirror needs"
                    " a snapshot); nothing was changed"
                )
            with Progress(f"import {path.name}", h.count, unit="bills") as progress:
                stored = await _apply(db, f, h, progress)
            now = time.time()
            await db.write(lambda c: transfers.record(c, transfers.Transfer(
                now, "import", "bills", h.count, stored, 0, 0, h.cursor, digest)))  # fmt: skip
        finally:
            await db.close()
    print(f"applied {path}: {h.count} bills, {stored} stored (new or a higher version),"
          f" cursor {h.cursor}")  # fmt: skip
    return 0


async def _apply(db: Database, f: TransferFile, h: Header, progress: Progress) -> int:
    """Frames to the writer, each decoded and applied in its write job while the next is read
    and decrypted here: one Python thread decodes, so the two never contend for the GIL."""
    stored, seen = 0, 0
    in_flight: asyncio.Task[tuple[int, int]] | None = None
    try:
        for frame in f.frames():
            if in_flight is not None:
                done = await in_flight
                stored, seen = stored + done[0], seen + done[1]
                progress.advance(done[1])
            in_flight = asyncio.create_task(db.write(_frame_job(frame, h)))
        if in_flight is not None:
            done = await in_flight
            stored, seen, in_flight = stored + done[0], seen + done[1], None
            progress.advance(done[1])
    except ProtocolError as exc:
        raise TransferRefused(f"{f.path}: a bad frame: {exc.detail}") from exc
    finally:
        if in_flight is not None:
            in_flight.cancel()
    if seen != h.count:
        raise TransferRefused(f"{f.path} announced {h.count} bills and carried {seen}")
    return stored


def _frame_job(frame: bytes, h: Header) -> Callable[[sqlite3.Connection], tuple[int, int]]:
    now = time.time()

    def job(conn: sqlite3.Connection) -> tuple[int, int]:
        page = protocol.decode_changes(frame, h.governorate)
        # A snapshot's cursor is stored with its last page only, a feed's with each.
        cursor = page.cursor if h.since is not None or not page.more else None
        return transfers.apply_bills(conn, page.changes, cursor, now), len(page.changes)

    return job


def _command(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    if args.what == "outbox":
        job: Coroutine[Any, Any, int] = export_outbox(settings, args.to)
    elif args.what == "verdicts":
        job = import_verdicts(settings, args.file)
    else:
        job = import_bills(settings, args.file)
    try:
        return asyncio.run(job)
    except TransferRefused as exc:
        print(f"edge: refused: {exc.detail}", file=sys.stderr)
        return 1
    except (OSError, SyncError, outbox.OutboxError) as exc:  # e.g. the disk is full
        print(f"edge: {exc}", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`edge export outbox` and `edge import verdicts|bills` (PROTOCOL.md 11)."""
    export = sub.add_parser("export", help="write a signed transfer file for the centre")
    export.add_argument("what", choices=["outbox"], help="outbox: every unacknowledged entry")
    config.config_option(export)
    export.add_argument("--to", type=Path, required=True, metavar="FILE", help="the file to write")
    export.set_defaults(func=_command)
    imp = sub.add_parser("import", help="apply a signed transfer file from the centre")
    imp.add_argument(
        "what", choices=["verdicts", "bills"], help="verdicts or bills, as the centre wrote"
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the centre's signed file")
    config.config_option(imp)
    imp.set_defaults(func=_command)
