"""Benchmark: one point read on the event loop (`Database.read`) against one via aiosqlite.

Usage: .venv/bin/python tests/bench/bench_reads.py [--bills 200000] [--reads 20000] [--runs 7]

The mirror is seeded by bench_api's own seeding (the node's migrations, `--bills` bills,
4 cycles per account). Each run times `--reads` sequential reads of random accounts and
bills: on the loop through `db.read`, and awaited through `db.read_slow` (an aiosqlite hop
to its thread and back), and for reference through the ThreadPoolExecutor + own sqlite3
connection that read_slow used before aiosqlite. Prints µs per read, median and spread.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_api import GOV, Harness, account_of, cycles_of  # noqa: E402

from edge import mirror  # noqa: E402
from edge.db import Database  # noqa: E402

LABELS = ("on the loop", "aiosqlite", "executor")
Read = Callable[[sqlite3.Connection], object]


def lookups(accounts: int, n: int, rng: random.Random) -> dict[str, list[Read]]:
    last = cycles_of(4)[-1]
    picked = [account_of(rng.randrange(accounts)) for _ in range(n)]
    return {
        "inquiry (account_json)": [lambda c, a=a: mirror.account_json(c, a) for a in picked],
        "bill by id (mirror.bill)": [
            lambda c, a=a: mirror.bill(c, f"{GOV}-{last}-{a}") for a in picked
        ],
    }


class Executor:
    """read_slow as it was: one worker thread of a ThreadPoolExecutor, its own connection."""

    def __init__(self, path: Path) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.conn = self.pool.submit(self._connect, str(path)).result()

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn

    async def read(self, fn: Read) -> object:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, self.conn)

    def close(self) -> None:
        self.pool.submit(self.conn.close).result()
        self.pool.shutdown()


async def measure(db: Database, old: Executor, fns: list[Read]) -> tuple[float, ...]:
    """µs per read: on the loop, through aiosqlite, through the old executor."""
    started = time.perf_counter()
    for fn in fns:
        assert db.read(fn) is not None
    on_loop = time.perf_counter() - started
    started = time.perf_counter()
    for fn in fns:
        assert await db.read_slow(fn) is not None
    hop = time.perf_counter() - started
    started = time.perf_counter()
    for fn in fns:
        assert await old.read(fn) is not None
    executor = time.perf_counter() - started
    return tuple(t / len(fns) * 1e6 for t in (on_loop, hop, executor))


async def bench(data: Path, accounts: int, args: argparse.Namespace) -> None:
    db = Database(data)
    await db.open()
    old = Executor(db.path)
    rng = random.Random(7)
    try:
        for name in lookups(accounts, 1, rng):
            results = []
            for run in range(args.runs + 1):
                fns = lookups(accounts, args.reads, rng)[name]
                result = await measure(db, old, fns)
                if run:  # the first run warms the page cache and is not counted
                    results.append(result)
            cells = []
            for label, column in zip(LABELS, zip(*results, strict=True), strict=True):
                cells.append(
                    f"{label} {statistics.median(column):5.1f} µs"
                    f" ({min(column):.1f}-{max(column):.1f})"
                )
            print(f"{name:<25} " + "   ".join(cells))
    finally:
        old.close()
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bills", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=20_000, help="reads per run")
    parser.add_argument("--runs", type=int, default=7, help="counted runs (median)")
    parser.add_argument("--dir", default=None, help="where the temp data dir goes")
    args = parser.parse_args()
    seed_args = argparse.Namespace(
        bills=args.bills, cycles=4, dir=args.dir, no_wrk=True, no_strace=True, keep=False
    )
    harness = Harness(seed_args)
    try:
        seeded = harness.seed()
        print(
            f"{seeded['bills']:,} bills ({seeded['accounts']:,} accounts),"
            f" {seeded['db_mb']:.0f} MB, seeded in {seeded['seed_s']:.1f} s;"
            f" {args.reads:,} sequential reads per run, median of {args.runs} runs"
        )
        asyncio.run(bench(seeded["data"], seeded["accounts"], args))
    finally:
        harness.cleanup()


if __name__ == "__main__":
    main()
