"""Payment latency while one token floods the node with inquiries (issue 14), limits on and off.

Run by hand (not a pytest test), from the repository root:

    .venv/bin/python tests/bench/bench_limits.py [--bills 100000] [--seconds 10] [--flooders 4]

It seeds a mirror and a tokens file (bench_api's seeding), then, for each of two nodes (the
shipped `[limits]` defaults, and every limit off: the issue's baseline), runs two phases:

  idle   cashiers pay, nothing else: `--counters` counter tokens, round robin, one payment
         every 1/`--pay-rate` s on one connection from 127.0.0.1 (each token pays at most once
         a second: inside the default payment limit), latency per payment;
  flood  the same cashiers while `--flooders` client processes, each on its own source address
         (127.0.0.2, .3, ...) and `--flood-connections` connections, send account inquiries as
         fast as the node answers, all with the token of the first counter (so its inquiry
         bucket is empty while it keeps paying from its payment bucket).

It prints payment p50/p95/p99 and the flood's rate and statuses, and the issue's target:
payment p95 under flood within 3x of idle, with the limits on. Nodes run on CPU 0 and the
clients on CPU 1 when there are two CPUs (bench_api's pinning). No asserts: figures only.
The same file is the runner of its child processes (`_node`, `_flood`, `_cashier`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api
from bench_api import GOV, ROOT, account_of, cycles_of

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SELF = Path(__file__).resolve()
OFF = {"limits_inquiries_per_s": 0, "limits_payments_per_s": 0, "limits_per_address_per_s": 0,
       "limits_auth_failures": 0}  # fmt: skip


def role_node(data_dir: str, tokens_file: str, limits_json: str) -> None:
    from aiohttp import web

    from edge import config
    from edge.app import create_app

    settings = config.Settings(
        node_id="dam-1", node_governorate=GOV, node_data_dir=Path(data_dir),
        auth_tokens_file=Path(tokens_file), http_host="127.0.0.1", http_port=0,
        ups_source="none", storage_min_free_mb=0, centre_url="",
    ).replace(**json.loads(limits_json))  # fmt: skip
    config.validate(settings)
    app = create_app(settings)
    sock = bench_api._listen()
    print(f"READY {sock.getsockname()[1]} {os.getpid()}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=5.0)


async def _flood(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(spec["seed"])
    connector = aiohttp.TCPConnector(limit=spec["connections"], local_addr=(spec["source"], 0))
    statuses: dict[int, int] = {}
    errors = 0
    headers = {"Authorization": f"Bearer {spec['token']}"}
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        deadline = time.monotonic() + spec["seconds"]

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                url = f"{spec['base']}/v1/accounts/{account_of(rng.randrange(spec['accounts']))}/bills"
                try:
                    async with session.get(url, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(spec["connections"])))
    return {"statuses": {str(k): v for k, v in sorted(statuses.items())}, "errors": errors}


async def _cashier(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(spec["seed"])
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bill = f"{GOV}-{cycles_of(1)[0]}-"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < spec["seconds"]:
            await asyncio.sleep(max(0.0, n / spec["rate"] - elapsed))  # a steady pace
            token = spec["tokens"][n % len(spec["tokens"])]
            body = {"bill_id": bill + account_of(rng.randrange(spec["accounts"])),
                    "amount": rng.randint(1, 100), "method": "cash", "cashier": "bench"}  # fmt: skip
            headers = {"Authorization": f"Bearer {token}",
                       "Idempotency-Key": f"{spec['name']}-{n}"}  # fmt: skip
            n += 1
            t0 = time.perf_counter()
            async with session.post(spec["base"] + "/v1/payments", json=body,
                                    headers=headers) as resp:  # fmt: skip
                await resp.read()
            latencies.append((time.perf_counter() - t0) * 1e3)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
    return {"latencies_ms": latencies, "statuses": {str(k): v for k, v in statuses.items()}}


def role_client(kind: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = asyncio.run(_flood(spec) if kind == "_flood" else _cashier(spec))
    print("RESULT " + json.dumps(result), flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


class Bench(bench_api.Harness):
    def py(self, *role: str) -> list[str]:
        return [sys.executable, str(SELF), *role]

    def client(self, name: str, kind: str, spec: dict[str, Any]) -> bench_api.Proc:
        return self.spawn(name, [*self.pin(1), *self.py(kind, json.dumps(spec))])

    def result(self, proc: bench_api.Proc, timeout: float) -> dict[str, Any]:
        stdout, _ = proc.popen.communicate(timeout=timeout)
        self.procs.remove(proc)
        match = re.search(r"^RESULT (\{.*\})$", stdout, re.M)
        if not match:
            raise RuntimeError(
                f"{proc.name} failed:\n{(self.tmp / f'{proc.name}.log').read_text()}"
            )
        return dict(json.loads(match.group(1)))

    def phase(self, base: str, name: str, flood: bool) -> dict[str, Any]:  # type: ignore[override]
        args, secs = self.args, self.args.seconds
        start_at = time.time() + 1.5  # the clients need a moment to import aiohttp
        common = {"base": base, "seconds": secs, "start_at": start_at,
                  "accounts": self.seeded["accounts"]}  # fmt: skip
        cashier = self.client(f"cashier-{name}", "_cashier", common | {
            "name": name, "rate": args.pay_rate, "tokens": self.counters, "seed": 1})  # fmt: skip
        flooders = [
            self.client(
                f"flood-{name}-{k}",
                "_flood",
                common
                | {
                    "source": f"127.0.0.{k + 2}",
                    "connections": args.flood_connections,
                    "token": self.counters[0],
                    "seed": 100 + k,
                },
            )
            for k in range(args.flooders if flood else 0)
        ]
        paid = self.result(cashier, secs + 60)
        floods = [self.result(p, secs + 60) for p in flooders]
        statuses: dict[str, int] = {}
        for f in floods:
            for k, v in f["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        lat = paid["latencies_ms"]
        return {
            "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99), "payments": len(lat),
            "pay_statuses": paid["statuses"], "flood_rps": sum(statuses.values()) / secs,
            "flood_statuses": statuses, "flood_errors": sum(f["errors"] for f in floods),
        }  # fmt: skip

    def node_run(self, label: str, limits: dict[str, Any]) -> dict[str, Any]:
        seed = self.seeded
        node = self.start_server(f"node-{label}", [*self.pin(0), *self.py(
            "_node", str(seed["data"]), str(seed["tokens_file"]), json.dumps(limits))])  # fmt: skip
        base = f"http://127.0.0.1:{node.port}"
        self.wait_http(base + "/readyz", 120)
        out = {}
        for name, flood in (("idle", False), ("flood", True)):
            print(f"limits {label}: {name}, {self.args.seconds:g} s", flush=True)
            out[name] = self.phase(base, f"{label}-{name}", flood)
        self.stop_all()
        return out

    def go(self) -> dict[str, Any]:
        from edge import tokens

        self.seeded = self.seed()
        self.counters = [
            tokens.add_token(self.seeded["tokens_file"], f"counter-{i}", ["inquire", "pay"])
            for i in range(self.args.counters)
        ]
        return {"on": self.node_run("on", {}), "off": self.node_run("off", OFF)}


def report(args: argparse.Namespace, runs: dict[str, Any]) -> str:
    lines = [
        "", "== payment latency under an inquiry flood (issue 14) ==",
        f"code    : {bench_api.code_version()}",
        f"mirror  : {args.bills:,} bills; cashiers: {args.counters} counter tokens, "
        f"{args.pay_rate:g} payments/s in all, one connection from 127.0.0.1",
        f"flood   : {args.flooders} client processes x {args.flood_connections} connections, "
        "each from its own 127.0.0.x, account inquiries with counter-0's token",
        f"phases  : {args.seconds:g} s each", "",
        f"{'node / phase':<30}{'pay p50':>9}{'p95':>9}{'p99':>9}{'paid':>6}"
        f"{'flood/s':>9}  statuses",
    ]  # fmt: skip
    for key, label in (("on", "limits on (defaults)"), ("off", "limits off")):
        for phase in ("idle", "flood"):
            r = runs[key][phase]
            lines.append(
                f"{label + ' / ' + phase:<30}{r['p50']:>8.2f}m{r['p95']:>8.2f}m{r['p99']:>8.2f}m"
                f"{r['payments']:>6}{r['flood_rps']:>9.0f}  pay {r['pay_statuses']}"
                + (
                    f" flood {r['flood_statuses']} err {r['flood_errors']}"
                    if phase == "flood"
                    else ""
                )
            )
    on = runs["on"]
    ratio = on["flood"]["p95"] / on["idle"]["p95"]
    ok = ratio <= 3
    lines += ["", f"  {'PASS' if ok else 'FAIL'}  payment p95 under flood within 3x of idle "
              f"(limits on): {on['flood']['p95']:.2f} / {on['idle']['p95']:.2f} ms = {ratio:.2f}x"]  # fmt: skip
    off = runs["off"]
    lines.append(f"        (limits off: {off['flood']['p95']:.2f} / {off['idle']['p95']:.2f} ms = "
                 f"{off['flood']['p95'] / off['idle']['p95']:.2f}x)")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_node":
        role_node(*argv[1:4])
        return 0
    if argv and argv[0] in ("_flood", "_cashier"):
        role_client(argv[0], argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bills", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--counters", type=int, default=20, help="cashier tokens, round robin")
    parser.add_argument("--pay-rate", type=float, default=20.0, help="payments/s, all cashiers")
    parser.add_argument("--flooders", type=int, default=4, help="flooding client processes")
    parser.add_argument("--flood-connections", type=int, default=4, help="per flooding client")
    parser.add_argument("--dir", default=None, help="where the temp data dir goes (its disk!)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.no_wrk, args.no_strace = True, True
    if args.pay_rate > args.counters:
        parser.error("--pay-rate above --counters would run each token over its payment limit")
    bench = Bench(args)
    try:
        runs = bench.go()
        print(report(args, runs), flush=True)
        if args.json:
            args.json.write_text(json.dumps(runs, indent=2))
        return 0
    except KeyboardInterrupt:
        return 2
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
