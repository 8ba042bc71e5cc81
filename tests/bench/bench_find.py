"""Benchmark: finding payments (edge.paymentquery) in a year of one node's payments.

Usage: .venv/bin/python tests/bench/bench_find.py [--per-day 1500] [--days 365] [--runs 25]
       .venv/bin/python tests/bench/bench_find.py --quick      (60 days, for CI)

Seeds the node's migrations with `--per-day` payments for `--days` days (30 channels, 60
cashiers, 20,000 accounts; 97 % synced, 1 % credited, 0.5 % rejected, the newest 1.5 %
pending) written with plain sqlite3, then times one page (limit 50) of GET /v1/payments'
query per filter, first page and a page from the middle (`after`), as a counter's token
(its channel) and as `audit` (every channel). Prints the median and the worst in ms; the
goal is an index range, so no page may read the year: each median stays under 20 ms.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import outbox  # noqa: E402
from edge import paymentquery as pq  # noqa: E402
from edge.db import MIGRATIONS  # noqa: E402

DAY0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
GOAL_MS = 20.0


def seed(path: Path, per_day: int, days: int, rng: random.Random) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # seeding only; the node runs FULL
    outbox.apply_migrations(conn, MIGRATIONS)
    total = per_day * days
    pending_from = int(total * 0.985)
    conn.execute("BEGIN")
    seq = 0
    for day in range(days):
        entries, rows = [], []
        stamp = time.strftime("%Y%m%d", time.gmtime(DAY0 + day * 86_400))
        for n in range(1, per_day + 1):
            seq += 1
            at = DAY0 + day * 86_400 + n * 86_400 / (per_day + 1)
            roll = rng.random()
            state, verdict = (("pending", None) if seq > pending_from
                              else ("rejected", "rejected") if roll < 0.005
                              else ("delivered", "credited") if roll < 0.015
                              else ("delivered", "applied"))  # fmt: skip
            account = f"{1_000_000_000 + rng.randrange(20_000)}"
            entries.append((seq, f"dam-1_{seq:026d}", "payment", b"", at, state, verdict,
                            None if state == "pending" else at + 5, "0" * 64, "0" * 64))  # fmt: skip
            rows.append((seq, f"DAM-2026-01-{account}", account, 100 + seq % 900, "cash",
                         f"cashier-{rng.randrange(60)}", f"counter-{rng.randrange(30)}",
                         f"DAM-DAM1-{stamp}-{n:06d}", at))  # fmt: skip
        conn.executemany(
            "INSERT INTO outbox_entries (seq, id, kind, payload, created_at, state, verdict,"
            " settled_at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entries,
        )
        conn.executemany(
            "INSERT INTO payments (seq, bill_id, account, amount, method, cashier, channel,"
            " receipt, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.execute("COMMIT")
    # No ANALYZE: the node never runs it, so the planner chooses as it does in production.
    conn.close()
    return total


def cases(total: int, days: int) -> dict[str, pq.Filters]:
    mid = total // 2
    day = time.strftime("%Y%m%d", time.gmtime(DAY0 + (days // 2) * 86_400))
    out: dict[str, pq.Filters] = {}
    for who, channel in (("audit", None), ("counter", "counter-7")):
        out |= {
            f"{who}: newest": pq.Filters(channel=channel),
            f"{who}: newest, after the middle": pq.Filters(channel=channel, after=mid),
            f"{who}: receipt": pq.Filters(channel=channel, receipt=f"DAM-DAM1-{day}-000123"),
            f"{who}: account": pq.Filters(channel=channel, account="1000012345"),
            f"{who}: bill": pq.Filters(channel=channel, bill_id="DAM-2026-01-1000012345"),
            f"{who}: cashier": pq.Filters(channel=channel, cashier="cashier-5"),
            f"{who}: cashier, after": pq.Filters(channel=channel, cashier="cashier-5", after=mid),
            f"{who}: day": pq.Filters(channel=channel, day=day),
            **{
                f"{who}: state {s}": pq.Filters(channel=channel, state=s)
                for s in ("pending_sync", "synced", "credited", "rejected")
            },
            f"{who}: rejected, after": pq.Filters(channel=channel, state="rejected", after=mid),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-day", type=int, default=1500)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.days, args.runs = 60, 9
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.db"
        t0 = time.perf_counter()
        total = seed(path, args.per_day, args.days, rng)
        print(
            f"seeded {total:,} payments over {args.days} days in {time.perf_counter() - t0:.1f} s"
        )
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        failed = 0
        print(f"{'query':<40} {'items':>5} {'median ms':>10} {'max ms':>8}")
        for name, filters in cases(total, args.days).items():
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                page = pq.search(conn, filters)
                times.append((time.perf_counter() - start) * 1000)
            median = statistics.median(times)
            failed += median > GOAL_MS
            mark = "" if median <= GOAL_MS else "  FAIL"
            print(f"{name:<40} {len(page.items):>5} {median:>10.2f} {max(times):>8.2f}{mark}")
        conn.close()
    print("PASS" if not failed else f"FAIL: {failed} queries over {GOAL_MS} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
