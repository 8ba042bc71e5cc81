"""A restore that cannot break the chain (DESIGN 5.20): what the centre holds against the
backup's head, and `--resync`, which records what the backup lacks and continues after it.

The centre's answer is signed and every entry it sends is chained again here (sync.chain),
so the node adopts nothing the centre did not record from it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import outbox
from edge import audit, config, db, fines, replication
from edge.ops import rebuild
from edge.ops.backup import BackupError
from sync import chain, protocol, replayer
from sync.errors import SyncError

AUDIT_TOKEN, AUDIT_ADDRESS = "cli", "local"  # the trail's names for `edge restore` itself


class ChainRefused(BackupError):
    """The backup and the centre's copy of the chain do not allow this restore; says why."""


@dataclass(frozen=True)
class Plan:
    """The backup's head against the centre's, and the entries the backup lacks."""

    backup_seq: int
    centre_seq: int
    centre_hash: str
    missing: Sequence[chain.Held]  # at the centre, after the backup's head, links verified

    def describe(self) -> str:
        if self.centre_seq > self.backup_seq:
            return (
                f"the centre holds {len(self.missing)} entries of this node after the backup's"
                f" last (seq {self.backup_seq + 1}..{self.centre_seq})"
            )
        if self.centre_seq < self.backup_seq:
            return (
                f"the backup holds {self.backup_seq - self.centre_seq} entries the centre has"
                f" not acknowledged (seq {self.centre_seq + 1}..{self.backup_seq}): the node"
                " replays them when it starts, and the centre counts each once"
            )
        return f"the backup and the centre agree: both end at seq {self.centre_seq}"


async def centre_view(settings: config.Settings, after: int) -> chain.View:
    """The centre's head and its entries after `after`, read over the node's own link."""
    secret = replication.read_secret(settings)
    async with replication.make_session(settings) as session:
        return await chain.read(
            session, settings.centre_url, settings.node_id, secret(), after, time.time()
        )


def judge(last_seq: int, last_hash: str, hash_at: Callable[[int], str | None],
          view: chain.View) -> Plan:  # fmt: skip
    """The plan for a backup ending at (`last_seq`, `last_hash`); ChainRefused when the two
    histories differ, which no restore of this backup can mend."""
    if view.head > last_seq:
        same = view.after_hash == last_hash
        where = last_seq
    else:
        same = hash_at(view.head) == view.head_hash if view.head else True
        where = view.head
    if not same:
        raise ChainRefused(
            f"refused: the backup and the centre hold different entries at seq {where}: the"
            " backup is of another history of this node (a database restored earlier and used"
            " since, or another node's). Neither --force nor --resync can join two histories,"
            " and nothing was changed. Restore an older backup (taken before that history"
            " split) with --resync, or ask the centre's operators what they hold"
            " (edge centre ledger --node NODE)"
        )
    return Plan(last_seq, view.head, view.head_hash, view.entries)


def refusal(plan: Plan) -> str:
    """Plain words for an operator: what happened, what would go wrong, what to do."""
    n, first, last = len(plan.missing), plan.backup_seq + 1, plan.centre_seq
    return (
        f"refused: {plan.describe()}. They were acknowledged after this backup was taken. Put"
        f" back as it is, the node would give seq {first} to its next payment, which the centre"
        f" holds for another entry: the centre would refuse that payment and every one after"
        f" it (409 chain_broken) and nothing would reach it again. Nothing was changed. Restore"
        f" a newer backup if there is one, or run the same command with --resync: the node then"
        f" records those {n} entries as acknowledged by the centre and continues at seq"
        f" {last + 1}"
    )


def unreachable(exc: SyncError) -> str:
    return (
        f"refused: the centre could not tell what it holds for this node ({exc}). Without"
        " that, a restored node may reuse seqs the centre holds and no payment would reach it"
        " again (409 chain_broken). Nothing was changed. Run it again once the link is up;"
        " only if the node must serve before that, add --offline-unsafe (deploy/README.md,"
        " troubleshooting: chain_broken)"
    )


@dataclass(frozen=True)
class Resynced:
    entries: int
    payments: int
    first: int
    last: int
    unread: list[int]  # seqs kept in the outbox whose own rows could not be made again


def apply(conn: sqlite3.Connection, plan: Plan, now: float) -> Resynced:
    """Record the entries the backup lacks as the centre acknowledged them, in one transaction
    on the restored copy: outbox entries with their hashes (the chain goes on after the
    centre's head), each kind's own rows (edge.ops.rebuild: receipt counters past every
    receipt printed), verdicts settled as the replayer settles them, and an audit row."""
    conn.execute("PRAGMA synchronous=FULL")
    db.migrate(conn)  # a backup of an older version: the tables the rows need
    conn.execute("BEGIN IMMEDIATE")
    try:
        outbox.adopt(conn, plan.missing, now)
        rows = rebuild.rows_of(conn, plan.missing)
        rebuild.insert(conn, rows)
        verdicts = [protocol.Verdict(e.seq, e.id, e.verdict, e.reason, e.version, e.credit,
                                     e.fine) for e in plan.missing]  # fmt: skip
        replayer.settle_job(verdicts, now, fines.keep)(conn)
        first, last = plan.backup_seq + 1, plan.centre_seq
        audit.insert(conn, [(now, AUDIT_TOKEN, AUDIT_ADDRESS, audit.RESTORE_RESYNC,
                             f"seq {first}..{last}", None, 200)])  # fmt: skip
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Resynced(len(plan.missing), len(rows.payments), first, last, rows.unread)


def apply_to(path: str, plan: Plan, now: float) -> Resynced:
    """`apply` on the database file at `path` (the restore's copy, before it is put in place)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return apply(conn, plan, now)
    finally:
        conn.close()
