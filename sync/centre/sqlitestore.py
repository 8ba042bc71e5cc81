"""The centre's embedded store (the default): sync.centre.stores on one SQLite file.

Each operation is a write job on the one writer (group commit) or a read on the pool of
readers of sync.centre.store, running the modules' SQLite functions; nonces are checked in
memory (one process owns the file) and persisted with the batch they came with.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import date, tzinfo
from pathlib import Path
from typing import Any

from sync import chain, protocol
from sync.centre import (
    bills,
    clearing,
    credits,
    fines,
    heads,
    ledger,
    nonces,
    receipts,
    requests,
)
from sync.centre.bills import BillInput, OnlinePayment, UpsertResult
from sync.centre.config import Limits, NodeSettings
from sync.centre.credits import AccountCredit
from sync.centre.nonces import Nonce
from sync.centre.receipts import Check
from sync.centre.store import CentreStore, ChangeSeq, fetch_bill
from sync.fines import Rule

log = logging.getLogger(__name__)


class SqliteCentre(CentreStore):
    """sync.centre.stores.CentreDB on SQLite; `write`/`read` stay for SQLite-only tools."""

    kind = "sqlite"

    def __init__(self, path: Path, *, window_s: float = 300.0, readers: int = 2) -> None:
        super().__init__(path, readers=readers)
        self.window_s = window_s
        self._nonces = nonces.Nonces(window_s)
        self._nonces_loaded = False

    async def nonce_seen(self, seen: Nonce, now: float) -> bool:
        if not self._nonces_loaded:
            # Those a previous run saw within the window: a restart forgets none of them.
            rows = await self.read(lambda c: nonces.load_rows(c, now, self.window_s))
            self._nonces.load(rows, now)
            self._nonces_loaded = True
        return self._nonces.seen(seen.node, seen.nonce, seen.ts, now)

    def _persist(self, conn: sqlite3.Connection, seen: Nonce, now: float) -> None:
        nonces.persist(conn, seen.node, seen.nonce, seen.ts, now, self.window_s)

    async def remember_nonce(self, seen: Nonce, now: float) -> None:
        await self.write(lambda c: self._persist(c, seen, now))

    async def record_batch(
        self, node: str, governorate: str, entries: Sequence[protocol.WireEntry], now: float,
        limits: Limits, duplicate_codes: frozenset[str] = frozenset(), nonce: Nonce | None = None,
    ) -> protocol.Reply:  # fmt: skip
        def job(conn: sqlite3.Connection) -> protocol.Reply:
            if nonce is not None:
                self._persist(conn, nonce, now)  # one transaction with the batch
            return ledger.record_batch(
                conn, node, governorate, entries, now, limits, duplicate_codes
            )

        return await self.write(job)

    async def bill_count(self, governorate: str) -> int:
        return await self.read(lambda c: bills.count_of(c, governorate))

    async def fine_rules(self, governorate: str) -> list[Rule]:
        return await self.read(lambda c: fines.rules_of(c, governorate))

    async def node_day(self, node: str, day: date) -> list[protocol.LedgerEntry]:
        return await self.read(lambda c: clearing.node_day(c, node, day))

    async def remember_keys(self, nodes: Mapping[str, NodeSettings], now: float) -> None:
        await self.write(lambda c: receipts.remember_keys(c, nodes, now))

    async def chain_page(self, node: str, after: int, limit: int) -> chain.Page:
        return await self.read(lambda c: heads.chain_after(c, node, after, limit))

    async def upsert_bills(
        self, governorate: str, rows: Sequence[BillInput], now: float
    ) -> UpsertResult:
        return await self.write(lambda c: bills.upsert_bills(c, governorate, rows, now))

    async def pay_online(self, bill_id: str, amount: int, now: float) -> OnlinePayment:
        return await self.write(lambda c: bills.pay_online(c, bill_id, amount, now))

    async def accounts_without_cycle(
        self, governorate: str, cycle: str
    ) -> list[tuple[str, str, str, str]]:
        return await self.read(lambda c: bills.accounts_without_cycle(c, governorate, cycle))

    async def publish_fine_rule(
        self, governorate: str, effective: date, grace_days: int, fixed: int, percent_bp: int,
        cap: int | None, now: float,
    ) -> Rule:  # fmt: skip
        return await self.write(
            lambda c: fines.publish(
                c, governorate, effective, grace_days, fixed, percent_bp, cap, now
            )
        )

    async def set_request_status(
        self, request_id: str, status: str, note: str | None, now: float
    ) -> dict[str, Any]:
        def job(conn: sqlite3.Connection) -> dict[str, Any]:
            counter = ChangeSeq(conn)
            done = requests.set_status(conn, counter.next, request_id, status, note, now)
            counter.save()
            return done

        return await self.write(job)

    async def ledger_rows(self, node: str | None = None) -> list[tuple[Any, ...]]:
        return await self.read(lambda c: list(clearing.ledger_rows(c, node)))

    async def clearing(
        self, day: date, tz: tzinfo, governorate: str | None = None
    ) -> list[dict[str, Any]]:
        return await self.read(lambda c: clearing.clearing(c, day, tz, governorate))

    async def credit_accounts(self, governorate: str | None = None) -> list[AccountCredit]:
        return await self.read(lambda c: credits.accounts(c, governorate))

    async def verify_receipt(self, text: str, nodes: Mapping[str, NodeSettings]) -> Check:
        return await self.read(lambda c: receipts.verify(c, text, nodes))

    async def requests_list(self) -> list[tuple[Any, ...]]:
        return await self.read(requests.listing)

    async def bill(self, bill_id: str) -> dict[str, Any] | None:
        return await self.read(lambda c: fetch_bill(c, bill_id))

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self.write(lambda c: [tuple(r) for r in c.execute(sql, args).fetchall()])
