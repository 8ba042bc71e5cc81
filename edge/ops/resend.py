"""`edge resend`: the centre behind the node (its own database put back older, so it answers
`409 chain_gap`): send it again what it acknowledged once and no longer holds (DESIGN 5.20).

The mirror image of `edge restore --resync`, and as careful: the centre's head is read with
the signed chain read (sync.chain), and only entries after it, whose chain up to it is the
centre's, are made pending again. The centre records entries by id: none counts twice.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from dataclasses import dataclass

import outbox
from edge import audit, config
from edge.ops import restore, resync
from edge.ops.backup import BackupError
from outbox import readers
from sync.errors import SyncError


@dataclass(frozen=True)
class Resent:
    centre_seq: int
    node_seq: int
    reopened: int


def _reopen(conn: sqlite3.Connection, after: int, last: int, now: float) -> int:
    """One transaction: the entries after `after` pending again, the figures their old
    verdicts left beside them dropped (the centre's new verdicts bring their own)."""
    try:  # inside restore.take's exclusive transaction: nothing else had the file meanwhile
        count = outbox.reopen(conn, after)
        for table in ("payment_credits", "payment_fines"):
            conn.execute(f"DELETE FROM {table} WHERE seq > ?", (after,))
        audit.insert(conn, [(now, resync.AUDIT_TOKEN, resync.AUDIT_ADDRESS, audit.OUTBOX_RESEND,
                             f"seq {after + 1}..{last}", None, 200)])  # fmt: skip
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return count


async def resend(settings: config.Settings) -> Resent:
    """Reopen what the centre lacks after its head; BackupError (nothing changed) otherwise."""
    if not settings.centre_url:
        raise BackupError("centre.url is not set: there is no centre to send anything to")
    if restore.node_running(settings):
        raise BackupError("the node seems to be running. Stop it first: systemctl stop edge")
    held = await restore.take(settings.db_path)
    try:
        mine = await readers.run(held, lambda c: outbox.verify_chain(outbox.iter_entries(c)))
        try:
            view = await resync.centre_view(settings, mine[0])
        except SyncError as exc:
            raise BackupError(
                f"the centre could not tell what it holds for this node ({exc}); nothing was"
                " changed: run it again once the link is up"
            ) from exc
        if view.head > mine[0]:
            raise BackupError(
                f"refused: the centre holds this node's chain to seq {view.head}, further than"
                f" this database ({mine[0]}): it is the node that is behind (409 chain_broken),"
                " not the centre. Nothing was changed; see deploy/README.md, troubleshooting:"
                " chain_broken (edge restore --resync)"
            )
        if view.head == mine[0]:
            return Resent(view.head, mine[0], 0)
        at = await readers.run(held, lambda c: outbox.hash_at(c, view.head))
        if view.head and at != view.head_hash:
            raise BackupError(
                f"refused: the centre holds other entries than this node up to seq {view.head}"
                " (two histories): nothing was changed. Ask the centre's operators"
            )
        done = await readers.run(held, lambda c: _reopen(c, view.head, mine[0], time.time()))
        return Resent(view.head, mine[0], done)
    finally:
        await held.close()


def cmd_resend(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    try:
        done = asyncio.run(resend(settings))
    except BackupError as exc:
        print(f"edge resend: {exc}", file=sys.stderr)
        return 1
    if not done.reopened:
        print(f"nothing to resend: the centre holds this node's chain to seq {done.centre_seq}")
        return 0
    print(
        f"the centre holds this node's chain only to seq {done.centre_seq}, the node to"
        f" {done.node_seq}: {done.reopened} entries are pending again and are sent when the"
        " node starts (systemctl start edge); the centre records each once"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `resend` to the `edge` command."""
    parser = sub.add_parser(
        "resend",
        help="send the centre again what it acknowledged and lost (409 chain_gap; node stopped)",
        description="Ask the centre (a signed read) where this node's chain ends there; when"
        " it is behind the node's (the centre's database was put back older: replay fails"
        " with 409 chain_gap), make the entries after it pending again, so the node sends"
        " them when it starts. Refuses while the node runs and when the two chains differ.",
    )
    config.config_option(parser)
    parser.set_defaults(func=cmd_resend)
