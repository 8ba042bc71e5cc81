"""Benchmark of a bills transfer file (issue 18; not a test): size and time to export a
snapshot at the centre and to import it into a fresh node's mirror, beside the live bootstrap.

Run by hand from the repository root:

    .venv/bin/python tests/bench/bench_transfer.py [--bills 1000000] [--live]

A centre database is seeded with `--bills` demo bills (`edge centre seed`, timed apart), then
`edge centre export bills` and `edge import bills` run as the operator runs them, each in its
own process (wall time, peak RSS of the child). The import is checked: the mirror holds every
bill and the snapshot's cursor. `--live` also runs bench_sync.py's bootstrap part on the same
number of bills (the live snapshot stream into a fresh node) for the comparison the issue
asks: the file's import should be at least as fast.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench-transfer-secret-0123456789-0123456789"


def run(*args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS of this child in MB, stdout) of one `edge` command."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "edge.cli", *args], stdout=out,
                                 stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if child.returncode:
        raise SystemExit(f"edge {' '.join(args)} failed:\n{text}\n{errors}")
    return seconds, usage.ru_maxrss // 1024, text.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bills", type=int, default=1_000_000)
    parser.add_argument("--live", action="store_true", help="also time the live bootstrap")
    parser.add_argument("--quick", action="store_true", help="100,000 bills (for CI)")
    args = parser.parse_args()
    if args.quick:
        args.bills = 100_000
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        base = Path(tmp)
        secret = base / "dam-1.secret"
        secret.write_text(SECRET + "\n")
        secret.chmod(0o600)
        centre = base / "centre.toml"
        centre.write_text(f'[centre]\ndata_dir = "{base / "centre"}"\ngovernorate = "DAM"\n'
                          f'[nodes.dam-1]\ngovernorate = "DAM"\nsecret_file = "{secret}"\n')  # fmt: skip
        node = base / "edge.toml"
        node.write_text(f'[node]\nid = "dam-1"\ngovernorate = "DAM"\ndata_dir = "{base / "node"}"\n'
                        f'[centre]\nurl = ""\nsecret_file = "{secret}"\n')  # fmt: skip
        seed_s, _, _ = run("centre", "seed", "--config", str(centre), "--bills", str(args.bills),
                           "--seed", "7")  # fmt: skip
        file = base / "bills.xfer"
        export_s, export_mb, _ = run("centre", "export", "bills", "--config", str(centre),
                                     "--node", "dam-1", "--to", str(file))  # fmt: skip
        size = file.stat().st_size
        import_s, import_mb, out = run("import", "bills", str(file), "--config", str(node))
        with closing(sqlite3.connect(base / "node" / "edge.db")) as conn:
            bills, cursor = conn.execute("SELECT bills, cursor FROM mirror_state").fetchone()
        with closing(sqlite3.connect(base / "centre" / "centre.db")) as conn:
            (last,) = conn.execute("SELECT last FROM change_counter").fetchone()
        assert bills == args.bills and cursor == last, (bills, cursor, last, out)
        print(f"bills transfer file of {args.bills:,} bills (seeding {seed_s:.1f} s, not timed)")
        print(
            f"  size: {size / 1e6:.1f} MB ({size / args.bills:.0f} bytes a bill, gzip +"
            " AES-256-CTR + HMAC)"
        )
        print(f"  export (edge centre export bills): {export_s:.1f} s, peak RSS {export_mb} MB")
        print(
            f"  import (edge import bills): {import_s:.1f} s, {args.bills / import_s:,.0f}"
            f" bills/s, peak RSS {import_mb} MB; mirror {bills:,} bills, cursor {cursor}"
        )
    if args.live:
        bench = ROOT / "tests" / "bench" / "bench_sync.py"
        subprocess.run([sys.executable, str(bench), "--only", "bootstrap", "--bills",
                        str(args.bills)], check=False)  # fmt: skip


if __name__ == "__main__":
    main()
