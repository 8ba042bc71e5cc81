"""Seeded simulation: the real replayer, outbox and centre ledger over a simulated faulty network.

One random seed drives everything: payments arriving, requests lost, replies lost after the
centre committed, duplicated deliveries, 500s, node crashes between the centre's commit and
the node's settle, online payments at the centre. After the network heals, node and centre
must agree exactly. A failing seed prints itself; replay it with `SIM_SEED=<n> pytest
tests/sim`. `SIM_SEEDS=<count>` sets how many seeds run (default 2,000).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import aiohttp
from helpers import bill_input

import outbox
from edge import mirror, payments
from edge.db import migrate as edge_migrate
from sync import answers, protocol, signing
from sync.centre import bills, ledger
from sync.centre.store import migrate as centre_migrate
from sync.errors import Refused, SyncError
from sync.link import Link
from sync.replayer import ReplayConfig, Replayer

NODE, GOV, CYCLE = "dam-1", "DAM", "2026-05"
ACCOUNTS = [f"05000000{i:02d}" for i in range(8)]


SECRET = b"s" * 32


class Crash(BaseException):
    """The node process dies: whatever the replayer was doing is lost, the database stays."""


@dataclass
class Faults:
    drop_request: float
    http_500: float
    drop_reply: float
    duplicate: float
    crash_before_settle: float

    @classmethod
    def draw(cls, rng: random.Random) -> Faults:
        return cls(*(rng.choice((0.0, 0.1, 0.3)) for _ in range(5)))


@dataclass
class SimCentre:
    """The reference centre's ledger logic on its own SQLite connection, no HTTP."""

    conn: sqlite3.Connection = field(
        default_factory=lambda: sqlite3.connect(":memory:", isolation_level=None)
    )
    requests: int = 0

    def __post_init__(self) -> None:
        centre_migrate(self.conn)
        seeds = [bill_input(a, CYCLE, amount=1_000_000) for a in ACCOUNTS]
        self.write(lambda c: bills.upsert_bills(c, GOV, seeds, 0.0))

    def write(self, job: Any) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = job(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def handle(self, body: bytes) -> tuple[int, bytes]:
        self.requests += 1
        batch = protocol.decode_batch(body)
        try:
            reply = self.write(lambda c: ledger.record_batch(c, NODE, GOV, batch.entries, 0.0))
        except Refused as exc:
            return exc.status, protocol.encode_error(exc.code, exc.detail)
        return 200, protocol.encode_reply(reply.results, reply.acked_seq)


class _Response:
    def __init__(self, status: int, body: bytes, signature: str = "") -> None:
        # Signed as the reference centre signs (sync.answers), with the node's secret.
        mac = answers.answer_mac(SECRET, signature, status, "", body)
        self.status, self._body = status, body
        self.headers = {"Date": "", answers.ANSWER_HEADER: mac}

    async def read(self) -> bytes:
        return self._body

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class SimNetwork:
    """Stands in for the aiohttp session: every fault is a draw from the seeded generator."""

    def __init__(self, rng: random.Random, centre: SimCentre, faults: Faults) -> None:
        self.rng, self.centre, self.faults, self.healed = rng, centre, faults, False

    def post(
        self, url: str, data: io.BytesIO, headers: dict[str, str], *, allow_redirects: bool
    ) -> _Response:
        assert allow_redirects is False  # a signed request goes to the centre only
        body = data.getvalue()
        f, r = self.faults, self.rng
        if not self.healed and r.random() < f.drop_request:
            raise aiohttp.ClientConnectionError("simulated: request lost")
        if not self.healed and r.random() < f.http_500:
            return _Response(500, b"")
        status, reply = self.centre.handle(body)
        if not self.healed and r.random() < f.duplicate:
            status, reply = self.centre.handle(body)  # the network delivered it twice
        if not self.healed and r.random() < f.drop_reply:
            raise aiohttp.ServerDisconnectedError("simulated: reply lost")
        if not self.healed and r.random() < f.crash_before_settle:
            raise Crash
        return _Response(status, reply, headers[signing.SIGNATURE_HEADER])


class InlineWriter:
    """The outbox writer's interface run inline: the sim wants determinism and speed, and the
    real writer thread has its own tests (tests/integration/test_store.py)."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        edge_migrate(self.conn)

    async def submit(self, fn: Any) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    async def submit_batched(self, fn: Any, item: Any) -> Any:
        result = (await self.submit(lambda c: fn(c, [item])))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def close(self) -> None:
        self.conn.close()


async def no_wait(seconds: float) -> None:
    return None


async def simulate(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    faults = Faults.draw(rng)
    centre = SimCentre()
    network = SimNetwork(rng, centre, faults)
    writer = InlineWriter()
    try:
        bill_maps = [dict(zip(protocol.BILL_FIELDS, (f"{GOV}-{CYCLE}-{a}", a, GOV, CYCLE, "sim", "sim", "M", 100,
                                                      1_000_000, 0, "2026-07-15", 1, "x", 0, 0), strict=True)) for a in ACCOUNTS]  # fmt: skip
        await writer.submit(lambda c: mirror.apply_changes(c, bill_maps, 1))
        acceptor = payments.Acceptor(NODE, GOV)
        config = ReplayConfig(
            node=NODE, url="sim://centre", secret=SECRET, batch_size=rng.choice((1, 3, 10, 50))
        )
        # Retries within a step go at once: simulated time, not the policy's seconds.
        replayer = Replayer(config, writer, network, Link(), sleep=no_wait)  # type: ignore[arg-type]
        taken: list[str] = []
        crashes = 0
        for step in range(rng.randint(20, 80)):
            for _ in range(rng.choice((0, 0, 1, 2, 5))):
                req = payments.PaymentRequest(
                    f"{GOV}-{CYCLE}-{rng.choice(ACCOUNTS)}", rng.randint(1, 5_000), "cash", "c"
                )
                key = f"k{rng.randint(0, 400)}"  # keys repeat: client retries must stay idempotent
                call = payments.prepare(NODE, "counter", key, req, 1_780_000_000.0 + step, UTC)
                try:
                    reply = await writer.submit_batched(acceptor, call)
                    if not reply.replayed:
                        taken.append(reply.body)
                except Exception:
                    pass
            if rng.random() < 0.05:
                account = rng.choice(ACCOUNTS)
                centre.write(
                    lambda c, a=account: bills.pay_online(c, f"{GOV}-{CYCLE}-{a}", 1_000, 0.0)
                )
            try:
                await replayer.step()
            except SyncError:
                pass  # every attempt of this step failed: the entries stay pending
            except Crash:
                crashes += 1
                replayer = Replayer(config, writer, network, Link(), sleep=no_wait)  # type: ignore[arg-type]
        network.healed = True
        for _ in range(10_000):
            if (await replayer.step()).idle:
                break
        return await _check(writer, centre, seed, len(taken), crashes)
    finally:
        await writer.close()


async def _check(
    writer: InlineWriter, centre: SimCentre, seed: int, taken: int, crashes: int
) -> dict[str, int]:
    def read(c: sqlite3.Connection) -> tuple[list[outbox.Entry], list[tuple[Any, ...]]]:
        entries = list(outbox.iter_entries(c))
        amounts = c.execute(
            "SELECT bill_id, SUM(amount) FROM payments GROUP BY bill_id ORDER BY bill_id"
        ).fetchall()
        return entries, amounts

    entries, node_sums = await writer.submit(read)
    where = f"(replay with SIM_SEED={seed})"
    assert len(entries) == taken, where
    assert all(e.state != "pending" for e in entries), f"entries left pending {where}"
    rows = list(ledger.ledger_rows(centre.conn, NODE))
    assert [(r[0], r[2]) for r in rows] == [(e.id, e.seq) for e in entries], (
        f"ledger differs {where}"
    )
    assert len({r[0] for r in rows}) == len(rows), f"an entry counted twice {where}"
    for entry, row in zip(entries, rows, strict=True):
        node_verdict = entry.reason if entry.verdict == "duplicate" else entry.verdict
        assert node_verdict == row[5], (
            f"verdict of {entry.id}: node {node_verdict}, centre {row[5]} {where}"
        )
    centre_sums = centre.conn.execute(
        "SELECT bill_id, SUM(amount) FROM entries WHERE node = ? GROUP BY bill_id ORDER BY bill_id",
        (NODE,),
    ).fetchall()
    assert centre_sums == node_sums, f"amounts per bill differ {where}"
    return {"payments": taken, "crashes": crashes, "requests": centre.requests}


def test_seeded_simulation_node_and_centre_agree() -> None:
    if "SIM_SEED" in os.environ:
        seeds = [int(os.environ["SIM_SEED"])]
    else:
        base = int(os.environ.get("SIM_BASE", "0"))
        seeds = list(range(base, base + int(os.environ.get("SIM_SEEDS", "2000"))))
    totals: Counter[str] = Counter()
    started = time.monotonic()

    async def run_all() -> None:
        for seed in seeds:
            try:
                totals.update(await simulate(seed))
            except BaseException as exc:
                raise AssertionError(
                    f"seed {seed} failed; replay with SIM_SEED={seed}: {exc!r}"
                ) from exc

    logging.disable(logging.WARNING)  # thousands of expected replay failures
    try:
        asyncio.run(run_all())
    finally:
        logging.disable(logging.NOTSET)
    print(f"\n{len(seeds)} seeds, {totals['payments']} payments, {totals['crashes']} crashes,"
          f" {totals['requests']} centre requests, 0 lost, 0 duplicated, {time.monotonic() - started:.1f} s")  # fmt: skip
