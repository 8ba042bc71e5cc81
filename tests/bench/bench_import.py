"""Measurement of `edge centre import` (issue 19; not a test): peak RSS and time of a billing
export of `--rows` rows (default 2,000,000), imported as an operator runs it.

Run by hand from the repository root:

    .venv/bin/python tests/bench/bench_import.py [--rows 2000000] [--root /other/checkout]

A CSV of demo bills (Arabic names and addresses, as `edge centre seed` makes them) is written
to a temporary directory, streamed, then `edge centre import` runs in its own process
twice: on an empty centre (every row new) and again (every row unchanged). Each run prints
its wall time and the child's peak RSS (`ru_maxrss` from wait4). The goal: 2M rows under
150 MB. `--root` runs another checkout's code on the same file (a before/after comparison).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sync.centre import seed  # noqa: E402
from sync.centre.bills import CSV_HEADER  # noqa: E402

SECRET = "bench-import-secret-0123456789-0123456789"


def write_csv(path: Path, rows: int, cycle: str = "2026-05") -> None:
    rng = random.Random(19)
    due = seed.due_date(cycle)
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(CSV_HEADER)
        for i in range(rows):
            name, address = seed.subscriber(rng, "DAM")
            kwh = seed.consumption(rng)
            amount = seed.bill_amount(kwh)
            out.writerow((f"{1_000_000_000 + i * 7}", cycle, name, address,
                          f"EM-{rng.randint(10_000_000, 99_999_999)}", kwh, amount,
                          seed.paid_share(rng, amount), due))  # fmt: skip


def run(root: Path, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS of the child in MB, its stdout) of one `edge` command."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # cwd too: `python -m` puts the working directory first on sys.path.
        child = subprocess.Popen([sys.executable, "-m", "edge.cli", *args], stdout=out,
                                 stderr=err, env={**os.environ, "PYTHONPATH": str(root)},
                                 cwd=root)  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"edge {' '.join(args)} failed:\n{text}\n{errors}")
    return seconds, usage.ru_maxrss // 1024, text.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        data = base / "bills.csv"
        started = time.perf_counter()
        write_csv(data, args.rows)
        print(f"wrote {args.rows:,} rows, {data.stat().st_size / 1e6:.0f} MB,"
              f" in {time.perf_counter() - started:.1f} s")  # fmt: skip
        secret = base / "dam-1.secret"
        secret.write_text(SECRET + "\n")
        secret.chmod(0o600)
        config = base / "centre.toml"
        config.write_text(f'[centre]\ndata_dir = "{base / "centre"}"\ngovernorate = "DAM"\n'
                          f'[nodes.dam-1]\ngovernorate = "DAM"\nsecret_file = "{secret}"\n')  # fmt: skip
        for label in ("empty centre", "again (unchanged)"):
            seconds, rss, out = run(args.root, "centre", "import", "--config", str(config),
                                    str(data))  # fmt: skip
            print(f"import, {label}: {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s),"
                  f" peak RSS {rss} MB: {out}")  # fmt: skip
        with closing(sqlite3.connect(base / "centre" / "centre.db")) as conn:
            held = conn.execute("SELECT COUNT(*) FROM bills").fetchone()[0]
        assert held == args.rows, f"the centre holds {held} bills, not {args.rows}"


if __name__ == "__main__":
    main()
