"""Benchmark of the national centre on SQLite and on PostgreSQL (not a test).

Run by hand from the repository root (PostgreSQL's binaries from Debian's `postgresql`):

    .venv/bin/python tests/bench/bench_centre_pg.py [--quick] [--nodes 14] [--entries 50000]
        [--bills 1500000] [--only ingest|snapshot] [--json FILE]

Part 1, ingest: `--nodes` simulated nodes (one per governorate, `dam-1`, `rda-1`, ...) each
replay `--entries` queued payments at once, in signed batches of `--batch` (500, the node's
default), the way a node's replayer does after a national outage: the chain continues from
the centre's head, every answer's signature is checked, a batch that fails (503, a closed
connection) is sent again after 0.1 s. The nodes run as asyncio tasks in a child process of
their own. The centre is real `edge centre serve --port P` processes on 127.0.0.1: one on
SQLite (`synchronous=FULL`), one on PostgreSQL and two on PostgreSQL (the nodes split over
the two as a load balancer would). Two processes on one SQLite file is not a supported set-up
(one writer per file, nonces per process) and is not measured. Printed: entries/s and time to
drain (the slowest node), the CPU each part used, and what else ran on the machine meanwhile.
Checked after each run: every node's entries are at the centre exactly once, its chain head is
the node's last hash, every verdict `applied`.

Part 3, move: the SQLite centre part 1 filled, moved into a fresh PostgreSQL database by
`edge centre migrate-to-postgres` (the whole command: COPY in one transaction, then the
verification reading both sides): its time and its `verified` line.

Part 2, snapshot: a PostgreSQL centre with `--bills` bills of one governorate (seeded through
the store's import, COPY) and one centre process; a fresh node in its own process bootstraps
its mirror from it (bench_sync.py's `_bootstrap` child: `Puller.bootstrap()`, real HTTP
streaming, real apply); printed: time, bills/s, the node's peak RSS (VmHWM), the centre
process's and the PostgreSQL backends' peak RSS.

The PostgreSQL cluster is a throwaway one (tests/pgcluster.py) with production durability
(`fsync`, `full_page_writes` and `synchronous_commit` on). `--quick`: 14 nodes x 500 entries,
20,000 bills (about a minute; CI could run it). Everything started is stopped and the temp
dir removed, also on timeout (`--timeout`). Exit 0, or 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_sync import cpu_s, status_kb  # noqa: E402
from helpers import free_port  # noqa: E402

SELF = Path(__file__).resolve()
BENCH_SYNC = SELF.parent / "bench_sync.py"
GOVERNORATES = ("DAM", "RDA", "ALE", "HMS", "HAM", "LAT", "TAR", "IDL", "RAQ", "DEZ", "HAS",
                "DAR", "SWE", "QUN")  # fmt: skip
CYCLE, DAY = "2026-11", "20261201"
AMOUNT = 100  # piastres per payment
BILL_AMOUNT = 50_000_000  # every bill has room for all its payments
SEED_CHUNK = 50_000


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all CPUs), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    out.append(int(entry.name))
    return out


# --- child: the simulated nodes ------------------------------------------------------------


def role_nodes(spec_json: str) -> None:
    import resource

    result = asyncio.run(_nodes(json.loads(spec_json)))
    used = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = used.ru_utime + used.ru_stime
    print(json.dumps(result), flush=True)


async def _nodes(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp
    import msgpack

    import outbox
    from outbox.ids import new_entry_id
    from sync import answers, protocol, receiptcode, signing

    path_of = "/v1/nodes/{}/outbox"
    start = asyncio.Event()

    async def node(i: int, me: dict[str, Any], session: aiohttp.ClientSession) -> dict[str, Any]:
        nid, gov, secret = me["id"], me["gov"], me["secret"].encode()
        url = spec["urls"][i % len(spec["urls"])] + path_of.format(nid)
        code, accounts = receiptcode.default_code(nid), spec["accounts"]
        seq, prev, retries, verdicts = 0, outbox.GENESIS, 0, {}
        await start.wait()
        began = time.perf_counter()
        while seq < spec["entries"]:
            batch = []
            for _ in range(min(spec["batch"], spec["entries"] - seq)):
                seq += 1
                eid = new_entry_id(nid)
                account = f"{seq % accounts + 1:010d}"  # the bills part 1 seeded
                payload = msgpack.packb(
                    {"payment_id": eid, "bill_id": f"{gov}-{CYCLE}-{account}", "account": account,
                     "amount": AMOUNT, "channel": "counter-1", "idempotency_key": eid,
                     "method": "cash", "cashier": "c1", "accepted_at": "2026-12-01T08:00:00.000Z",
                     "receipt": receiptcode.receipt_number(gov, code, DAY, seq)},
                    use_bin_type=True,
                )  # fmt: skip
                digest = outbox.entry_hash(prev, seq, eid, "payment", payload)
                batch.append(protocol.WireEntry(seq, eid, "payment", payload, prev, digest))
                prev = digest
            body = protocol.encode_batch(nid, batch)
            while True:
                headers = signing.sign(secret, nid, "POST", path_of.format(nid), body,
                                       int(time.time()))  # fmt: skip
                headers["Content-Type"] = protocol.CONTENT_TYPE
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        raw, status, answer = await resp.read(), resp.status, dict(resp.headers)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    status, raw, answer = 0, b"", {}
                if status == 200:
                    answers.check_answer(secret, headers[signing.SIGNATURE_HEADER], status,
                                         answer, raw)  # fmt: skip
                    reply = protocol.decode_reply(raw)
                    if reply.acked_seq != seq:
                        raise RuntimeError(f"{nid}: acked {reply.acked_seq}, sent up to {seq}")
                    for v in reply.results:
                        verdicts[v.verdict] = verdicts.get(v.verdict, 0) + 1
                    break
                if 400 <= status < 500:
                    raise RuntimeError(f"{nid}: refused {status} {raw[:300]!r}")
                retries += 1
                await asyncio.sleep(0.1)
        return {"node": nid, "seconds": time.perf_counter() - began, "seq": seq, "hash": prev,
                "retries": retries, "verdicts": verdicts}  # fmt: skip

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks = [asyncio.create_task(node(i, me, session)) for i, me in enumerate(spec["nodes"])]
        began = time.perf_counter()
        start.set()
        results = await asyncio.gather(*tasks)
        seconds = time.perf_counter() - began
    return {"seconds": seconds, "nodes": results}


# --- the harness ---------------------------------------------------------------------------


class Aborted(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Aborted("the benchmark ran over its --timeout")


@dataclass
class Ingest:
    store: str
    processes: int
    nodes: int
    entries: int
    seconds: float = 0.0
    slowest_s: float = 0.0
    retries: int = 0
    centre_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    load_cpu_s: float = 0.0
    others_cpu_s: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)
    data_dir: str = ""  # the SQLite centre's, for part 3

    @property
    def total(self) -> int:
        return self.nodes * self.entries

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="edge-bench-centre-pg-"))
        self.procs: list[subprocess.Popen[str]] = []
        self.cluster: Any = None

    # --- processes ----------------------------------------------------------------------

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[str]:
        with (self.tmp / f"{name}.log").open("a") as log:
            popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                     start_new_session=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        self.procs.append(popen)
        return popen

    def stop(self, popen: subprocess.Popen[str]) -> None:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)  # its own session, started here
                popen.wait(timeout=5)
        if popen in self.procs:
            self.procs.remove(popen)

    def log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
        return ""

    def cleanup(self) -> None:
        for popen in list(self.procs):
            self.stop(popen)
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def pg(self) -> Any:
        if self.cluster is None:
            from pgcluster import Cluster, bindir

            found = bindir()
            if found is None:
                raise RuntimeError("PostgreSQL is absent (apt-get install postgresql)")
            self.cluster = Cluster.start(found)
            # Production durability, not the tests' speed settings.
            for key in ("fsync", "full_page_writes", "synchronous_commit"):
                self.cluster.psql(f"ALTER SYSTEM SET {key} = on")
            self.cluster.psql("ALTER SYSTEM SET shared_buffers = '256MB'")
            self.cluster.restart()
        return self.cluster

    def postgres_pids(self) -> list[int]:
        if self.cluster is None:
            return []
        head = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        return [head, *children(head)]

    # --- a centre -----------------------------------------------------------------------

    def config(
        self, where: Path, store: str, govs: tuple[str, ...]
    ) -> tuple[Path, list[dict[str, str]]]:
        where.mkdir(parents=True)
        database = f'database = "{self.pg().create_database()}"\n' if store == "postgresql" else ""
        text = f'[centre]\ndata_dir = "{where / "data"}"\nhost = "127.0.0.1"\n{database}'
        nodes = []
        for gov in govs:
            nid, secret = f"{gov.lower()}-1", f"bench-secret-{gov}-{os.urandom(16).hex()}"
            path = where / f"{nid}.secret"
            path.write_text(secret + "\n")
            path.chmod(0o600)
            text += f'[nodes.{nid}]\ngovernorate = "{gov}"\nsecret_file = "{path}"\n'
            nodes.append({"id": nid, "gov": gov, "secret": secret})
        config = where / "centre.toml"
        config.write_text(text)
        return config, nodes

    def seed(self, config: Path, govs: tuple[str, ...], per_gov: int) -> float:
        return asyncio.run(self._seed(config, govs, per_gov))

    async def _seed(self, config: Path, govs: tuple[str, ...], per_gov: int) -> float:
        from sync.centre.bills import BillInput
        from sync.centre.config import load_settings
        from sync.centre.connect import open_store

        store = open_store(load_settings(config))
        await store.open()
        began = time.perf_counter()
        try:
            for gov in govs:
                for lo in range(0, per_gov, SEED_CHUNK):
                    rows = [BillInput(f"{i:010d}", CYCLE, f"Subscriber {i}", f"Street {i % 997}",
                                      f"M{i:08d}", 100, BILL_AMOUNT, 0, "2026-12-31")
                            for i in range(lo + 1, min(per_gov, lo + SEED_CHUNK) + 1)]  # fmt: skip
                    await store.upsert_bills(gov, rows, time.time())
        finally:
            await store.close()
        return time.perf_counter() - began

    def serve(self, config: Path, name: str) -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        popen = self.spawn(name, [sys.executable, "-m", "edge.cli", "centre", "serve",
                                  "--config", str(config), "--port", str(port)])  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        import urllib.request

        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    return popen, url
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer:\n{self.log_tail(name)}") from None
                time.sleep(0.1)

    def at_centre(self, config: Path) -> tuple[dict[str, int], dict[str, tuple[int, str]], int]:
        async def read() -> tuple[dict[str, int], dict[str, tuple[int, str]], int]:
            from sync.centre.config import load_settings
            from sync.centre.connect import open_store

            store = open_store(load_settings(config))
            await store.open()
            try:
                counts = await store.query("SELECT node, count(*), count(DISTINCT seq) FROM entries"
                                           " GROUP BY node")  # fmt: skip
                heads = await store.query("SELECT node, seq, hash FROM chain_heads")
                applied = await store.query(
                    "SELECT count(*) FROM entries WHERE verdict = 'applied'"
                )
            finally:
                await store.close()
            return ({str(r[0]): int(r[1]) if r[1] == r[2] else -1 for r in counts},
                    {str(r[0]): (int(r[1]), str(r[2])) for r in heads}, int(applied[0][0]))  # fmt: skip

        return asyncio.run(read())

    # --- part 1 -------------------------------------------------------------------------

    def ingest(self, store: str, processes: int) -> Ingest:
        args = self.args
        govs = GOVERNORATES[: args.nodes]
        where = self.tmp / f"ingest-{store}-{processes}"
        run = Ingest(store, processes, len(govs), args.entries, data_dir=str(where / "data"))
        config, nodes = self.config(where, store, govs)
        per_gov = max(1, min(args.accounts, args.entries))
        self.seed(config, govs, per_gov)
        centres = [self.serve(config, f"centre-{store}-{processes}-{n}") for n in range(processes)]
        spec = {"urls": [url for _, url in centres], "nodes": nodes, "entries": args.entries,
                "batch": args.batch, "accounts": per_gov}  # fmt: skip
        pids = [p.pid for p, _ in centres]
        before = ([cpu_s(p) for p in pids], sum(cpu_s(p) for p in self.postgres_pids()),
                  machine_busy_s())  # fmt: skip
        load = self.spawn(f"nodes-{store}-{processes}", [sys.executable, str(SELF), "_nodes",
                                                         json.dumps(spec)])  # fmt: skip
        out, _ = load.communicate(timeout=args.timeout)
        if load.returncode != 0:
            raise RuntimeError(f"the nodes failed:\n{self.log_tail(f'nodes-{store}-{processes}')}")
        result = json.loads(out)
        run.centre_cpu_s = sum(cpu_s(p) for p in pids) - sum(before[0])
        run.pg_cpu_s = max(0.0, sum(cpu_s(p) for p in self.postgres_pids()) - before[1])
        busy = machine_busy_s() - before[2]
        self.procs.remove(load)
        for popen, _ in centres:
            self.stop(popen)
        run.seconds, run.slowest_s = result["seconds"], max(n["seconds"] for n in result["nodes"])
        run.retries = sum(n["retries"] for n in result["nodes"])
        run.load_cpu_s = result["cpu_s"]
        run.others_cpu_s = max(0.0, busy - run.centre_cpu_s - run.pg_cpu_s - run.load_cpu_s)
        counts, heads, applied = self.at_centre(config)
        last = {n["node"]: (n["seq"], n["hash"]) for n in result["nodes"]}
        every_applied = all(n["verdicts"] == {"applied": args.entries} for n in result["nodes"])
        run.checks = {
            "every entry once": counts == {n["node"]: args.entries for n in result["nodes"]},
            "chain heads = nodes' last": heads == last,
            "all applied": applied == run.total and every_applied,
        }
        print(f"  ingest {store} x{processes}: {run.total:,} entries in {run.seconds:.1f} s "
              f"({run.rate:,.0f}/s), checks {run.checks}", file=sys.stderr, flush=True)  # fmt: skip
        return run

    # --- part 3 -------------------------------------------------------------------------

    def move(self, run: Ingest) -> dict[str, Any]:
        """The SQLite centre part 1 filled, moved by `edge centre migrate-to-postgres`."""
        url = self.pg().create_database()
        source = Path(run.data_dir) / "centre.db"
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "edge.cli", "centre", "migrate-to-postgres",
                               "--from", str(source), "--to", url], capture_output=True,
                              text=True, cwd=ROOT, timeout=self.args.timeout)  # fmt: skip
        seconds = time.perf_counter() - began
        verified = [line for line in done.stdout.splitlines() if line.startswith("verified:")]
        return {"seconds": seconds, "entries": run.total, "bytes": source.stat().st_size,
                "verified": verified[0] if verified else done.stderr[-500:],
                "checks": {"verified": done.returncode == 0 and bool(verified)}}  # fmt: skip

    # --- part 2 -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        args = self.args
        where = self.tmp / "snapshot"
        config, nodes = self.config(where, "postgresql", ("DAM",))
        seed_s = self.seed(config, ("DAM",), args.bills)
        centre, url = self.serve(config, "centre-snapshot")
        spec = {"data_dir": str(where / "node"), "node": nodes[0]["id"], "url": url,
                "secret_file": str(where / f"{nodes[0]['id']}.secret"), "timeout": 600}  # fmt: skip
        child = self.spawn("bootstrap-node", [sys.executable, str(BENCH_SYNC), "_bootstrap",
                                              json.dumps(spec)])  # fmt: skip
        out, _ = child.communicate(timeout=args.timeout)
        self.procs.remove(child)
        if child.returncode != 0:
            raise RuntimeError(f"bootstrap failed:\n{self.log_tail('bootstrap-node')}")
        result = json.loads(out)
        result["seed_s"] = seed_s
        result["centre_hwm_kb"] = status_kb(centre.pid).get("VmHWM", 0)
        result["pg_backend_hwm_kb"] = max(
            (status_kb(p).get("VmHWM", 0) for p in self.postgres_pids()[1:]), default=0
        )
        self.stop(centre)
        result["checks"] = {"every bill applied": result["applied"] == args.bills
                            and result["rows"] == args.bills and not result["error"]}  # fmt: skip
        return result


def report(runs: list[Ingest], snap: dict[str, Any] | None, moved: dict[str, Any] | None,
           args: argparse.Namespace) -> str:  # fmt: skip
    lines = [f"Centre benchmark, {time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} CPUs, "
             f"load average at the end {os.getloadavg()[0]:.2f}"]  # fmt: skip
    if runs:
        lines.append(
            f"Part 1: {args.nodes} nodes x {args.entries:,} entries at once, batch {args.batch}"
        )
        lines.append("| store | processes | entries | drain s (slowest node) | entries/s | retries "
                     "| CPU s: centre / PostgreSQL / nodes / others | checks |")  # fmt: skip
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in runs:
            ok = (
                "ok"
                if all(r.checks.values())
                else "FAILED " + ", ".join(k for k, v in r.checks.items() if not v)
            )
            lines.append(f"| {r.store} | {r.processes} | {r.total:,} | {r.seconds:.1f} "
                         f"({r.slowest_s:.1f}) | {r.rate:,.0f} | {r.retries} | {r.centre_cpu_s:.1f} / "
                         f"{r.pg_cpu_s:.1f} / {r.load_cpu_s:.1f} / {r.others_cpu_s:.1f} | {ok} |")  # fmt: skip
    if moved is not None:
        lines.append(f"Part 3: the SQLite centre of part 1 ({moved['bytes'] / 2**20:.0f} MB, "
                     f"{moved['entries']:,} entries) moved by migrate-to-postgres in "
                     f"{moved['seconds']:.1f} s: {moved['verified']}")  # fmt: skip
    if snap is not None:
        rate = snap["applied"] / snap["seconds"] if snap["seconds"] else 0
        lines.append(f"Part 2: snapshot of {args.bills:,} bills from PostgreSQL into a fresh node "
                     f"(seeded in {snap['seed_s']:.0f} s)")  # fmt: skip
        lines.append(f"  {snap['applied']:,} bills in {snap['seconds']:.1f} s ({rate:,.0f}/s); "
                     f"peak RSS: node {snap['vmhwm_kb'] / 1024:.0f} MB, centre process "
                     f"{snap['centre_hwm_kb'] / 1024:.0f} MB, largest PostgreSQL backend "
                     f"{snap['pg_backend_hwm_kb'] / 1024:.0f} MB; checks {snap['checks']}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_nodes"]:
        role_nodes(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small numbers (CI)")
    parser.add_argument("--nodes", type=int, default=14)
    parser.add_argument("--entries", type=int, default=50_000, help="queued payments per node")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--accounts", type=int, default=1_000, help="bills per governorate")
    parser.add_argument("--bills", type=int, default=1_500_000, help="snapshot's governorate")
    parser.add_argument("--only", choices=("ingest", "snapshot"))
    parser.add_argument("--runs", default="sqlite:1,postgresql:1,postgresql:2",
                        help="store:processes,... for part 1")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.entries, args.bills, args.accounts = 500, 20_000, 200
    args.nodes = min(args.nodes, len(GOVERNORATES))
    bench = Bench(args)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(args.timeout))
    runs: list[Ingest] = []
    snap = moved = None
    try:
        if args.only != "snapshot":
            for item in args.runs.split(","):
                store, processes = item.split(":")
                runs.append(bench.ingest(store, int(processes)))
            sqlite = [r for r in runs if r.store == "sqlite"]
            if sqlite and "postgresql" in args.runs:
                moved = bench.move(sqlite[0])
        if args.only != "ingest":
            snap = bench.snapshot()
    except Aborted as exc:
        print(f"aborted: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
        bench.cleanup()
    print(report(runs, snap, moved, args))
    if args.json:
        args.json.write_text(json.dumps({"ingest": [dataclasses.asdict(r) for r in runs],
                                         "snapshot": snap, "move": moved}, indent=1))  # fmt: skip
    failed = [r for r in runs if not all(r.checks.values())]
    failed += [
        part for part in (snap, moved) if part is not None and not all(part["checks"].values())
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
