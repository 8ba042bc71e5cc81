"""Benchmark: durable payments per second with and without group commit (not a test).

Usage: .venv/bin/python tests/bench/bench_store.py [--quick] [--seconds S] [--dir DIR]

Every payment goes through `edge.payments.accept` via `Database.write` on a real file with
WAL + synchronous=FULL, so each is acknowledged only after its commit is on disk. "group
commit" is the normal Database; "one commit per payment" is the same with max_batch=1, one
FULL commit (one fsync) per payment. The issue's target: group commit >= 10x the latter at
128 concurrent writers.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import msgpack

import outbox
from edge import mirror, payments
from edge.db import Database

WRITERS = (1, 16, 128)
BILLS = 2_000
MODES = (("group commit", 512), ("one commit per payment", 1))


class OutboxOnly:
    """The store's own durable write for a payment (issue 2's layer, below the API's checks):
    idempotency lookup, outbox entry (msgpack payload, hash chain) and stored response, for
    every payment of the commit at once. No bill check, receipt counter or payments row:
    those are `payments.Acceptor`'s, measured in the main table."""

    def __call__(
        self, conn: sqlite3.Connection, items: list[tuple[str, str, bytes, str, float]]
    ) -> list[bytes]:
        known = outbox.idempotency.lookup_many(conn, [(c, k) for c, k, _, _, _ in items])
        fresh = [item for item in items if (item[0], item[1]) not in known]
        specs = [("payment", payload, eid, now) for _, _, payload, eid, now in fresh]
        entries = outbox.append_many(conn, specs)
        replies = {(c, k): b'{"payment_id":"%s"}' % e.id.encode()
                   for (c, k, _, _, _), e in zip(fresh, entries, strict=True)}  # fmt: skip
        outbox.idempotency.remember_many(
            conn,
            [(c, k, outbox.fingerprint(payload), outbox.StoredResponse(201, replies[(c, k)]))
             for c, k, payload, _, _ in fresh],
            now=items[0][4],
        )  # fmt: skip
        return [replies.get((c, k), known.get((c, k), ("", None))[1] or b"") for c, k, *_ in items]


def bills() -> list[dict[str, object]]:
    return [
        {
            "bill_id": f"DAM-2026-05-{account}",
            "account": str(account),
            "governorate": "DAM",
            "cycle": "2026-05",
            "name": "bench",
            "address": "Damascus",
            "meter": f"M-{account}",
            "kwh": 100,
            "amount": 10**15,  # never runs out of due amount
            "paid": 0,
            "due_date": "2026-07-15",
            "version": 1,
            "updated_at": "2026-05-01T00:00:00Z",
            "credit": 0,
            "fine_paid": 0,
        }
        for account in range(1_000_000, 1_000_000 + BILLS)
    ]


@dataclass
class Cell:
    payments: int
    seconds: float
    commits: int

    @property
    def rate(self) -> float:
        return self.payments / self.seconds

    @property
    def commits_per_payment(self) -> float:
        return self.commits / self.payments


async def measure(
    base: Path,
    writers: int,
    max_batch: int,
    seconds: float,
    *,
    rows_only: bool = False,
    outbox_only: bool = False,
) -> Cell:
    """Payments (or bare one-row inserts, or the outbox's part of a payment) in `seconds`."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        db = Database(Path(tmp) / "data", max_batch=max_batch)
        await db.open()
        try:
            seeded = bills()
            await db.write(lambda conn: mirror.apply_changes(conn, seeded, 1))
            await db.exclusive(lambda c: c.execute("CREATE TABLE bare (n INTEGER, body BLOB)"))
            sync = await db.exclusive(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
            assert sync == 2, "the benchmark must run with synchronous=FULL"
            acceptor = payments.Acceptor("bench-1", "DAM")
            store_job = OutboxOnly()
            done = 0
            deadline = time.perf_counter() + seconds

            async def cashier(w: int) -> None:
                nonlocal done
                n = 0
                while time.perf_counter() < deadline:
                    n += 1
                    bill_id = str(seeded[(w * 7919 + n) % BILLS]["bill_id"])
                    request = payments.PaymentRequest(bill_id, 100, "cash", f"cashier-{w}")

                    if outbox_only:
                        now = time.time()
                        payload = msgpack.packb(
                            {"bill_id": request.bill_id, "amount": 100, "method": "cash",
                             "cashier": request.cashier, "accepted_at": now},
                            use_bin_type=True,
                        )  # fmt: skip
                        item = ("bench", f"{w}-{n}", payload, outbox.new_entry_id("bench-1"), now)
                        await db.write_batched(store_job, item)
                    elif rows_only:
                        await db.write(
                            lambda c, n=n: c.execute(
                                "INSERT INTO bare VALUES (?, zeroblob(300))", (n,)
                            )
                        )
                    else:
                        # The node's own path: prepared on the loop, accepted by the writer
                        # together with every other payment of the same commit.
                        call = payments.prepare(
                            "bench-1", "bench", f"{w}-{n}", request, time.time(), UTC
                        )
                        reply = await db.write_batched(acceptor, call)
                        assert reply.status == 201
                    done += 1

            commits_before = db.writer.commits
            started = time.perf_counter()
            await asyncio.gather(*(cashier(w) for w in range(writers)))
            elapsed = time.perf_counter() - started
            return Cell(done, elapsed, db.writer.commits - commits_before)
        finally:
            await db.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per measurement instead of 3 s")
    parser.add_argument("--seconds", type=float, help="seconds per measurement")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where to put the database files (default: the temp dir)")  # fmt: skip
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 3.0)

    print(
        f"durable payments through edge.payments.Acceptor (the API's path), WAL + synchronous=FULL, in {args.dir}"
    )
    print(f"{seconds:g} s per measurement, {BILLS} bills seeded\n")
    results: dict[tuple[str, int], Cell] = {}
    header = f"{'writers':>7} | " + " | ".join(f"{name:^34}" for name, _ in MODES)
    print(header)
    print(
        f"{'':>7} | " + " | ".join(f"{'payments/s':>12} {'commits/payment':>18}   " for _ in MODES)
    )
    print("-" * len(header))
    for writers in WRITERS:
        cells = []
        for name, max_batch in MODES:
            cell = await measure(args.dir, writers, max_batch, seconds)
            results[(name, writers)] = cell
            cells.append(f"{cell.rate:>12,.0f} {cell.commits_per_payment:>18.4f}   ")
        print(f"{writers:>7} | " + " | ".join(cells), flush=True)

    print("\ncalibration, bare one-row inserts instead of payments (this machine's disk):")
    single = await measure(args.dir, 1, 1, seconds, rows_only=True)
    grouped = await measure(args.dir, WRITERS[-1], 512, seconds, rows_only=True)
    print(f"  one FULL commit per row, 1 writer: {single.rate:>9,.0f} rows/s")
    print(f"  group commit, {WRITERS[-1]} writers:          {grouped.rate:>9,.0f} rows/s"
          f" ({1 / grouped.commits_per_payment:.0f} rows per commit)")  # fmt: skip

    print("\nthe store's own part of a payment (outbox entry + idempotency record, no bill"
          " check), 128 writers:")  # fmt: skip
    store_group = await measure(args.dir, WRITERS[-1], 512, seconds, outbox_only=True)
    store_single = await measure(args.dir, WRITERS[-1], 1, seconds, outbox_only=True)
    print(f"  group commit:           {store_group.rate:>9,.0f} payments/s"
          f" ({1 / store_group.commits_per_payment:.0f} per commit)")  # fmt: skip
    print(f"  one commit per payment: {store_single.rate:>9,.0f} payments/s"
          f" -> {store_group.rate / store_single.rate:.1f}x")  # fmt: skip

    top = WRITERS[-1]
    ratio = results[(MODES[0][0], top)].rate / results[(MODES[1][0], top)].rate
    verdict = "meets" if ratio >= 10 else "MISSES"
    print(f"\ngroup commit / one commit per payment at {top} writers: {ratio:.1f}x"
          f" ({verdict} the >= 10x target)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
