"""Load benchmark of the node's HTTP API against the targets of the performance issue.

Run by hand (not a pytest test), from the repository root:

    .venv/bin/python tests/bench/bench_api.py [--bills 1000000] [--seconds 10] [--quick]

It seeds a temporary data dir with a large bills mirror and a tokens file, starts the node
(`edge.app.create_app` + `web.run_app`, centre sync off) and a bare aiohttp server as
separate processes on 127.0.0.1, then drives them from other processes:

  a  bare handler          `GET /` -> {"ok": true}, 32 connections
  b  inquiry               `GET /v1/accounts/{account}/bills`, random seeded accounts
  c  inquiry + payments    the same inquiry load while 64 clients `POST /v1/payments`
  d  payments alone        64 paying clients, nothing else (extra, for context)

Inquiry load comes from `wrk` (with a Lua script) when it is installed, else from aiohttp
client processes; payers are always aiohttp clients. The node (and the bare server) are
pinned to CPU 0 and every load generator to CPU 1 when the machine has two or more CPUs.
fsync/fdatasync calls of the node are counted with `strace -f --seccomp-bpf` (only the
traced calls stop the process, so the rest runs at full speed); the writer's own commit and
job counters are read through a bench-only route the runner adds to the app.

The same file is also the runner of every child process (`_node`, `_bare`, `_load`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOV = "DAM"
LAST_CYCLE = (2026, 5)  # each account's latest bill is unpaid (the payers pay it); older ones paid
ACCOUNT_PREFIX = "01"  # accounts are "01" + 8 digits: 0100000000, 0100000001, ...
BENCH_ROUTE = "/_bench/writer"  # added by the runner, not part of the node's API
SELF = Path(__file__).resolve()


def account_of(i: int) -> str:
    return f"{ACCOUNT_PREFIX}{i:08d}"


def cycles_of(n: int) -> list[str]:
    """The last n monthly cycles, oldest first, ending with LAST_CYCLE."""
    year, month = LAST_CYCLE
    months = [year * 12 + month - 1 - k for k in range(n)]
    return [f"{m // 12:04d}-{m % 12 + 1:02d}" for m in reversed(months)]


# --------------------------------------------------------------------------------------------
# Child roles
# --------------------------------------------------------------------------------------------


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def role_node(data_dir: str, tokens_file: str, switch_ms: str = "", loop: str = "asyncio") -> None:
    """Run the node the way `edge serve` does (run_app, no access log), on an ephemeral port."""
    if switch_ms and float(switch_ms):  # diagnostic only (--switch-interval): GIL hand-off
        sys.setswitchinterval(float(switch_ms) / 1000)
    from aiohttp import web

    from edge import config, serving
    from edge.app import create_app
    from edge.node import NODE

    settings = config.Settings(
        node_id="dam-1", node_governorate=GOV, node_data_dir=Path(data_dir),
        auth_tokens_file=Path(tokens_file), http_host="127.0.0.1", http_port=0,
        ups_source="none", storage_min_free_mb=0, centre_url="",
        # Limits off: this bench measures raw capacity from one address and one token.
        limits_inquiries_per_s=0, limits_payments_per_s=0, limits_per_address_per_s=0,
        limits_auth_failures=0,
    )  # fmt: skip
    config.validate(settings)
    app = create_app(settings)

    async def writer_stats(request: web.Request) -> web.Response:
        writer = request.app[NODE].db.writer
        return web.json_response({"commits": writer.commits, "jobs": writer.jobs})

    app.router.add_get(BENCH_ROUTE, writer_stats)
    sock = _listen()
    # http.loop, as `edge serve` picks it (edge.serving.loop_factory).
    factory = serving.loop_factory(settings.replace(http_loop=loop))
    print(f"READY {sock.getsockname()[1]} {os.getpid()}", flush=True)
    web.run_app(
        app, sock=sock, print=None, access_log=None, shutdown_timeout=5.0,
        loop=None if factory is None else factory(),
    )  # fmt: skip


def role_bare(db_path: str = "") -> None:
    import sqlite3

    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", ok)
    if db_path:
        # The floor (phase a2): the bare handler plus the cheapest lookup of an account in the
        # same mirror file: no auth, no overlay, no JSON from SQLite, no middleware.
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)

        async def floor(request: web.Request) -> web.Response:
            row = conn.execute(
                "SELECT count(*) FROM bills WHERE account = ?", (request.match_info["account"],)
            ).fetchone()
            return web.json_response({"bills": row[0]})

        app.router.add_get("/v1/accounts/{account}/bills", floor)
    sock = _listen()
    print(f"READY {sock.getsockname()[1]} {os.getpid()}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=5.0)


@dataclass
class LoadSpec:
    base: str
    mode: str  # bare | inquiry | pay
    connections: int
    seconds: float
    start_at: float
    token: str = ""
    accounts: int = 0
    seed: int = 0


@dataclass
class LoadResult:
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    t_start: float = 0.0
    t_end: float = 0.0
    latencies_us: list[int] = field(default_factory=list)


async def _load(spec: LoadSpec) -> LoadResult:
    import aiohttp

    rng = random.Random(spec.seed)
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=spec.connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    auth = {"Authorization": f"Bearer {spec.token}"} if spec.token else {}
    pid = os.getpid()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        delay = spec.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        result.t_start = time.time()
        deadline = time.monotonic() + spec.seconds
        lat = result.latencies_us
        statuses: dict[int, int] = {}

        async def worker(w: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                i = rng.randrange(spec.accounts) if spec.accounts else 0
                t0 = time.perf_counter()
                try:
                    if spec.mode == "pay":
                        n += 1
                        headers = {**auth, "Idempotency-Key": f"bench-{pid}-{w}-{n}"}
                        body = {
                            "bill_id": f"{GOV}-{cycles_of(1)[0]}-{account_of(i)}",
                            "amount": rng.randint(1, 100),
                            "method": "cash",
                            "cashier": f"bench-{w}",
                        }
                        async with session.post(
                            spec.base + "/v1/payments", json=body, headers=headers
                        ) as resp:
                            await resp.read()
                            status = resp.status
                    else:
                        path = (
                            f"/v1/accounts/{account_of(i)}/bills" if spec.mode == "inquiry" else "/"
                        )
                        async with session.get(spec.base + path, headers=auth) as resp:
                            await resp.read()
                            status = resp.status
                except (TimeoutError, aiohttp.ClientError):
                    result.errors += 1
                    continue
                lat.append(int((time.perf_counter() - t0) * 1e6))
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker(w) for w in range(spec.connections)))
        result.t_end = time.time()
        result.requests = sum(statuses.values())
        result.statuses = {str(k): v for k, v in sorted(statuses.items())}
    return result


def role_load(spec_json: str) -> None:
    spec = LoadSpec(**json.loads(spec_json))
    result = asyncio.run(_load(spec))
    print("RESULT " + json.dumps(asdict(result)), flush=True)


# --------------------------------------------------------------------------------------------
# Parent: seeding, processes, phases, report
# --------------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head}" + (f" + uncommitted changes in {len(dirty)} tracked files" if dirty else "")


class Aborted(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Aborted("the benchmark ran over its --timeout")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    pid: int = 0  # the python process itself (the popen may be strace or taskset)
    port: int = 0


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[Proc] = []
        self.cpus = os.cpu_count() or 1
        self.taskset = shutil.which("taskset") if self.cpus >= 2 else None
        self.wrk = None if args.no_wrk else shutil.which("wrk")
        self.strace = None if args.no_strace else shutil.which("strace")
        self.tmp = Path(tempfile.mkdtemp(prefix="edge-bench-", dir=args.dir))
        self.notes: list[str] = []

    # --- helpers ------------------------------------------------------------------------

    def pin(self, cpu: int) -> list[str]:
        return [self.taskset, "-c", str(cpu)] if self.taskset else []

    def py(self, *role: str) -> list[str]:
        return [sys.executable, str(SELF), *role]

    def spawn(self, name: str, cmd: list[str]) -> Proc:
        popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=open(self.tmp / f"{name}.log", "w"),  # noqa: SIM115
            text=True, start_new_session=True, cwd=ROOT,
        )  # fmt: skip
        proc = Proc(name, popen)
        self.procs.append(proc)
        return proc

    def start_server(self, name: str, cmd: list[str]) -> Proc:
        proc = self.spawn(name, cmd)
        assert proc.popen.stdout is not None
        line = proc.popen.stdout.readline()
        if not line.startswith("READY"):
            log = (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} did not start: {line!r}\n{log}")
        _, port, pid = line.split()
        proc.port, proc.pid = int(port), int(pid)
        return proc

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready after {timeout:.0f} s")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is not None:
                continue
            # The python process first (graceful run_app shutdown); strace then exits by itself.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid or proc.popen.pid, signal.SIGINT)
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)  # its own session, started here
                proc.popen.wait(timeout=5)
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop_all()
        if self.args.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- seeding ------------------------------------------------------------------------

    def seed(self) -> dict[str, Any]:
        import outbox
        from edge import mirror, tokens
        from edge.db import DB_NAME, migrate

        data = self.tmp / "data"
        data.mkdir()
        path = data / DB_NAME
        cycle_names = cycles_of(self.args.cycles)
        cycles = len(cycle_names)
        accounts = self.args.bills // cycles
        t0 = time.perf_counter()
        conn = outbox.writer.connect(str(path), synchronous="OFF")
        migrate(conn)  # the node's own migrations, so the file is exactly what it would open
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        rng = random.Random(42)
        sql = (
            f"INSERT INTO bills ({', '.join(mirror.BILL_FIELDS)})"
            f" VALUES ({', '.join('?' for _ in mirror.BILL_FIELDS)})"
        )

        def rows(lo: int, hi: int) -> Any:
            for i in range(lo, hi):
                account = account_of(i)
                for c, cycle in enumerate(cycle_names):
                    amount = rng.randrange(50_000, 5_000_000)
                    last = c == cycles - 1
                    yield (
                        f"{GOV}-{cycle}-{account}", account, GOV, cycle,
                        "سمير الحلبي", "دمشق، المزة، شارع 12", f"M{account[-6:]}",
                        rng.randrange(50, 900), amount, 0 if last else amount,
                        "2026-07-15", 1, "2026-06-01T00:00:00Z", 0, 0,
                    )  # fmt: skip

        # The mirror's own validation, on a sample, so the rows are what the centre would send.
        for row in rows(0, 10):
            mirror.validate_bill(dict(zip(mirror.BILL_FIELDS, row, strict=True)))
        step = 50_000 // cycles
        for lo in range(0, accounts, step):
            conn.execute("BEGIN")
            conn.executemany(sql, rows(lo, min(accounts, lo + step)))
            conn.execute("COMMIT")
        conn.execute(
            "UPDATE mirror_state SET cursor = 1, as_of = ?, bills = ? WHERE id = 1",
            (time.time(), accounts * cycles),
        )
        conn.execute("PRAGMA journal_mode=WAL")
        plan = " / ".join(
            r[3]
            for r in mirror._run(
                conn,
                "EXPLAIN QUERY PLAN "
                + mirror._SELECT_VIEW.format(where="b.account = ?1")
                + " ORDER BY cycle",
                (account_of(0), *mirror._rule_params(conn, None)),
            )
        )
        conn.close()
        seed_s = time.perf_counter() - t0
        tokens_file = self.tmp / "tokens.toml"
        token = tokens.add_token(tokens_file, "bench-counter", ["inquire", "pay"])
        return {
            "data": data, "tokens_file": tokens_file, "token": token, "accounts": accounts,
            "bills": accounts * cycles, "seed_s": seed_s, "plan": plan,
            "db_mb": path.stat().st_size / 1e6,
        }  # fmt: skip

    # --- load ---------------------------------------------------------------------------

    def wrk_scripts(self, accounts: int) -> tuple[Path, Path]:
        """(inquiry script, bare script); both report exact numbers from wrk's done()."""
        done = """
function done(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d,'
    .. ' "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""
        inquiry = f"""
local accounts = {accounts}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
function init(args)
  math.randomseed(os.time() * 1000 + id * 7919)
end
request = function()
  local n = math.random(0, accounts - 1)
  return wrk.format("GET", string.format("/v1/accounts/{ACCOUNT_PREFIX}%08d/bills", n))
end
"""
        paths = self.tmp / "inquiry.lua", self.tmp / "bare.lua"
        paths[0].write_text(inquiry + done)
        paths[1].write_text(done)
        return paths

    def run_wrk(self, url: str, path: str, seconds: float, script: Path | None) -> dict[str, Any]:
        base = [
            self.wrk, "-t1", f"-c{self.args.connections}", f"-d{max(1, round(seconds))}s",
            "--latency", "--timeout", "10s",
        ]  # fmt: skip
        if script is not None:
            base += ["-s", str(script), "-H", f"Authorization: Bearer {self.token}"]
        else:
            base += ["-s", str(self.bare_script)]
        out = subprocess.run(
            [*self.pin(1), *base, url + path], capture_output=True, text=True,
            timeout=seconds + 30, check=False,
        )  # fmt: skip
        match = re.search(r"^BENCH (\{.*\})$", out.stdout, re.M)
        if not match:
            raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
        raw = json.loads(match.group(1))
        secs = raw["duration_us"] / 1e6
        errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
        return {
            "rps": raw["requests"] / secs, "requests": raw["requests"], "seconds": secs,
            "p50_ms": raw["p50_us"] / 1e3, "p99_ms": raw["p99_us"] / 1e3,
            "non2xx": raw["status"], "errors": errors,
        }  # fmt: skip

    def load_procs(
        self, base: str, mode: str, connections: int, seconds: float, start_at: float, procs: int
    ) -> list[Proc]:
        out = []
        for k in range(procs):
            spec = LoadSpec(
                base=base, mode=mode, connections=max(1, connections // procs), seconds=seconds,
                start_at=start_at, token=self.token if mode != "bare" else "",
                accounts=self.seeded["accounts"] if mode != "bare" else 0,
                seed=random.randrange(1 << 30) + k,
            )  # fmt: skip
            out.append(
                self.spawn(
                    f"load-{mode}-{k}", [*self.pin(1), *self.py("_load", json.dumps(asdict(spec)))]
                )
            )
        return out

    def collect(self, procs: list[Proc], timeout: float) -> dict[str, Any]:
        results = []
        for proc in procs:
            stdout, _ = proc.popen.communicate(timeout=timeout)
            match = re.search(r"^RESULT (\{.*\})$", stdout, re.M)
            if not match:
                log = (self.tmp / f"{proc.name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{proc.name} failed:\n{log}")
            results.append(json.loads(match.group(1)))
            self.procs.remove(proc)
        lat = sorted(x for r in results for x in r["latencies_us"])
        statuses: dict[str, int] = {}
        for r in results:
            for k, v in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        t_start = min(r["t_start"] for r in results)
        t_end = max(r["t_end"] for r in results)
        requests = sum(r["requests"] for r in results)
        ok = sum(v for k, v in statuses.items() if k.startswith("2"))

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] / 1e3 if lat else float("nan")

        return {
            "rps": requests / (t_end - t_start), "requests": requests, "seconds": t_end - t_start,
            "p50_ms": pct(50), "p99_ms": pct(99), "non2xx": requests - ok,
            "errors": sum(r["errors"] for r in results), "statuses": statuses,
            "ok": ok, "ok_rate": ok / (t_end - t_start), "t_start": t_start, "t_end": t_end,
        }  # fmt: skip

    def inquiry_load(self, url: str, path: str, mode: str, seconds: float, start_at: float) -> Any:
        """Start the inquiry/bare load; returns a callable that waits and returns the result."""
        if self.wrk:
            script = self.lua if mode == "inquiry" else None

            def finish() -> dict[str, Any]:
                delay = start_at - time.time()
                if delay > 0:
                    time.sleep(delay)
                return self.run_wrk(url, "/", seconds, script)

            return finish
        procs = self.load_procs(url, mode, self.args.connections, seconds, start_at, 2)
        return lambda: self.collect(procs, seconds + 60)

    # --- measurement --------------------------------------------------------------------

    def cpu_of(self, pid: int) -> float:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)

    def loader_cpu(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def writer_stats(self, node: Proc) -> dict[str, int]:
        url = f"http://127.0.0.1:{node.port}{BENCH_ROUTE}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def machine_busy(self) -> list[float]:
        """CPU seconds busy so far: [all CPUs, cpu0, cpu1, ...] (steal counts as busy)."""
        out = []
        with open("/proc/stat") as fh:
            for line in fh:
                if not line.startswith("cpu"):
                    break
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                    int, line.split()[1:9]
                )
                out.append(
                    (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
                )
        return out

    def phase(self, server: Proc, fn: Any) -> tuple[Any, float, float, float, list[float], float]:
        """(result, server CPU, load CPU, everything else's CPU, [cpu0, cpu1 busy], wall s).

        CPU figures are in cores (1.0 = one CPU fully busy) averaged over the phase; "else"
        is the machine's busy time minus ours: other work on the machine disturbs the run.
        """
        c0, l0, m0, t0 = (
            self.cpu_of(server.pid),
            self.loader_cpu(),
            self.machine_busy(),
            time.time(),
        )
        out = fn()
        wall = time.time() - t0
        m1 = self.machine_busy()
        srv = (self.cpu_of(server.pid) - c0) / wall
        load = (self.loader_cpu() - l0) / wall
        other = max(0.0, (m1[0] - m0[0]) / wall - srv - load)
        per_cpu = [(b - a) / wall for a, b in zip(m0[1:], m1[1:], strict=True)]
        return out, srv, load, other, per_cpu, wall

    @staticmethod
    def fsyncs(calls: list[tuple[float, float | None]], window: dict[str, Any]) -> dict[str, Any]:
        inside = [took for t, took in calls if window["t_start"] <= t <= window["t_end"]]
        times = sorted(x for x in inside if x is not None)
        return {
            "count": len(inside),
            "p50_ms": times[len(times) // 2] * 1e3 if times else float("nan"),
            "p90_ms": times[int(len(times) * 0.9)] * 1e3 if times else float("nan"),
            "busy_s": sum(times),
        }

    # --- the run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        secs = args.seconds
        self.seeded = seed = self.seed()
        self.token = seed["token"]
        print(
            f"seeded {seed['bills']:,} bills ({seed['accounts']:,} accounts x {self.args.cycles} cycles)"
            f" in {seed['seed_s']:.1f} s; edge.db {seed['db_mb']:.0f} MB",
            flush=True,
        )
        if self.wrk:
            self.lua, self.bare_script = self.wrk_scripts(seed["accounts"])

        node_cmd = [*self.pin(0)]
        strace_out = self.tmp / "strace.txt"
        if self.strace:
            node_cmd += [
                self.strace, "-f", "--seccomp-bpf", "-qq", "-ttt", "-T", "-e", "trace=fsync,fdatasync",
                "-e", "signal=none", "-o", str(strace_out),
            ]  # fmt: skip
        node_cmd += self.py(
            "_node", str(seed["data"]), str(seed["tokens_file"]), str(args.switch_interval),
            args.loop,
        )  # fmt: skip
        if args.loop != "asyncio":
            self.notes.append(
                f"the node ran on {args.loop} (http.loop); the bare server on asyncio"
            )
        if args.switch_interval:
            self.notes.append(
                f"diagnostic: the node ran with sys.setswitchinterval({args.switch_interval:g} ms)"
                " instead of CPython's default 5 ms"
            )
        t0 = time.perf_counter()
        node = self.start_server("node", node_cmd)
        self.wait_http(f"http://127.0.0.1:{node.port}/readyz", 300)
        node_ready_s = time.perf_counter() - t0
        db_file = str(Path(seed["data"]) / "edge.db")
        bare = self.start_server("bare", [*self.pin(0), *self.py("_bare", db_file)])
        self.wait_http(f"http://127.0.0.1:{bare.port}/", 30)
        print(
            f"node ready in {node_ready_s:.2f} s (port {node.port}); bare on {bare.port}",
            flush=True,
        )

        node_url, bare_url = f"http://127.0.0.1:{node.port}", f"http://127.0.0.1:{bare.port}"
        inquiry_path = "/v1/accounts/{account}/bills"
        results: dict[str, Any] = {}

        # warm-ups (not measured): interpreter, page cache, connection setup
        warm = min(2.0, secs / 2)
        self.inquiry_load(bare_url, "/", "bare", warm, time.time())()
        self.inquiry_load(node_url, inquiry_path, "inquiry", warm, time.time())()

        print(f"phase a: bare handler, {secs:g} s", flush=True)
        results["a"] = self.phase(bare, self.inquiry_load(bare_url, "/", "bare", secs, time.time()))
        print(f"phase a2: bare handler + one SQLite lookup (the floor), {secs:g} s", flush=True)
        results["a2"] = self.phase(
            bare, self.inquiry_load(bare_url, inquiry_path, "inquiry", secs, time.time())
        )
        print(f"phase b: inquiries, {secs:g} s", flush=True)
        results["b"] = self.phase(
            node, self.inquiry_load(node_url, inquiry_path, "inquiry", secs, time.time())
        )

        print(f"phase c: inquiries + {args.payers} payers, {secs:g} s", flush=True)
        w0 = self.writer_stats(node)

        def mixed() -> tuple[dict[str, Any], dict[str, Any]]:
            start_at = time.time() + 1.5  # the payer process needs a moment to import aiohttp
            payers = self.load_procs(node_url, "pay", args.payers, secs, start_at, 1)
            inq = self.inquiry_load(node_url, inquiry_path, "inquiry", secs, start_at)()
            return inq, self.collect(payers, secs + 60)

        (inq_c, pay_c), *cpu_c = self.phase(node, mixed)
        w1 = self.writer_stats(node)
        results["c"] = (inq_c, *cpu_c)
        results["c_pay"] = (pay_c, *cpu_c)

        print(f"phase d: {args.payers} payers alone, {secs:g} s", flush=True)

        def pay_only() -> dict[str, Any]:
            payers = self.load_procs(node_url, "pay", args.payers, secs, time.time() + 1.5, 1)
            return self.collect(payers, secs + 60)

        w2 = self.writer_stats(node)
        results["d"] = self.phase(node, pay_only)
        w3 = self.writer_stats(node)
        pay_d = results["d"][0]

        self.stop_all()  # strace writes its last lines when the node exits
        fs_c = fs_d = None
        if self.strace and strace_out.exists():
            # "PID 1795315109.915528 fdatasync(8)    = 0 <0.000958>"; calls that other threads
            # interrupted show up as "<unfinished ...>" plus a "resumed" line with the time.
            calls = []
            for m in re.finditer(
                r"^\d+\s+(\d+\.\d+)\s+f(?:data)?sync\((.*)$", strace_out.read_text(), re.M
            ):
                took = re.search(r"<(\d+\.\d+)>\s*$", m.group(2))
                calls.append((float(m.group(1)), float(took.group(1)) if took else None))
            fs_c = self.fsyncs(calls, pay_c)
            fs_d = self.fsyncs(calls, pay_d)
        return {
            "seed": seed, "node_ready_s": node_ready_s, "results": results,
            "writer_c": {"commits": w1["commits"] - w0["commits"], "jobs": w1["jobs"] - w0["jobs"]},
            "writer_d": {"commits": w3["commits"] - w2["commits"], "jobs": w3["jobs"] - w2["jobs"]},
            "fsyncs_c": fs_c, "fsyncs_d": fs_d,
        }  # fmt: skip

    # --- report -------------------------------------------------------------------------

    def report(self, run: dict[str, Any]) -> tuple[str, bool]:
        args, seed, r = self.args, run["seed"], run["results"]
        lines = []

        def cpu_us(key: str) -> float:
            """Server CPU (all threads) per request answered: what a busy machine disturbs
            less than the rate, since other work takes the CPU's time, not the server's."""
            res, cpu, *_, wall = r[key]
            done = res["ok"] if key in ("c_pay", "d") else res["requests"]
            return cpu * wall * 1e6 / done if done else float("nan")

        pinning = (
            "node and bare server pinned to CPU 0; wrk/payer load generators pinned to CPU 1"
            if self.taskset
            else f"NOT pinned ({self.cpus} CPU(s) or no taskset): server and load share CPUs"
        )
        loader = (
            f"wrk (-t1 -c{args.connections}, Lua: random seeded account, Bearer header)"
            if self.wrk
            else f"aiohttp client processes ({args.connections} connections), wrk not found"
        )
        lines += [
            "",
            "== edge node API benchmark ==",
            f"mirror : {seed['bills']:,} bills, {seed['accounts']:,} accounts x {args.cycles} cycles;"
            f" seeded in {seed['seed_s']:.1f} s (plain sqlite3 on the migrated file, 50k rows/txn);"
            f" edge.db {seed['db_mb']:.0f} MB",
            f"node   : ready in {run['node_ready_s']:.2f} s after spawn (open + migrate + quick_check);"
            " centre sync off; synchronous=FULL",
            f"code   : {code_version()}",
            f"cpus   : {self.cpus}; {pinning}",
            f"load   : {loader}; payers: aiohttp, {args.payers} concurrent clients, 1 process,"
            " unique Idempotency-Key, 1-100 piastres on random unpaid bills",
            f"phases : {args.seconds:g} s each (after a short unmeasured warm-up)",
            f"plan   : account inquiry -> {seed['plan']}",
            "",
            f"{'phase':<44}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'non2xx':>7}{'err':>5}"
            f"{'srv CPU':>8}{'µs/req':>7}{'load CPU':>9}{'others':>7}{'cpu0':>6}{'cpu1':>6}",
        ]

        def row(label: str, key: str, rate_key: str = "rps") -> None:
            res, cpu, lcpu, other, per_cpu, _ = r[key]
            cores = "".join(f"{x:>6.0%}" for x in per_cpu[:2])
            lines.append(
                f"{label:<44}{res[rate_key]:>8.0f}{res['p50_ms']:>8.2f}{res['p99_ms']:>8.2f}"
                f"{res['non2xx']:>7}{res['errors']:>5}{cpu:>8.0%}{cpu_us(key):>7.0f}{lcpu:>9.0%}"
                f"{other:>7.0%}{cores}"
            )

        row('a  bare aiohttp GET / -> {"ok": true}', "a")
        row("a2 bare + count(*) of the account's bills", "a2")
        row("b  inquiry GET /v1/accounts/{a}/bills", "b")
        row(f"c  inquiry, while {args.payers} clients pay", "c")
        row(f"c  payments (201/s), {args.payers} clients", "c_pay", "ok_rate")
        row(f"d  payments alone (201/s), {args.payers} clients", "d", "ok_rate")
        pay_c, pay_d = r["c_pay"][0], r["d"][0]
        lines += [
            "   CPU columns: cores busy on average (100% = one CPU). srv = the server process"
            " (all threads); µs/req = its CPU per request answered (c: per inquiry and per"
            " payment, of the whole phase's CPU); load = wrk/payers (c: both); others = the rest"
            " of the machine; cpu0/cpu1 = how busy each CPU was",
            f"   payment statuses: c {pay_c['statuses']}  d {pay_d['statuses']}",
        ]
        wc, wd = run["writer_c"], run["writer_d"]
        fs_c, fs_d = run["fsyncs_c"], run["fsyncs_d"]
        for name, w, fs, pay in (("c", wc, fs_c, pay_c), ("d", wd, fs_d, pay_d)):
            jobs = f"{w['jobs'] / w['commits']:.1f}" if w["commits"] else "n/a"
            if fs is not None and pay["ok"]:
                sync = (
                    f"{fs['count']} fsync+fdatasync (strace) = {fs['count'] / pay['ok']:.3f} per"
                    f" payment; each took p50 {fs['p50_ms']:.2f} / p90 {fs['p90_ms']:.2f} ms,"
                    f" {fs['busy_s'] / pay['seconds']:.0%} of the phase in fsync"
                )
            else:
                sync = "fsyncs not counted (no strace)"
            lines.append(
                f"   {name}: {pay['ok']} payments acknowledged; {sync}; writer: {w['commits']}"
                f" commits, {w['jobs']} jobs, {jobs} jobs/commit"
            )
        if max(v[2] for k, v in r.items() if k != "c_pay") > 0.9:
            self.notes.append(
                "a load generator used > 90% of its CPU: it, not the server, may be the limit"
            )
        busiest = max(v[3] for v in r.values())
        if busiest > 0.15:
            self.notes.append(
                f"other processes used up to {busiest:.0%} of a CPU during a phase: the machine"
                " was not quiet, so these numbers are disturbed; rerun on an idle machine"
            )

        a, a2, b, c = r["a"][0], r["a2"][0], r["b"][0], r["c"][0]
        ratio_ab = b["rps"] / a["rps"]
        # "At 64 concurrent paying clients": phase d. Phase c (the same payers beside 32 wrk
        # inquiry connections) is shown too, but its split of one CPU between the two loads
        # says more about the mix of connections than about what payments can do.
        if fs_d is not None and pay_d["ok"]:
            fsync_per, fsync_how = fs_d["count"] / pay_d["ok"], "strace"
            fsync_c = f"; c: {fs_c['count'] / pay_c['ok']:.3f}" if fs_c and pay_c["ok"] else ""
        else:  # WAL + synchronous=FULL: one WAL sync per commit (checkpoints not counted)
            fsync_per = wd["commits"] / pay_d["ok"] if pay_d["ok"] else float("inf")
            fsync_how, fsync_c = "writer commits, strace unavailable: a lower bound", ""
        ratio_pay = pay_d["ok_rate"] / b["rps"]
        targets = [
            (
                "inquiry throughput >= 0.6x bare handler",
                f"b/a = {ratio_ab:.2f} (floor a2/a = {a2['rps'] / a['rps']:.2f}; by server CPU"
                f" per request {cpu_us('a') / cpu_us('b'):.2f}, floor"
                f" {cpu_us('a') / cpu_us('a2'):.2f})",
                ratio_ab >= 0.6,
            ),
            (
                f"inquiry p99 < 10 ms at {args.connections} connections (b)",
                f"p99 = {b['p99_ms']:.2f} ms (under payments, c: {c['p99_ms']:.2f} ms)",
                b["p99_ms"] < 10,
            ),
            (
                f"<= 0.5 fsync per acknowledged payment at {args.payers} payers (d)",
                f"{fsync_per:.3f} ({fsync_how}{fsync_c})",
                fsync_per <= 0.5,
            ),
            (
                f"payment throughput at {args.payers} payers >= 0.4x inquiry throughput",
                f"d payments / b inquiries = {ratio_pay:.2f}"
                f" (c, beside the inquiry load: {pay_c['ok_rate'] / b['rps']:.2f}; by server CPU"
                f" per request {cpu_us('b') / cpu_us('d'):.2f})",
                ratio_pay >= 0.4,
            ),
        ]
        lines += ["", "targets (from the issue)"]
        for name, value, ok in targets:
            lines.append(f"  {'PASS' if ok else 'FAIL'}  {name:<58} {value}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines), all(ok for _, _, ok in targets)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_node":
        role_node(*argv[1:5])
        return 0
    if argv and argv[0] == "_bare":
        role_bare(*argv[1:2])
        return 0
    if argv and argv[0] == "_load":
        role_load(argv[1])
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bills", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--quick", action="store_true", help="100k bills, 3 s per phase (CI)")
    parser.add_argument("--cycles", type=int, default=4, help="bills (months) per account")
    parser.add_argument("--connections", type=int, default=32, help="inquiry connections")
    parser.add_argument("--payers", type=int, default=64, help="concurrent paying clients")
    parser.add_argument(
        "--switch-interval", type=float, default=0, metavar="MS",
        help="diagnostic: run the node with this GIL switch interval (CPython default 5 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="the node's http.loop (the bare server stays on asyncio, so b/a compares)",
    )  # fmt: skip
    parser.add_argument("--no-wrk", action="store_true", help="use aiohttp clients, not wrk")
    parser.add_argument("--no-strace", action="store_true", help="do not count fsyncs")
    parser.add_argument("--dir", default=None, help="where the temp data dir goes (its disk!)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target FAILs")
    parser.add_argument("--timeout", type=float, default=0, help="abort after this many s")
    args = parser.parse_args(argv)
    if args.quick:
        args.bills, args.seconds = 100_000, 3.0
    if not 1 <= args.cycles <= 12:
        parser.error("--cycles must be 1..12")
    if args.bills < args.cycles:
        parser.error("--bills too small")
    timeout = args.timeout or (120 + args.bills / 10_000 + 6 * (args.seconds + 25))
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _alarm)
    signal.alarm(int(timeout))
    harness = Harness(args)
    try:
        run = harness.run()
        text, ok = harness.report(run)
        print(text, flush=True)
        if args.json:
            out = {k: v for k, v in run.items() if k != "seed"}
            out["seed"] = {k: str(v) if isinstance(v, Path) else v for k, v in run["seed"].items()}
            out["seed"].pop("token", None)
            for res in out["results"].values():
                res[0].pop("latencies_us", None)
            args.json.write_text(json.dumps(out, indent=2, default=str))
        return 1 if args.strict and not ok else 0
    except (Aborted, KeyboardInterrupt) as exc:
        print(f"aborted: {exc or 'interrupted'}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
        harness.cleanup()


if __name__ == "__main__":
    sys.exit(main())
