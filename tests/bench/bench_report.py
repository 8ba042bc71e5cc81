"""Benchmark: the day's close (`edge report day`) over a 100,000-payment day.

Usage: .venv/bin/python tests/bench/bench_report.py [--per-day 100000] [--days 3] [--runs 3]
       .venv/bin/python tests/bench/bench_report.py --quick      (10,000 a day, for CI)

Seeds the node's migrations with `--days` days of `--per-day` payments each (30 channels, 60
cashiers, three methods; 96 % synced, 1 % credited, 0.5 % rejected, 1 % voided, 0.5 %
refunded, the newest 1 % pending), written with plain sqlite3, then runs the real command,
`edge report day --date <the middle day>` in each format as a subprocess (start-up
included) and prints the wall time. Goal: under 5 s for a 100,000-payment day.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import outbox  # noqa: E402
from edge.db import MIGRATIONS  # noqa: E402

DAY0 = 1_780_272_000.0  # 2026-06-01 00:00 UTC (03:00 in Damascus: every payment of a day
GOAL_S = 5.0  # is taken between 03:00 and 03:00 the next day, so its receipt's day is DAY0's)


def seed(path: Path, per_day: int, days: int, rng: random.Random) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # seeding only; the node runs FULL
    outbox.apply_migrations(conn, MIGRATIONS)
    total = per_day * days
    seq = 0
    conn.execute("BEGIN")
    for day in range(days):
        entries, rows, actions = [], [], []
        stamp = time.strftime("%Y%m%d", time.gmtime(DAY0 + day * 86_400))
        for n in range(1, per_day + 1):
            seq += 1
            at = DAY0 + day * 86_400 + n * 86_000 / (per_day + 1)
            roll = rng.random()
            state, verdict = (("pending", None) if seq > total * 0.99
                              else ("rejected", "rejected") if roll < 0.010
                              else ("delivered", "credited") if roll < 0.020
                              else ("delivered", "applied"))  # fmt: skip
            entries.append((seq, f"dam-1_{seq:026d}", "payment", b"", at, state, verdict,
                            None if state == "pending" else at + 5, "0" * 64, "0" * 64))  # fmt: skip
            account = f"{1_000_000_000 + rng.randrange(20_000)}"
            rows.append((seq, f"DAM-2026-05-{account}", account, 1_000 + seq % 90_000,
                         rng.choice(("cash", "cash", "card", "transfer")),
                         f"cashier-{rng.randrange(60)}", f"counter-{rng.randrange(30)}",
                         f"DAM-DAM1-{stamp}-{n:06d}", at))  # fmt: skip
            kind = ("refund" if state == "rejected" and roll < 0.005
                    else "void" if state == "delivered" and verdict == "applied" and roll > 0.99
                    else None)  # fmt: skip
            if kind is not None:
                actions.append((seq, kind, at + 60))
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
        # Each action is an outbox entry of its own (delivered), after the day's payments.
        base = 10_000_000 + day * per_day
        conn.executemany(
            "INSERT INTO outbox_entries (seq, id, kind, payload, created_at, state, verdict,"
            " settled_at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, 'delivered', 'applied', ?,"
            " ?, ?)",
            [(base + i, f"dam-1_a{base + i:025d}", kind, b"", at, at + 5, "0" * 64, "0" * 64)
             for i, (_, kind, at) in enumerate(actions)],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO payment_actions (seq, kind, target, reason, by, at)"
            " VALUES (?, ?, ?, 'bench', 'super-1', ?)",
            [(base + i, kind, target, at) for i, (target, kind, at) in enumerate(actions)],
        )
    conn.execute("COMMIT")
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_day = 10_000 if args.quick else args.per_day
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        started = time.perf_counter()
        seed(root / "data" / "edge.db", per_day, args.days, random.Random(16))
        print(f"seeded {per_day * args.days:,} payments in {time.perf_counter() - started:.1f} s")
        (root / "tokens.toml").write_text("")
        config = root / "edge.toml"
        config.write_text(
            f'[node]\nid = "dam-1"\ndata_dir = "{root / "data"}"\n'
            f'[auth]\ntokens_file = "{root / "tokens.toml"}"\n[centre]\nurl = ""\n'
        )
        day = time.strftime("%Y-%m-%d", time.gmtime(DAY0 + (args.days // 2) * 86_400))
        worst = 0.0
        for fmt in ("json", "csv", "html"):
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "edge.cli", "report", "day", "--config", str(config),
                     "--date", day, "--format", fmt],
                    capture_output=True, cwd=ROOT, check=True,
                )  # fmt: skip
                times.append(time.perf_counter() - t0)
            worst = max(worst, max(times))
            print(f"edge report day --format {fmt}: best {min(times):.2f} s, worst"
                  f" {max(times):.2f} s ({len(done.stdout):,} bytes)")  # fmt: skip
        print(
            f"goal: under {GOAL_S:.0f} s for a {per_day:,}-payment day:"
            f" {'met' if worst < GOAL_S else 'MISSED'} (worst {worst:.2f} s)"
        )
        return 0 if worst < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
