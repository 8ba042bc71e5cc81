"""Reconciliation (issue 16): the node's entries of one local day against what the centre
recorded of them (sync.ledgerlink), and the daily run after local midnight.

A difference is `pending` (not delivered yet: expected), `missing` (delivered here, unknown
there: lost at the centre), `extra` (at the centre, unknown here: must never happen),
`amount` or `verdict` (recorded differently). Anything but `pending` fails the run.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

import outbox
from edge import actions
from sync import protocol
from sync.errors import SyncError
from sync.loop import Loop
from sync.timefmt import iso

log = logging.getLogger(__name__)
KINDS = ("pending", "missing", "extra", "amount", "verdict")


@dataclass(frozen=True)
class Ours:
    seq: int
    id: str
    kind: str
    amount: int | None
    state: str  # the outbox's: pending, delivered, rejected
    verdict: str | None  # the centre's first verdict as the node heard it


def ours(conn: sqlite3.Connection, day: date) -> list[Ours]:
    """The node's entries of `day`: the payments whose receipt is of that day and the voids
    and refunds of them (as the day report and the centre's ledger count them), each with
    its outbox state and the verdict the node heard (a duplicate's first one)."""
    verdict = "CASE WHEN o.verdict = 'duplicate' THEN o.reason ELSE o.verdict END"
    stamp = day.strftime("%Y%m%d")
    rows = conn.execute(
        f"SELECT o.seq, o.id, o.kind, p.amount, o.state, {verdict}"
        f" FROM payments p JOIN {outbox.TABLE} o ON o.seq = p.seq"
        " WHERE substr(p.receipt, -15, 8) = ?"
        f" UNION ALL SELECT o.seq, o.id, o.kind, p.amount, o.state, {verdict}"
        f" FROM {actions.TABLE} a JOIN payments p ON p.seq = a.target"
        f" JOIN {outbox.TABLE} o ON o.seq = a.seq"
        " WHERE substr(p.receipt, -15, 8) = ? AND a.kind != 'retarget' ORDER BY 1",
        (stamp, stamp),
    )
    return [Ours(*row) for row in rows]


@dataclass(frozen=True)
class Result:
    day: str
    at: float
    node_entries: int
    centre_entries: int
    differences: list[dict[str, Any]]
    error: str | None = None  # the run could not ask the centre

    @property
    def ok(self) -> bool:
        return self.error is None and all(d["what"] == "pending" for d in self.differences)

    def counts(self) -> dict[str, int]:
        return {k: sum(1 for d in self.differences if d["what"] == k) for k in KINDS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day, "at": iso(self.at), "ok": self.ok, "error": self.error,
            "node_entries": self.node_entries, "centre_entries": self.centre_entries,
            "counts": self.counts(), "differences": self.differences,
        }  # fmt: skip


def _diff(what: str, e: Ours | protocol.LedgerEntry, **more: Any) -> dict[str, Any]:
    return {"what": what, "id": e.id, "seq": e.seq, "kind": e.kind, **more}


def compare(day: str, mine: list[Ours], theirs: list[protocol.LedgerEntry], at: float) -> Result:
    centre = {e.id: e for e in theirs}
    found: list[dict[str, Any]] = []
    for e in mine:
        there = centre.pop(e.id, None)
        if e.state == "pending" and (there is None or there.amount == e.amount):
            found.append(_diff("pending", e, amount=e.amount))
            continue
        if there is None:
            found.append(_diff("missing", e, amount=e.amount, state=e.state, verdict=e.verdict))
        elif there.amount != e.amount:
            found.append(_diff("amount", e, node=e.amount, centre=there.amount))
        elif e.state != "pending" and (e.verdict or "rejected") != there.verdict:
            found.append(_diff("verdict", e, node=e.verdict or e.state, centre=there.verdict))
    for extra in centre.values():
        log.error("reconcile %s: entry %s is at the centre and not here", day, extra.id)
        found.append(_diff("extra", extra, amount=extra.amount, verdict=extra.verdict))
    return Result(day, at, len(mine), len(theirs), found)


Fetch = Callable[[str], Awaitable[list[protocol.LedgerEntry]]]
Read = Callable[[Callable[[sqlite3.Connection], list[Ours]]], Awaitable[list[Ours]]]


async def run(day: date, fetch: Fetch, read: Read, now: float) -> Result:
    theirs = await fetch(day.isoformat())
    mine = await read(lambda c: ours(c, day))
    return compare(day.isoformat(), mine, theirs, now)


@dataclass
class Daily(Loop[Result | None]):
    """Once a day, after local midnight and while the link is up, reconcile yesterday; the
    last result is what the dashboard and /v1/status show. `wake()` runs it now (admin)."""

    fetch: Fetch
    read: Read
    tz: tzinfo
    link_up: Callable[[], bool]
    clock: Callable[[], float] = time.time
    check_every_s: float = 60.0
    first_after_s: float = 60.0  # a node just started has its link to find first
    last: Result | None = None
    done_day: str | None = None

    def __post_init__(self) -> None:
        super().__init__("reconcile", logger=log)

    async def run(self) -> None:
        await self.pause(self.first_after_s)
        await super().run()

    def remember(self, result: Result) -> None:
        """An on-demand run's result (POST /v1/admin/reconcile) is the last one shown."""
        self.last = result

    async def step(self) -> Result | None:
        now = self.clock()
        yesterday = datetime.fromtimestamp(now, self.tz).date() - timedelta(days=1)
        day = yesterday
        if self.done_day == day.isoformat() or not self.link_up():
            return None
        try:
            result = await run(day, self.fetch, self.read, now)
        except SyncError as exc:
            result = Result(day.isoformat(), now, 0, 0, [], error=str(exc))
            self.last = result
            raise
        self.last = result
        self.done_day = day.isoformat()
        level = logging.INFO if result.ok else logging.ERROR
        log.log(level, "reconciled %s: %s", result.day, result.counts())
        return result

    def pace(self, result: Result | None) -> float:
        return self.check_every_s
