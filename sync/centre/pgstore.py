"""The centre on PostgreSQL (asyncpg): sync.centre.stores for any number of centre processes
on one database.

Each operation is one transaction on a pooled connection. A batch locks its node's chain head
row (`SELECT ... FOR UPDATE`, the row inserted first if absent) before it reads anything, so
two processes given the same node's retries never both extend the chain: the second waits,
then finds the entries known. Bills are locked in bill_id order, the change counter last, so
transactions never deadlock and commit in change_seq order. Nonces live in the database, so a
request one process saw is a replay at every other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date, tzinfo
from typing import Any, TypeVar

import asyncpg

from outbox.chain import GENESIS
from sync import bill, chain, protocol
from sync.centre import feeds, heads, pgops, pgschema, receipts, requests, verdicts
from sync.centre.bills import BillInput, OnlinePayment, UpsertResult
from sync.centre.config import Limits, NodeSettings
from sync.centre.credits import AccountCredit
from sync.centre.nonces import Nonce
from sync.centre.receipts import Check
from sync.centre.store import SNAPSHOT_PAGE
from sync.errors import StoreFailed, SyncError
from sync.fines import Rule

log = logging.getLogger(__name__)
T = TypeVar("T")
Conn = Any  # an asyncpg connection (asyncpg ships no type information)

BILL_COLUMNS = ", ".join(bill.FIELDS)
# Lost connections (a restarted or unreachable server) and the server refusing for now: the
# request failed with nothing recorded; the node retries it.
_UNAVAILABLE = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
)  # fmt: skip
# Two transactions racing for the same new rows (two nodes' entries with one id, one bill
# imported by two processes): the loser is run again and then sees the winner's rows.
_RETRY = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
ATTEMPTS = 4
NONCE_PRUNE_EVERY = 1_000  # requests between deletions of nonces past the window


def _placeholders(sql: str) -> str:
    """`?` -> `$1`, `$2`, ... (the portable SQL of `query`)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


class PgCentre:
    """sync.centre.stores.CentreDB on PostgreSQL."""

    kind = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10, window_s: float = 300.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.window_s = window_s
        self._pool: Any = None
        self._nonce_count = 0

    async def open(self) -> None:
        where = self.url.split("@")[-1]  # never a user's password in a log (none is allowed)
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, command_timeout=60
            )
            async with self._pool.acquire() as conn:
                await pgschema.apply_migrations(conn)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            await self.close()
            raise SyncError(f"cannot open the centre database {where}: {exc}") from exc
        log.info("centre database %s open (pool of %d)", where, self.pool_size)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise SyncError("the centre database is not open")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreFailed(f"the centre database failed: {type(exc).__name__}: {exc}") from exc

    async def _tx(self, job: Callable[[Conn], Awaitable[T]], *, retry: bool = True) -> T:
        """`job(conn)` in one transaction (READ COMMITTED), run again after losing a race."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._conn() as conn, conn.transaction():
                    return await job(conn)
            except _RETRY as exc:
                if not retry or attempt == ATTEMPTS:
                    raise StoreFailed(f"the centre database kept refusing: {exc}") from exc
                log.info("transaction lost a race (%s); again", type(exc).__name__)
        raise AssertionError("unreachable")

    async def _read(self, job: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._conn() as conn:
            return await job(conn)

    # --- nonces -------------------------------------------------------------------------

    async def nonce_seen(self, seen: Nonce, now: float) -> bool:
        async def job(conn: Conn) -> bool:
            fresh = await conn.fetchval(
                "INSERT INTO seen_nonces (node, nonce, ts) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                seen.node, seen.nonce, seen.ts,
            )  # fmt: skip
            self._nonce_count += 1
            if self._nonce_count % NONCE_PRUNE_EVERY == 0:
                # A request stamped ts is accepted while now <= ts + window: older ones are
                # refused by their timestamp first, so their nonces no longer matter.
                await conn.execute(
                    "DELETE FROM seen_nonces WHERE ts < $1", int(now - self.window_s) - 1
                )
            return fresh is None

        return await self._tx(job, retry=False)

    async def remember_nonce(self, seen: Nonce, now: float) -> None:
        """Nothing to do: nonce_seen stored it, shared by every process."""

    # --- the link -----------------------------------------------------------------------

    async def record_batch(
        self, node: str, governorate: str, entries: Sequence[protocol.WireEntry], now: float,
        limits: Limits, duplicate_codes: frozenset[str] = frozenset(), nonce: Nonce | None = None,
    ) -> protocol.Reply:  # fmt: skip
        async def job(conn: Conn) -> protocol.Reply:
            # The head row first (absent for a new node), then locked: one writer per chain.
            await conn.execute(
                "INSERT INTO chain_heads (node, seq, hash) VALUES ($1, 0, $2)"
                " ON CONFLICT DO NOTHING",
                node, GENESIS,
            )  # fmt: skip
            row = await conn.fetchrow(
                "SELECT seq, hash FROM chain_heads WHERE node = $1 FOR UPDATE", node
            )
            known = await pgops.known(conn, [e.id for e in entries])
            found = verdicts.scan(node, (row["seq"], row["hash"]), known, entries)
            await _claim_codes(conn, node, governorate, found.codes(duplicate_codes), now)
            facts = await pgops.facts(conn, found, governorate)
            plan = verdicts.decide(found, facts, node, governorate, entries, now, limits)
            await pgops.write_plan(conn, node, plan, now)
            return plan.reply

        return await self._tx(job)

    async def changes_body(self, governorate: str, since: int, limit: int) -> bytes:
        async def job(conn: Conn) -> bytes:
            rows = await conn.fetch(
                f"SELECT {BILL_COLUMNS}, change_seq FROM bills WHERE governorate = $1"
                " AND change_seq > $2 ORDER BY change_seq LIMIT $3",
                governorate, since, limit + 1,
            )  # fmt: skip
            statuses = await conn.fetch(
                "SELECT id, status, note, version, at, change_seq FROM request_history"
                " WHERE governorate = $1 AND change_seq > $2 ORDER BY change_seq LIMIT $3",
                governorate, since, limit + 1,
            )  # fmt: skip
            found = feeds.changes_page(
                [tuple(r) for r in rows],
                [(r[5], dict(zip(requests.FEED_FIELDS, tuple(r)[:5], strict=True)))
                 for r in statuses],
                since, limit,
            )  # fmt: skip
            return protocol.encode_changes(found.changes, found.cursor, found.more, found.requests)

        # One snapshot for both statements: READ COMMITTED would let a bill commit between
        # them, below a status's change_seq the cursor then passes, and the feed skip it.
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read",
                                                          readonly=True):  # fmt: skip
            return await job(conn)

    async def snapshot(
        self, governorate: str, page: int = SNAPSHOT_PAGE
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        """Keyset pages of one REPEATABLE READ READ ONLY transaction: every page sees the
        moment the counter was read, whatever commits while the client reads."""
        # A connection of its own, not a pooled one: its transaction lasts as long as the
        # client reads, and must not take the pool's connections from the batches.
        try:
            conn = await asyncpg.connect(self.url)
        except _UNAVAILABLE as exc:
            raise StoreFailed(f"the centre database failed: {type(exc).__name__}: {exc}") from exc
        try:
            async with (
                conn.transaction(isolation="repeatable_read", readonly=True),
                contextlib.aclosing(_pages(conn, governorate, page)) as pages,
            ):
                async for item in pages:
                    yield item
        finally:
            await conn.close()

    async def bill_count(self, governorate: str) -> int:
        async def job(conn: Conn) -> int:
            found = await conn.fetchval(
                "SELECT COUNT(*) FROM bills WHERE governorate = $1", governorate
            )
            return int(found)

        return await self._read(job)

    async def fine_rules(self, governorate: str) -> list[Rule]:
        return await self._read(lambda c: pgops.rules_of(c, governorate))

    async def node_day(self, node: str, day: date) -> list[protocol.LedgerEntry]:
        return await self._read(lambda c: pgops.node_day(c, node, day))

    async def remember_keys(self, nodes: Mapping[str, NodeSettings], now: float) -> None:
        await self._tx(lambda c: pgops.remember_keys(c, nodes, now))

    async def chain_page(self, node: str, after: int, limit: int) -> chain.Page:
        async def job(conn: Conn) -> chain.Page:
            head = await conn.fetchrow("SELECT seq, hash FROM chain_heads WHERE node = $1", node)
            at = await conn.fetchval(
                "SELECT hash FROM entries WHERE node = $1 AND seq = $2", node, after
            )
            rows = await conn.fetch(
                f"SELECT {heads.HELD_COLUMNS} {heads.HELD_FROM} WHERE e.node = $1"
                " AND e.seq > $2 ORDER BY e.seq LIMIT $3",
                node, after, limit,
            )  # fmt: skip
            return heads.page(node, head, after, at, [tuple(r) for r in rows])

        # The head and the entries of one snapshot.
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read",
                                                          readonly=True):  # fmt: skip
            return await job(conn)

    # --- operators' commands and reports (sync.centre.pgops) ---------------------------

    async def upsert_bills(
        self, governorate: str, rows: Sequence[BillInput], now: float
    ) -> UpsertResult:
        return await self._tx(lambda c: pgops.upsert_bills(c, governorate, rows, now))

    async def pay_online(self, bill_id: str, amount: int, now: float) -> OnlinePayment:
        return await self._tx(lambda c: pgops.pay_online(c, bill_id, amount, now))

    async def accounts_without_cycle(
        self, governorate: str, cycle: str
    ) -> list[tuple[str, str, str, str]]:
        return await self._read(lambda c: pgops.accounts_without_cycle(c, governorate, cycle))

    async def publish_fine_rule(
        self, governorate: str, effective: date, grace_days: int, fixed: int, percent_bp: int,
        cap: int | None, now: float,
    ) -> Rule:  # fmt: skip
        return await self._tx(
            lambda c: pgops.publish_rule(
                c, governorate, effective, grace_days, fixed, percent_bp, cap, now
            )
        )

    async def set_request_status(
        self, request_id: str, status: str, note: str | None, now: float
    ) -> dict[str, Any]:
        return await self._tx(lambda c: pgops.set_status(c, request_id, status, note, now))

    async def ledger_rows(self, node: str | None = None) -> list[tuple[Any, ...]]:
        return await self._read(lambda c: pgops.ledger_rows(c, node))

    async def clearing(
        self, day: date, tz: tzinfo, governorate: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._read(lambda c: pgops.clearing_report(c, day, tz, governorate))

    async def credit_accounts(self, governorate: str | None = None) -> list[AccountCredit]:
        return await self._read(lambda c: pgops.credit_accounts(c, governorate))

    async def verify_receipt(self, text: str, nodes: Mapping[str, NodeSettings]) -> Check:
        return await self._read(lambda c: pgops.verify_receipt(c, text, nodes))

    async def requests_list(self) -> list[tuple[Any, ...]]:
        async def job(conn: Conn) -> list[tuple[Any, ...]]:
            rows = await conn.fetch(
                "SELECT id, node, number, kind, account, bill_id, amount, status, version"
                " FROM requests ORDER BY updated_at, id"
            )
            return [tuple(r) for r in rows]

        return await self._read(job)

    async def bill(self, bill_id: str) -> dict[str, Any] | None:
        async def job(conn: Conn) -> dict[str, Any] | None:
            row = await conn.fetchrow(
                f"SELECT {BILL_COLUMNS} FROM bills WHERE bill_id = $1", bill_id
            )
            return None if row is None else dict(zip(bill.FIELDS, tuple(row), strict=True))

        return await self._read(job)

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async def job(conn: Conn) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.fetch(_placeholders(sql), *args)]

        return await self._tx(job, retry=False)


async def _pages(
    conn: Conn, governorate: str, page: int
) -> AsyncGenerator[tuple[bytes, int], None]:
    """The snapshot's keyset pages in the caller's transaction, then (b"", cursor)."""
    last = await conn.fetchval("SELECT last FROM change_counter WHERE id = 1")
    after, count = f"{governorate}-", 0
    query = await conn.prepare(
        f"SELECT {BILL_COLUMNS} FROM bills WHERE bill_id > $1 AND bill_id < $2"
        " AND governorate = $3 ORDER BY bill_id LIMIT $4"
    )
    while True:
        rows = await query.fetch(after, f"{governorate}.", governorate, page)
        if not rows:
            break
        after = rows[-1][0]
        count += len(rows)
        yield feeds.pack_bills([tuple(r) for r in rows]), len(rows)
    yield b"", int(last)
    log.info("snapshot of %s: %d bills, cursor %d", governorate, count, last)


async def _claim_codes(
    conn: Conn, node: str, governorate: str, codes: list[str], now: float
) -> None:
    """Claim the batch's receipt codes for `node`; Refused if another node holds one (the
    transaction then rolls back, claims and all). A code another process is claiming at
    this moment waits for its transaction, so two nodes never both hold one."""
    if not codes:
        return
    await conn.execute(
        "INSERT INTO receipt_codes (governorate, code, node, first_seen)"
        " SELECT $1, code, $3, $4 FROM unnest($2::text[]) AS code ON CONFLICT DO NOTHING",
        governorate, codes, node, now,
    )  # fmt: skip
    rows = await conn.fetch(
        "SELECT code, node FROM receipt_codes WHERE governorate = $1 AND code = ANY($2::text[])",
        governorate, codes,
    )  # fmt: skip
    receipts.check_codes(node, governorate, {r["code"]: r["node"] for r in rows})
