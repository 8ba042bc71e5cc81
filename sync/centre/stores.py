"""The centre's store interface: every operation the centre's HTTP API, its commands and its
reports need, with two implementations chosen by `[centre] database` (DESIGN 6.5).

Empty (the default): SQLite in `data_dir` (sync.centre.sqlitestore, embedded, one process).
`postgresql://...`: PostgreSQL through asyncpg (sync.centre.pgstore), any number of centre
processes on one database. The decisions (chain check, verdicts, fines) are written once in
sync.centre.verdicts and the modules it uses; a store only reads and writes. Open one with
sync.centre.connect.open_store.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import date, tzinfo
from typing import Any, Protocol

from sync import chain, protocol
from sync.centre.bills import BillInput, OnlinePayment, UpsertResult
from sync.centre.config import Limits, NodeSettings
from sync.centre.credits import AccountCredit
from sync.centre.nonces import Nonce
from sync.centre.receipts import Check
from sync.centre.store import SNAPSHOT_PAGE
from sync.fines import Rule


class CentreDB(Protocol):
    """What the centre asks of its database. Every method is one transaction."""

    kind: str  # "sqlite" or "postgresql"

    async def open(self) -> None:
        """Connect and apply the migrations not yet recorded; SyncError if it cannot."""

    async def close(self) -> None: ...

    # The link (sync.centre.app).
    async def nonce_seen(self, seen: Nonce, now: float) -> bool:
        """True for a replayed nonce (refuse the request), else remembered; NoncesFull when a
        node sent more requests in one window than the cap."""

    async def remember_nonce(self, seen: Nonce, now: float) -> None:
        """Make a read's nonce survive a restart (a batch's is kept with the batch)."""

    async def record_batch(
        self, node: str, governorate: str, entries: Sequence[protocol.WireEntry], now: float,
        limits: Limits, duplicate_codes: frozenset[str] = frozenset(), nonce: Nonce | None = None,
    ) -> protocol.Reply:  # fmt: skip
        """Record one batch in one transaction: Refused (nothing written) for a broken chain
        or a receipt code another node holds; two callers never both extend one chain."""

    async def changes_body(self, governorate: str, since: int, limit: int) -> bytes:
        """The encoded change-feed frame after cursor `since`."""

    def snapshot(
        self, governorate: str, page: int = SNAPSHOT_PAGE
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        """(packed bills, how many) pages of one consistent read, then (b"", cursor).

        Use with `contextlib.aclosing` so an abandoned stream ends its read transaction.
        """

    async def bill_count(self, governorate: str) -> int:
        """The governorate's bills (a snapshot announces it: progress only, PROTOCOL.md 4.4)."""

    async def fine_rules(self, governorate: str) -> list[Rule]: ...

    async def node_day(self, node: str, day: date) -> list[protocol.LedgerEntry]: ...

    async def remember_keys(self, nodes: Mapping[str, NodeSettings], now: float) -> None: ...

    async def chain_page(self, node: str, after: int, limit: int) -> chain.Page:
        """`node`'s chain head and up to `limit` entries after seq `after`, of one snapshot
        (GET /v1/nodes/{node}/chain, sync.centre.heads)."""

    # Operators' commands (sync.centre.cli).
    async def upsert_bills(
        self, governorate: str, bills: Sequence[BillInput], now: float
    ) -> UpsertResult: ...

    async def pay_online(self, bill_id: str, amount: int, now: float) -> OnlinePayment: ...

    async def accounts_without_cycle(
        self, governorate: str, cycle: str
    ) -> list[tuple[str, str, str, str]]:
        """(account, name, address, meter) of its latest bill, for each account of
        `governorate` without a bill of `cycle`."""

    async def publish_fine_rule(
        self, governorate: str, effective: date, grace_days: int, fixed: int, percent_bp: int,
        cap: int | None, now: float,
    ) -> Rule: ...  # fmt: skip

    async def set_request_status(
        self, request_id: str, status: str, note: str | None, now: float
    ) -> dict[str, Any]:
        """RequestRefused for an unknown request or a status it cannot take."""

    # Reports and inspection.
    async def ledger_rows(self, node: str | None = None) -> list[tuple[Any, ...]]:
        """clearing.LEDGER_HEADER's columns, in (node, seq) order."""

    async def clearing(
        self, day: date, tz: tzinfo, governorate: str | None = None
    ) -> list[dict[str, Any]]: ...

    async def credit_accounts(self, governorate: str | None = None) -> list[AccountCredit]: ...

    async def verify_receipt(self, text: str, nodes: Mapping[str, NodeSettings]) -> Check: ...

    async def requests_list(self) -> list[tuple[Any, ...]]: ...

    async def bill(self, bill_id: str) -> dict[str, Any] | None:
        """The bill as the feeds carry it (bill.FIELDS), or None."""

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of one statement in SQL both databases take, `?` for each parameter: for
        tests and inspection, never for the centre's own work."""
