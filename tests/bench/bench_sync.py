"""Benchmark of the node <-> centre sync: outbox drain and mirror bootstrap (not a test).

Run by hand from the repository root:

    .venv/bin/python tests/bench/bench_sync.py [--quick] [--entries 50000] [--bills 1000000]

Part 1, drain. A reference centre runs in its own process on 127.0.0.1 (ephemeral port),
loaded from a TOML config written here (`sync.centre.config.load_settings`) and seeded with
`--accounts` demo bills (`sync.centre.seed.seed_database`, once, then the database file is
copied for each run). For each batch size (1, 50, 500) a fresh node (its own node id, its own
chain, a fresh centre database) is built the way `edge.replication` wires it (`make_session`,
`build(node, session, secret)`): its mirror is bootstrapped from the centre through
`Puller.bootstrap()`, `--entries` payments are put into its outbox through the real path
(`payments.prepare` + `db.write_batched(node.acceptor, call)`, group commits), then a real
`Replayer` calls `step()` on one kept-alive session until it is idle, timed. Batch 1 drains a
smaller sample (`--b1-entries`, default 2,000) and is compared by payments/s. After each run
the centre process is stopped and its database checked: exactly N entries for the node, no
duplicate id or seq, seq 1..N, the same (seq, id, hash) as the node's outbox, every node
entry delivered.

Part 2, bootstrap. A centre with `--bills` bills (seeding time printed separately) and a fresh
node in its own process that runs `Puller.bootstrap()` (real HTTP streaming of the snapshot,
real apply into `edge.db.Database`); the child reports the time, its peak RSS (VmHWM) and
what the mirror holds (bills, cursor), checked against the centre.

Targets (the performance issue): 50,000 entries drained in < 10 s at batch 500; batch 500 >=
20x batch 1 in payments/s; 1,000,000-bill bootstrap < 30 s with node memory < 200 MB. With
other sizes (e.g. --quick: 10,000 entries, 100,000 bills) the time targets are applied as
rates (5,000 payments/s, 33,333 bills/s) and marked "scaled".

`--profile DIR` records every phase with py-spy (raw collapsed stacks, `DIR/*.txt`) and
prints the hottest frames. The same file is the runner of its child processes (`_centre`,
`_bootstrap`). Everything it starts is stopped and the temp dir removed, also on timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SELF = Path(__file__).resolve()
GOV, CYCLE = "DAM", "2026-05"
BATCHES = (1, 50, 500)
AMOUNT = 100  # piastres per payment: every bill has room for many
TARGET_DRAIN_S, TARGET_DRAIN_N = 10.0, 50_000
TARGET_RATIO = 20.0
TARGET_BOOT_S, TARGET_BOOT_N = 30.0, 1_000_000
TARGET_RSS_MB = 200.0


def status_kb(pid: int | str = "self") -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- child: the centre ---------------------------------------------------------------------


def role_centre(config: str) -> None:
    import logging

    from aiohttp import web

    from sync.centre.app import create_app
    from sync.centre.config import load_settings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = load_settings(Path(config))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    port = sock.getsockname()[1]
    app = create_app(settings)

    async def ready(app: web.Application) -> None:  # after the store opened (cleanup_ctx)
        print(f"READY {port} {os.getpid()}", flush=True)

    app.on_startup.append(ready)
    web.run_app(app, sock=sock, access_log=None, print=None, shutdown_timeout=5)


# --- child: a fresh node bootstrapping its mirror ------------------------------------------


def role_bootstrap(spec_json: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(spec_json)
    before = status_kb()
    result = asyncio.run(_bootstrap(spec))
    result["rss_before_kb"] = before.get("VmRSS", 0)
    result["vmhwm_kb"] = status_kb().get("VmHWM", 0)
    result["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result), flush=True)


async def _bootstrap(spec: dict[str, Any]) -> dict[str, Any]:
    from edge import mirror, replication
    from edge.config import Settings
    from edge.node import Node

    data = Path(spec["data_dir"])
    settings = Settings(
        node_id=spec["node"], node_governorate=GOV, node_data_dir=data,
        centre_url=spec["url"], centre_secret_file=Path(spec["secret_file"]),
        **({"centre_timeout_s": spec["timeout"]} if spec.get("timeout") else {}),
    )  # fmt: skip
    node = Node.build(settings)
    db = node.db
    await db.open()
    session = replication.make_session(settings)
    try:
        _, puller = node.replication.build(session, replication.read_secret(settings))
        rss_open = status_kb().get("VmRSS", 0)
        start = time.perf_counter()
        error = None
        try:
            applied = await puller.bootstrap()
        except Exception as exc:  # reported, not raised: the parent prints it in the table
            applied, error = 0, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
        state = db.read(mirror.state)
        rows = await db.read_slow(lambda c: c.execute("SELECT COUNT(*) FROM bills").fetchone()[0])
    finally:
        await session.close()
        await db.close()
    return {
        "seconds": seconds, "applied": applied, "error": error, "cursor": state.cursor,
        "state_bills": state.bills, "rows": rows, "rss_open_kb": rss_open,
        "db_bytes": sum(p.stat().st_size for p in data.glob("edge.db*")),
    }  # fmt: skip


# --- the harness ---------------------------------------------------------------------------


class Aborted(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Aborted("the benchmark ran over its --timeout")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    pid: int = 0
    port: int = 0


@dataclass
class DrainRun:
    batch: int
    entries: int
    node: str
    seconds: float = 0.0
    steps: int = 0
    node_db_s: float = 0.0
    fill_s: float = 0.0
    mirror_s: float = 0.0
    mirror_bills: int = 0
    step_ms: list[float] = field(default_factory=list)
    node_cpu_s: float = 0.0
    centre_cpu_s: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.entries / self.seconds if self.seconds else 0.0


class TimedWriter:
    """The replayer's writer with its time counted (claim + settle on the node's database)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    async def submit(self, fn: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.submit(fn)
        finally:
            self.seconds += time.perf_counter() - start


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[Proc] = []
        self.spies: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="edge-bench-sync-", dir=args.dir))
        self.profile: Path | None = args.profile.resolve() if args.profile else None
        self.load_start = os.getloadavg()
        self.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if self.profile:
            self.profile.mkdir(parents=True, exist_ok=True)

    # --- processes ----------------------------------------------------------------------

    def spawn(self, name: str, cmd: list[str]) -> Proc:
        popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=open(self.tmp / f"{name}.log", "w"),  # noqa: SIM115
            text=True, start_new_session=True, cwd=ROOT,
        )  # fmt: skip
        proc = Proc(name, popen, pid=popen.pid)
        self.procs.append(proc)
        return proc

    def start_centre(self, name: str, config: Path) -> Proc:
        proc = self.spawn(name, [sys.executable, str(SELF), "_centre", str(config)])
        assert proc.popen.stdout is not None
        line = proc.popen.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"{name} did not start: {line!r}\n{self.log_tail(name)}")
        _, port, pid = line.split()
        proc.port, proc.pid = int(port), int(pid)
        return proc

    def log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self, proc: Proc, timeout: float = 15) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)  # its own session, started here
                proc.popen.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def spy(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        if not self.profile:
            return None
        out = self.profile / f"{name}.txt"
        spy = subprocess.Popen(
            [self.py_spy, "record", "-p", str(pid), "-o", str(out), "--format", "raw",
             "--rate", "200", "--threads", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"spy-{name}.log", "w"),  # noqa: SIM115
            start_new_session=True,
        )  # fmt: skip
        self.spies.append(spy)
        time.sleep(0.5)  # attached before the measured part starts
        return spy

    def unspy(self, spy: subprocess.Popen[bytes] | None) -> None:
        if spy is None:
            return
        if spy.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(spy.pid, signal.SIGKILL)
            spy.wait(timeout=5)
        self.spies.remove(spy)

    def cleanup(self) -> None:
        for spy in list(self.spies):
            self.unspy(spy)
        for proc in list(reversed(self.procs)):
            self.stop(proc)
        if self.args.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- centre set-up ------------------------------------------------------------------

    def centre_config(self, where: Path, nodes: list[str]) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        lines = [
            "[centre]", f'data_dir = "{where / "data"}"', 'host = "127.0.0.1"', "port = 0",
            f'governorate = "{GOV}"', "",
        ]  # fmt: skip
        for node in nodes:
            secret = where / f"{node}.secret"
            secret.write_text(f"bench-secret-for-{node}-{os.urandom(16).hex()}\n")
            secret.chmod(0o600)
            lines += [f"[nodes.{node}]", f'governorate = "{GOV}"', f'secret_file = "{secret}"', ""]
        config = where / "centre.toml"
        config.write_text("\n".join(lines))
        return config

    def seed(self, config: Path, bills: int) -> float:
        """Seed through the library (`seed_database`); returns seconds."""
        from sync.centre import seed
        from sync.centre.config import load_settings

        settings = load_settings(config)
        start = time.perf_counter()
        result = asyncio.run(seed.seed_database(settings, bills, CYCLE, seed=1))
        seconds = time.perf_counter() - start
        if result.inserted != bills:
            raise RuntimeError(f"seeded {result.inserted} bills, not {bills}")
        return seconds

    # --- part 1: drain -------------------------------------------------------------------

    def drain_part(self) -> dict[str, Any]:
        args = self.args
        template = self.tmp / "template"
        nodes = [f"bench-b{b}" for b in BATCHES]
        config = self.centre_config(template, nodes)
        seed_s = self.seed(config, args.accounts)
        runs = []
        for batch, node in zip(BATCHES, nodes, strict=True):
            n = min(args.entries, args.b1_entries) if batch == 1 else args.entries
            where = self.tmp / f"drain-b{batch}"
            shutil.copytree(template / "data", where / "data")
            for secret in template.glob("*.secret"):
                shutil.copy(secret, where / secret.name)
                (where / secret.name).chmod(0o600)
            cfg = (template / "centre.toml").read_text().replace(str(template), str(where))
            (where / "centre.toml").write_text(cfg)
            run = DrainRun(batch=batch, entries=n, node=node)
            centre = self.start_centre(f"centre-b{batch}", where / "centre.toml")
            try:
                asyncio.run(self.drain_one(run, where, centre))
            finally:
                self.stop(centre)
            self.verify_centre(run, where)
            runs.append(run)
            print(f"  drained batch {batch:>3}: {n} entries in {run.seconds:.2f} s"
                  f" ({run.rate:,.0f}/s)", file=sys.stderr, flush=True)  # fmt: skip
        return {"seed_s": seed_s, "runs": runs}

    async def drain_one(self, run: DrainRun, where: Path, centre: Proc) -> None:
        from zoneinfo import ZoneInfo

        import outbox
        from edge import payments, replication
        from edge.config import Settings
        from edge.node import Node
        from sync.errors import SyncError

        data = where / "node"
        settings = Settings(
            node_id=run.node, node_governorate=GOV, node_data_dir=data,
            centre_url=f"http://127.0.0.1:{centre.port}",
            centre_secret_file=where / f"{run.node}.secret", centre_batch_size=run.batch,
        )  # fmt: skip
        node = Node.build(settings)
        db = node.db
        await db.open()
        session = replication.make_session(settings)
        try:
            replayer, puller = node.replication.build(session, replication.read_secret(settings))
            start = time.perf_counter()
            run.mirror_bills = await puller.bootstrap()
            run.mirror_s = time.perf_counter() - start

            # Payments through the real path: prepare, then the group-committed Acceptor.
            per_bill = -(-run.entries // max(1, int(run.mirror_bills * 0.5)))
            bill_ids = [
                row[0]
                for row in db.read(
                    lambda c: c.execute(
                        "SELECT bill_id FROM bills WHERE amount - paid >= ? ORDER BY bill_id",
                        (AMOUNT * (per_bill + 1),),
                    ).fetchall()
                )
            ]
            if not bill_ids:
                raise RuntimeError("no bill in the mirror has room for the payments")
            tz = ZoneInfo(settings.node_timezone)
            start = time.perf_counter()
            chunk = 4096
            for lo in range(0, run.entries, chunk):
                calls = [
                    payments.prepare(
                        run.node,
                        "bench",
                        f"{run.node}-{i}",
                        payments.PaymentRequest(bill_ids[i % len(bill_ids)], AMOUNT, "cash", "b"),
                        time.time(),
                        tz,
                    )
                    for i in range(lo, min(run.entries, lo + chunk))
                ]
                replies = await asyncio.gather(
                    *(db.write_batched(node.acceptor, call) for call in calls),
                    return_exceptions=True,
                )
                bad = [r for r in replies if not isinstance(r, payments.Reply) or r.status != 201]
                if bad:
                    raise RuntimeError(f"{len(bad)} payments refused, e.g. {bad[0]!r}")
            run.fill_s = time.perf_counter() - start
            pending = await db.read_slow(lambda c: outbox.stats(c).pending)
            if pending != run.entries:
                raise RuntimeError(f"outbox holds {pending} pending entries, not {run.entries}")

            # The drain: the replayer's own step() until idle, on one kept-alive session.
            timed = TimedWriter(replayer.writer)
            replayer.writer = timed  # type: ignore[assignment]  # bench-only instrumentation
            spy = self.spy(centre.pid, f"drain-b{run.batch}-centre")
            spy_node = self.spy(os.getpid(), f"drain-b{run.batch}-node")
            cpu_node, cpu_centre = time.process_time(), cpu_s(centre.pid)
            verdicts: Counter[str] = Counter()
            start = time.perf_counter()
            while True:
                t = time.perf_counter()
                try:
                    result = await replayer.step()
                except SyncError as exc:  # every attempt of the step failed
                    run.errors.append(str(exc))
                    break
                if result.idle:
                    break
                run.step_ms.append((time.perf_counter() - t) * 1000)
                verdicts.update(result.verdicts)
                if time.perf_counter() - start > self.args.drain_timeout:
                    run.errors.append(f"drain over {self.args.drain_timeout:.0f} s: cut short")
                    break
            run.seconds = time.perf_counter() - start
            run.node_cpu_s = time.process_time() - cpu_node
            run.centre_cpu_s = cpu_s(centre.pid) - cpu_centre
            self.unspy(spy_node)
            self.unspy(spy)
            run.steps, run.node_db_s, run.verdicts = len(run.step_ms), timed.seconds, dict(verdicts)
            states = await db.read_slow(
                lambda c: c.execute(
                    "SELECT state, COUNT(*) FROM outbox_entries GROUP BY state"
                ).fetchall()
            )
            counts = dict(states)
            run.checks["node: every entry delivered"] = (
                counts.get("delivered", 0) == run.entries and len(counts) == 1
            )
            if not run.checks["node: every entry delivered"]:
                run.errors.append(f"node outbox states {counts}")
        finally:
            await session.close()
            await db.close()

    def verify_centre(self, run: DrainRun, where: Path) -> None:
        """After the centre stopped: its ledger against the node's outbox, entry by entry."""
        centre = sqlite3.connect(f"file:{where / 'data' / 'centre.db'}?mode=ro", uri=True)
        node = sqlite3.connect(f"file:{where / 'node' / 'edge.db'}?mode=ro", uri=True)
        try:
            total, ids, seqs, lo, hi, amount = centre.execute(
                "SELECT COUNT(*), COUNT(DISTINCT id), COUNT(DISTINCT seq), MIN(seq), MAX(seq),"
                " SUM(amount) FROM entries WHERE node = ?",
                (run.node,),
            ).fetchone()
            head = centre.execute(
                "SELECT seq FROM chain_heads WHERE node = ?", (run.node,)
            ).fetchone()
            theirs = centre.execute(
                "SELECT seq, id, hash FROM entries WHERE node = ? ORDER BY seq", (run.node,)
            ).fetchall()
            ours = node.execute("SELECT seq, id, hash FROM outbox_entries ORDER BY seq").fetchall()
            verdicts = dict(
                centre.execute(
                    "SELECT verdict, COUNT(*) FROM entries WHERE node = ? GROUP BY verdict",
                    (run.node,),
                ).fetchall()
            )
        finally:
            centre.close()
            node.close()
        n = run.entries
        run.checks[f"centre: exactly {n} entries, no duplicate id/seq"] = (
            total == ids == seqs == n and lo == 1 and hi == n and head is not None and head[0] == n
        )
        run.checks["centre ledger == node outbox (seq, id, hash)"] = theirs == ours
        run.checks["centre: all applied, sum of amounts right"] = (
            verdicts == {"applied": n} and amount == n * AMOUNT
        )
        if not all(run.checks.values()):
            run.errors.append(
                f"centre: {total} entries, {ids} ids, {seqs} seqs, {lo}..{hi}, head {head},"
                f" verdicts {verdicts}, amount {amount}"
            )

    # --- part 2: bootstrap -----------------------------------------------------------------

    def bootstrap_part(self) -> dict[str, Any]:
        where = self.tmp / "boot"
        node = "bench-boot"
        config = self.centre_config(where, [node])
        seed_s = self.seed(config, self.args.bills)
        db = where / "data" / "centre.db"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            last = con.execute("SELECT last FROM change_counter").fetchone()[0]
            centre_bills = con.execute(
                "SELECT COUNT(*) FROM bills WHERE governorate = ?", (GOV,)
            ).fetchone()[0]
        finally:
            con.close()
        centre = self.start_centre("centre-boot", config)
        out: dict[str, Any] = {"seed_s": seed_s, "centre_last": last, "centre_bills": centre_bills}
        try:
            spec = {
                "data_dir": str(where / "node"), "url": f"http://127.0.0.1:{centre.port}",
                "node": node, "secret_file": str(where / f"{node}.secret"),
                "timeout": self.args.centre_timeout,
            }  # fmt: skip
            cmd = [sys.executable, str(SELF), "_bootstrap", json.dumps(spec)]
            if self.profile:
                cmd = [self.py_spy, "record", "-o", str(self.profile / "bootstrap-node.txt"),
                       "--format", "raw", "--rate", "200", "--threads", "--", *cmd]  # fmt: skip
            spy = self.spy(centre.pid, "bootstrap-centre")
            cpu_centre = cpu_s(centre.pid)
            start = time.perf_counter()
            child = self.spawn("bootstrap-node", cmd)
            stdout, _ = child.popen.communicate(timeout=self.args.boot_timeout)
            out["process_s"] = time.perf_counter() - start
            out["centre_cpu_s"] = cpu_s(centre.pid) - cpu_centre
            out["centre_hwm_kb"] = status_kb(centre.pid).get("VmHWM", 0)
            self.unspy(spy)
            self.procs.remove(child)
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            if child.popen.returncode != 0 or not lines:
                raise RuntimeError(
                    f"bootstrap child failed ({child.popen.returncode})\n"
                    f"{self.log_tail('bootstrap-node')}"
                )
            out.update(json.loads(lines[-1]))
        finally:
            self.stop(centre)
        return out

    # --- report ----------------------------------------------------------------------------

    def report(self, drain: dict[str, Any] | None, boot: dict[str, Any] | None) -> tuple[str, bool]:
        args = self.args
        lines: list[str] = []
        targets: list[tuple[str, str, bool]] = []
        add = lines.append
        add(f"bench_sync  commit {code_version()}  python {sys.version.split()[0]}"
            f"  cpus {os.cpu_count()}  tmp on {self.tmp.parent}")  # fmt: skip
        load = (self.load_start[0], os.getloadavg()[0])
        add(f"  load average (1 min) at start {load[0]:.2f}, at end {load[1]:.2f}")
        if max(load) > 0.5 * (os.cpu_count() or 1):
            add("  NOTE: other work was running on this machine: timings are disturbed")
        if drain is not None:
            runs: list[DrainRun] = drain["runs"]
            add("")
            add(f"Part 1: drain (centre seeded with {args.accounts:,} bills in"
                f" {drain['seed_s']:.1f} s; fresh centre db + node per batch size)")  # fmt: skip
            add("batch  entries  steps  drain s  payments/s  ms/step p50/max  node-db ms/step"
                "  node cpu s  centre cpu s")  # fmt: skip
            for r in runs:
                steps = sorted(r.step_ms) or [0.0]
                add(f"{r.batch:>5}  {r.entries:>7,}  {r.steps:>5}  {r.seconds:>7.2f}"
                    f"  {r.rate:>10,.0f}  {steps[len(steps) // 2]:>7.1f}/{steps[-1]:<7.1f}"
                    f"  {1000 * r.node_db_s / max(1, r.steps):>15.1f}"
                    f"  {r.node_cpu_s:>10.2f}  {r.centre_cpu_s:>12.2f}")  # fmt: skip
            if runs and runs[0].entries < args.entries:
                add(f"  (batch 1 drains a sample of {runs[0].entries:,} entries (--b1-entries);"
                    " the batch sizes are compared by payments/s)")  # fmt: skip
            add(
                "  set-up per run (not timed in the drain): mirror bootstrap "
                + ", ".join(f"b{r.batch} {r.mirror_bills:,} bills {r.mirror_s:.2f} s" for r in runs)
                + "; outbox fill "
                + ", ".join(f"b{r.batch} {r.entries / r.fill_s:,.0f}/s" for r in runs if r.fill_s)
            )
            for r in runs:
                for name, ok in r.checks.items():
                    targets.append((f"batch {r.batch}: {name}", "verified" if ok else "MISMATCH",
                                    ok))  # fmt: skip
                if r.errors:
                    add(f"  batch {r.batch} errors: {'; '.join(r.errors)[:600]}")
                    targets.append((f"batch {r.batch}: drain without error", r.errors[0][:60],
                                    False))  # fmt: skip
            by = {r.batch: r for r in runs}
            b500, b1 = by.get(500), by.get(1)
            if b500 is not None:
                if b500.entries == TARGET_DRAIN_N:
                    targets.append((f"drain {TARGET_DRAIN_N:,} at batch 500 < {TARGET_DRAIN_S:.0f} s",
                                    f"{b500.seconds:.2f} s", b500.seconds < TARGET_DRAIN_S))  # fmt: skip
                else:
                    need = TARGET_DRAIN_N / TARGET_DRAIN_S
                    targets.append((f"drain at batch 500 >= {need:,.0f}/s (scaled: {TARGET_DRAIN_N:,}"
                                    f" in < {TARGET_DRAIN_S:.0f} s)",
                                    f"{b500.rate:,.0f}/s, {b500.entries:,} in {b500.seconds:.2f} s",
                                    b500.rate >= need))  # fmt: skip
            if b500 is not None and b1 is not None and b1.rate:
                ratio = b500.rate / b1.rate
                targets.append((f"batch 500 >= {TARGET_RATIO:.0f}x batch 1 (payments/s)",
                                f"{ratio:.1f}x", ratio >= TARGET_RATIO))  # fmt: skip
        if boot is not None:
            add("")
            add(f"Part 2: bootstrap of a fresh node from a {boot['centre_bills']:,}-bill centre")
            add(f"  seeding the centre (seed_database, one transaction): {boot['seed_s']:.1f} s")
            hwm = boot.get("vmhwm_kb", 0) / 1024
            rate = boot["applied"] / boot["seconds"] if boot.get("seconds") else 0.0
            add(f"  Puller.bootstrap(): {boot['applied']:,} bills in {boot['seconds']:.2f} s"
                f" ({rate:,.0f} bills/s); node process wall {boot['process_s']:.2f} s")  # fmt: skip
            add(
                f"  node memory: peak RSS (VmHWM) {hwm:.1f} MB, RSS after imports"
                f" {boot['rss_before_kb'] / 1024:.1f} MB, after db+session"
                f" {boot['rss_open_kb'] / 1024:.1f} MB; mirror db {boot['db_bytes'] / 2**20:.0f} MB"
            )
            add(f"  centre: cpu {boot['centre_cpu_s']:.2f} s, peak RSS"
                f" {boot['centre_hwm_kb'] / 1024:.1f} MB")  # fmt: skip
            if boot.get("error"):
                add(f"  bootstrap error: {boot['error']}")
            n = boot["centre_bills"]
            ok_rows = boot["rows"] == n and boot["state_bills"] == n and boot["applied"] == n
            targets.append((f"mirror holds {n:,} bills (rows, mirror_state, applied)",
                            f"{boot['rows']:,}/{boot['state_bills']:,}/{boot['applied']:,}",
                            ok_rows))  # fmt: skip
            targets.append(("mirror cursor set to the centre's last change_seq",
                            f"{boot['cursor']} (centre {boot['centre_last']})",
                            boot["cursor"] == boot["centre_last"]))  # fmt: skip
            if n == TARGET_BOOT_N:
                targets.append((f"bootstrap {TARGET_BOOT_N:,} bills < {TARGET_BOOT_S:.0f} s",
                                f"{boot['seconds']:.2f} s",
                                boot["seconds"] < TARGET_BOOT_S and not boot.get("error")))  # fmt: skip
            else:
                need = TARGET_BOOT_N / TARGET_BOOT_S
                targets.append((f"bootstrap >= {need:,.0f} bills/s (scaled: {TARGET_BOOT_N:,}"
                                f" in < {TARGET_BOOT_S:.0f} s)", f"{rate:,.0f}/s",
                                rate >= need and not boot.get("error")))  # fmt: skip
            targets.append((f"node peak RSS < {TARGET_RSS_MB:.0f} MB"
                            + ("" if n == TARGET_BOOT_N else f" (at {n:,} bills)"),
                            f"{hwm:.1f} MB", 0 < hwm < TARGET_RSS_MB))  # fmt: skip
        add("")
        width = max((len(t[0]) for t in targets), default=10)
        add(f"{'target / check'.ljust(width)}  {'measured':<34}  result")
        for name, measured, ok in targets:
            add(f"{name.ljust(width)}  {measured:<34}  {'PASS' if ok else 'FAIL'}")
        if self.profile:
            add("")
            add(f"py-spy profiles (raw collapsed stacks) in {self.profile}:")
            for path in sorted(self.profile.glob("*.txt")):
                add(summarise_profile(path))
        return "\n".join(lines), all(t[2] for t in targets)


IDLE_LEAVES = ("EpollSelector.select (selectors.py", "Writer._run (outbox/writer.py")


def summarise_profile(path: Path, top: int = 10) -> str:
    """The hottest lines by self time (leaf frame), idle waits dropped (epoll, writer queue)."""
    own: Counter[str] = Counter()
    samples = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"  {path.name}: missing"
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        if leaf.startswith(IDLE_LEAVES) or "(threading.py" in leaf:
            continue
        samples += int(count)
        name, _, where = leaf.partition(" (")
        parts = where.rstrip(")").split("/")
        own[f"{name} {'/'.join(parts[-2:])}"] += int(count)
    if not samples:
        return f"  {path.name}: no busy samples"
    hot = ", ".join(f"{k} {100 * v / samples:.0f}%" for k, v in own.most_common(top))
    return f"  {path.name}: {samples} busy samples; self time: {hot}"


def code_version() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        return head + (" (+uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_centre":
        role_centre(argv[1])
        return 0
    if argv and argv[0] == "_bootstrap":
        role_bootstrap(argv[1])
        return 0

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=50_000, help="payments drained per run")
    parser.add_argument("--b1-entries", type=int, default=2_000,
                        help="sample drained at batch size 1")  # fmt: skip
    parser.add_argument("--bills", type=int, default=1_000_000, help="bills for the bootstrap")
    parser.add_argument("--accounts", type=int, default=20_000, help="bills for the drain part")
    parser.add_argument("--quick", action="store_true", help="10,000 entries, 100,000 bills (CI)")
    parser.add_argument("--only", choices=("drain", "bootstrap"), help="run one part only")
    parser.add_argument("--dir", default=None, help="where the temp dir goes (its disk!)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles into this dir")
    parser.add_argument(
        "--centre-timeout",
        type=float,
        default=0,
        metavar="S",
        help="the bootstrapping node's centre.timeout_s (default: the node's)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target FAILs")
    parser.add_argument("--timeout", type=float, default=0, help="abort after this many s")
    args = parser.parse_args(argv)
    if args.quick:
        args.entries, args.bills = 10_000, 100_000
    if args.entries < 1 or args.bills < 1 or args.accounts < 100 or args.b1_entries < 1:
        parser.error("sizes must be positive (--accounts >= 100)")
    args.drain_timeout = 60 + args.entries / 100
    args.boot_timeout = 120 + args.bills / 5_000
    timeout = args.timeout or (
        120 + 3 * args.drain_timeout + args.accounts / 2_000 + 2 * args.boot_timeout
    )
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _alarm)
    signal.alarm(int(timeout))
    harness = Harness(args)
    try:
        drain = None if args.only == "bootstrap" else harness.drain_part()
        boot = None if args.only == "drain" else harness.bootstrap_part()
        text, ok = harness.report(drain, boot)
        print(text, flush=True)
        return 1 if args.strict and not ok else 0
    except (Aborted, KeyboardInterrupt) as exc:
        print(f"aborted: {exc or 'interrupted'}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
        harness.cleanup()


if __name__ == "__main__":
    sys.exit(main())
