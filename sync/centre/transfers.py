"""The centre's side of transfer files (PROTOCOL.md 11): `edge centre import outbox` records a
node's outbox file exactly as POST /v1/nodes/{node}/outbox would and answers with a signed
verdicts file; `edge centre export bills` writes a snapshot or the changes since a cursor.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

from sync import bill, protocol
from sync.centre import store
from sync.centre.config import CentreSettings, NodeSettings, load_settings
from sync.centre.connect import open_store
from sync.errors import CentreConfigError, ProtocolError, Refused, SyncError, TransferRefused
from sync.progress import Progress
from sync.transfer import Header, TransferFile, write_file

Command = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def _node(settings: CentreSettings, node: str, where: str) -> NodeSettings:
    own = settings.nodes.get(node)
    if own is None:
        raise TransferRefused(f"{where} is from node {node[:32]!r}, which this centre does not"
                              " know ([nodes.*] in its configuration); nothing was changed")  # fmt: skip
    return own


def _read_outbox(settings: CentreSettings, path: Path) -> tuple[Header, str, list[protocol.Batch]]:
    """The verified header, the file's SHA-256 and its batches: all decoded before anything
    is recorded, so a bad frame refuses the whole file."""
    with TransferFile(path) as f:
        h = f.header
        if h.kind != "outbox":
            raise TransferRefused(
                f"{path} is a {h.kind} file, not an outbox file; nothing was changed"
            )
        own = _node(settings, h.node, str(path))
        if h.governorate != own.governorate:
            raise TransferRefused(f"{path} says governorate {h.governorate} and node {h.node}"
                                  f" serves {own.governorate}; nothing was changed")  # fmt: skip
        secret = own.keys.get(h.key)
        if secret is None:
            raise TransferRefused(f"{path} is signed with key {h.key[:8]!r}, which is not a live"
                                  f" key of node {h.node}; nothing was changed")  # fmt: skip
        digest = f.verify(secret)
        try:
            batches = [protocol.decode_batch(frame) for frame in f.frames()]
        except ProtocolError as exc:
            raise TransferRefused(
                f"{path}: a bad frame: {exc.detail}; nothing was changed"
            ) from exc
    entries = [e for b in batches for e in b.entries]
    if any(b.node != h.node for b in batches) or len(entries) != h.count or (
        entries and (entries[0].seq, entries[-1].seq, entries[-1].hash)
        != (h.first_seq, h.last_seq, h.chain_head)
    ):  # fmt: skip
        raise TransferRefused(f"{path}: its frames do not match its header; nothing was changed")
    return h, digest, batches


async def import_outbox(settings: CentreSettings, path: Path, verdicts_out: Path) -> str:
    h, digest, batches = _read_outbox(settings, path)
    own = settings.nodes[h.node]
    limits, now = settings.limits(h.node), time.time()

    # One transaction for the whole file: refused (a chain gap, a code another node holds)
    # means nothing of it recorded. Entries the link brought meanwhile are known. The file's
    # batches are one chain, so they are recorded as one batch with the same verdicts (the
    # progress bar moves once, when that transaction commits).
    entries = [e for batch in batches for e in batch.entries]
    db = open_store(settings)
    await db.open()
    try:
        with Progress(f"import {path.name}", h.count, unit="entries") as progress:
            reply = await db.record_batch(h.node, own.governorate, entries, now, limits,
                                          own.duplicate_receipt_codes)  # fmt: skip
            progress.advance(len(entries))
    except Refused as exc:  # what the online endpoint answers 409 (chain) or 403 (codes)
        raise TransferRefused(
            f"{path}: the centre refuses it ({exc.code}): {exc.detail}; nothing was changed"
        ) from exc
    finally:
        await db.close()
    results, acked = reply.results, reply.acked_seq
    answer = Header("verdicts", h.node, own.governorate, "", time.time(), h.first_seq,
                    h.last_seq, h.chain_head, len(results), cursor=acked, source=digest)  # fmt: skip
    frames = (protocol.encode_reply(results[i : i + protocol.MAX_BATCH], acked)
              for i in range(0, len(results), protocol.MAX_BATCH))  # fmt: skip
    # Signed with the key the node signed with: during a rotation, the one it holds now.
    write_file(verdicts_out, own.keys[h.key], answer, frames)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    shown = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no entries"
    return (f"{path}: node {h.node}, {h.count} entries: {shown}; chain head {acked};"
            f" verdicts written to {verdicts_out}")  # fmt: skip


def _snapshot(cursor: sqlite3.Cursor, last: int, progress: Progress) -> Iterator[bytes]:
    while True:
        rows = cursor.fetchmany(protocol.MAX_CHANGES)
        more = len(rows) == protocol.MAX_CHANGES
        progress.advance(len(rows))
        yield protocol.encode_changes([dict(zip(bill.FIELDS, r, strict=True)) for r in rows],
                                      last, more)  # fmt: skip
        if not more:
            return


def _changes(conn: sqlite3.Connection, gov: str, since: int, progress: Progress) -> Iterator[bytes]:
    while True:
        page = store.read_changes(conn, gov, since, protocol.MAX_CHANGES)
        progress.advance(len(page.changes))
        yield protocol.encode_changes(page.changes, page.cursor, page.more)
        since = page.cursor
        if not page.more:
            return


def export_bills(settings: CentreSettings, node: str, gov: str | None, since: int | None,
                 to: Path) -> str:  # fmt: skip
    own = _node(settings, node, f"--node {node}")
    if gov is not None and gov != own.governorate:
        raise TransferRefused(f"node {node} serves {own.governorate}, not {gov}")
    gov = own.governorate
    if settings.database:
        raise TransferRefused("export bills reads the embedded SQLite centre; on PostgreSQL"
                              " a node without a link takes a snapshot through the API")  # fmt: skip
    uri = f"file:{quote(str(settings.db_path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise TransferRefused(f"cannot open the centre database {settings.db_path}: {exc}") from exc
    try:
        # The count, the cursor and the bills of one read transaction.
        if since is None:
            cursor, rows = store._begin_snapshot(conn, gov)
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM bills WHERE bill_id > ? AND bill_id < ? AND +governorate = ?",
                (f"{gov}-", f"{gov}.", gov),
            ).fetchone()
        else:
            conn.execute("BEGIN")
            count, top = conn.execute(
                "SELECT COUNT(*), MAX(change_seq) FROM bills WHERE governorate = ? AND change_seq > ?",
                (gov, since),
            ).fetchone()
            cursor = since if top is None else top
        progress = Progress(f"export {to.name}", count, unit="bills")
        header = Header("bills", node, gov, "", time.time(), count=count, since=since,
                        cursor=cursor)  # fmt: skip
        frames = (
            _snapshot(rows, cursor, progress)
            if since is None
            else _changes(conn, gov, since, progress)
        )
        with progress:
            digest = write_file(to, own.secret, header, frames)
        conn.execute("COMMIT")
    finally:
        conn.close()
    start = "a snapshot" if since is None else f"the changes since {since}"
    return (f"wrote {to}: {start} of {gov} for node {node}, {count} bills, cursor {cursor},"
            f" {progress.finish():.1f} s, sha256 {digest}")  # fmt: skip


def _run(args: argparse.Namespace, action: Callable[[CentreSettings], str]) -> int:
    try:
        settings = load_settings(args.config)
    except CentreConfigError as exc:
        for problem in exc.detail.splitlines():
            print(f"edge centre: configuration error: {problem}", file=sys.stderr)
        return 2
    try:
        print(action(settings))
    except TransferRefused as exc:
        print(f"edge centre: refused: {exc.detail}", file=sys.stderr)
        return 1
    except SyncError as exc:  # the database cannot be opened, and the like
        print(f"edge centre: {exc.detail}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:
        print(f"edge centre: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_import_outbox(args: argparse.Namespace) -> int:
    if args.verdicts_out is None:
        print("edge centre: import outbox needs --verdicts-out FILE", file=sys.stderr)
        return 2
    return _run(args, lambda s: asyncio.run(import_outbox(s, args.file, args.verdicts_out)))


def cmd_export(args: argparse.Namespace) -> int:
    return _run(args, lambda s: export_bills(s, args.node, args.governorate, args.since, args.to))


def _cursor(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text!r} is not a cursor (a whole number)")
    return int(text)


def register(command: Command) -> None:
    parser = command("export", "write a signed bills file for a node without a link", cmd_export)
    parser.add_argument("what", choices=["bills"], help="bills: the node's bills and fine rules")
    parser.add_argument("--node", required=True, help="the node the file is for (its key signs it)")
    parser.add_argument("--governorate", help="must be the node's (a check)")
    parser.add_argument("--since", type=_cursor, help="only the changes after this cursor")
    parser.add_argument("--to", type=Path, required=True, metavar="FILE", help="the file to write")
