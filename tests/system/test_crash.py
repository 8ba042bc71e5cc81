"""kill -9 a payment writer at random moments: no acknowledged payment is ever lost."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import wait_until

import outbox
from edge.db import DB_NAME
from outbox.ids import ENTRY_ID

ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 30
TASKS = 16


@dataclass
class Round:
    acknowledged: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)


def run_and_kill(data: Path, rng: random.Random, *, before_ready: bool) -> Round:
    """Start the writer, kill -9 it after a random delay; return what it acknowledged."""
    env = {
        **os.environ,
        # tests/: the writer takes its bills from helpers.make_bill.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")])
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(data), str(TASKS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    state = Round()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cut off mid-line by the kill: never acknowledged
            line = raw.decode().strip()
            if line == "ready":
                state.ready.set()
            else:
                state.acknowledged.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        if before_ready:
            time.sleep(rng.uniform(0.0, 0.15))  # while opening, recovering, seeding
        else:
            wait_until(lambda: state.ready.is_set() or proc.poll() is not None, 20,
                       "the writer to become ready", every=0.02)  # fmt: skip
            time.sleep(rng.uniform(0.05, 0.4))
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        reader.join()
        assert proc.stdout is not None and proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"the writer died by itself:\n{stderr}"
    return state


def audit(path: Path) -> tuple[str, set[str], int, int]:
    """integrity_check, stored payment ids, entries whose chain verified, payments joined."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT o.id FROM payments p JOIN outbox_entries o ON o.seq = p.seq"
            )
        }
        last_seq, _ = outbox.verify_chain(outbox.iter_entries(conn))
        joined = conn.execute(
            "SELECT COUNT(*) FROM payments p JOIN outbox_entries o ON o.seq = p.seq"
        ).fetchone()[0]
    return integrity, stored, last_seq, joined


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_no_acknowledged_payment(tmp_path: Path):
    seed = int(os.environ.get("EDGE_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    data = tmp_path / "data"
    previous: set[str] = set()
    acknowledged_total = unacknowledged_kept = rounds_with_acks = 0
    started = time.monotonic()

    for n in range(ROUNDS):
        where = f"seed={seed} round={n} (rerun with EDGE_CRASH_SEED={seed})"
        state = run_and_kill(data, rng, before_ready=n > 0 and rng.random() < 0.2)
        acknowledged = set(state.acknowledged)
        assert len(acknowledged) == len(state.acknowledged), f"an id acked twice; {where}"
        assert all(ENTRY_ID.match(pid) for pid in acknowledged), f"garbled output; {where}"

        integrity, stored, last_seq, joined = audit(data / DB_NAME)
        lost = acknowledged - stored
        assert integrity == "ok", f"integrity_check: {integrity}; {where}"
        assert not lost, f"{len(lost)} acknowledged payments lost, e.g. {sorted(lost)[:3]}; {where}"
        assert previous <= stored, f"payments from earlier rounds vanished; {where}"
        assert last_seq == joined == len(stored), f"payments and outbox disagree; {where}"

        acknowledged_total += len(acknowledged)
        unacknowledged_kept += len(stored - previous - acknowledged)
        rounds_with_acks += bool(acknowledged)
        previous = stored

    assert rounds_with_acks >= ROUNDS // 2, (
        f"too few rounds got to acknowledge anything; seed={seed}"
    )
    print(
        f"\ncrash test seed={seed}: {ROUNDS} kill -9 rounds in {time.monotonic() - started:.1f}s,"
        f" {acknowledged_total} acknowledged payments checked, 0 lost,"
        f" {unacknowledged_kept} committed but not yet acknowledged when killed,"
        f" {len(previous)} payments in the database"
    )
