"""What the audit trail costs inquiries: the inquiry rate with `audit.enabled` on and off.

Run by hand (not a pytest test), from the repository root:

    .venv/bin/python tests/bench/bench_audit.py [--bills 1000000] [--seconds 10] [--rounds 3] [--quick]

It reuses bench_api.py's harness: the same seeded mirror, tokens file, load generators
(wrk when installed, else aiohttp client processes) and CPU pinning (node on CPU 0, load on
CPU 1). Each round starts the node twice on the same data dir, once with the audit off and
once on (the order alternates between rounds, so drift on a shared machine falls on both),
warms it up, and measures `GET /v1/accounts/{account}/bills` on random accounts. Reported per
mode: the median inquiry rate and the node's CPU time per inquiry (split into the event loop's
thread and the others, where the writer flushes the trail); each round's back-to-back ratio;
the target is rate(on) >= 0.85 x rate(off). With the audit on it also checks, through a bench-only route,
that every answered inquiry left a row (written + buffered + dropped), and that none dropped.

The same file is the node's runner (`_node DATA TOKENS on|off`).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api  # the harness lives there (after the path it is found on)

SELF = Path(__file__).resolve()
STATS_ROUTE = "/_bench/audit"  # added by the runner, not part of the node's API
TARGET = 0.85


def role_node(data_dir: str, tokens_file: str, audit: str) -> None:
    from aiohttp import web

    from edge import config
    from edge.app import create_app
    from edge.node import NODE

    settings = config.Settings(
        node_id="dam-1", node_governorate=bench_api.GOV, node_data_dir=Path(data_dir),
        auth_tokens_file=Path(tokens_file), http_host="127.0.0.1", http_port=0,
        ups_source="none", storage_min_free_mb=0, centre_url="", audit_enabled=audit == "on",
        # Limits off, as in bench_api: one token and one address measure the raw capacity.
        limits_inquiries_per_s=0, limits_payments_per_s=0, limits_per_address_per_s=0,
        limits_auth_failures=0,
    )  # fmt: skip
    config.validate(settings)
    app = create_app(settings)

    async def stats(request: web.Request) -> web.Response:
        trail = request.app[NODE].audit
        return web.json_response({"written": trail.written, "dropped": trail.dropped,
                                  "buffered": len(trail.rows)})  # fmt: skip

    app.router.add_get(STATS_ROUTE, stats)
    sock = bench_api._listen()
    print(f"READY {sock.getsockname()[1]} {__import__('os').getpid()}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=5.0)


def audit_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{STATS_ROUTE}", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of `pid` (the event loop's thread has id `pid`)."""
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def measure(h: bench_api.Harness, mode: str, secs: float) -> dict[str, Any]:
    """Start the node with the audit `mode`, warm up, measure one inquiry phase, stop it."""
    seed = h.seeded
    node = h.start_server(
        f"node-{mode}",
        [*h.pin(0), sys.executable, str(SELF), "_node", str(seed["data"]),
         str(seed["tokens_file"]), mode],
    )  # fmt: skip
    h.wait_http(f"http://127.0.0.1:{node.port}/readyz", 300)
    url, path = f"http://127.0.0.1:{node.port}", "/v1/accounts/{account}/bills"
    h.inquiry_load(url, path, "inquiry", min(2.0, secs / 2), time.time())()
    before, threads0 = audit_stats(node.port), thread_cpu(node.pid)
    res, srv, load, other, _, wall = h.phase(
        node, h.inquiry_load(url, path, "inquiry", secs, time.time())
    )
    threads1 = thread_cpu(node.pid)
    main = threads1.pop(node.pid, 0.0) - threads0.pop(node.pid, 0.0)
    rest = sum(threads1.values()) - sum(threads0.values())
    time.sleep(1.0)  # one flush interval and more: the phase's rows are written by now
    after = audit_stats(node.port)
    h.stop_all()
    h.procs.clear()
    rows = sum(after[k] - before[k] for k in ("written", "dropped", "buffered"))
    return {
        "mode": mode, "rps": res["rps"], "requests": res["requests"], "non2xx": res["non2xx"],
        "p99_ms": res["p99_ms"], "cpu_us_per_req": srv * wall / max(1, res["requests"]) * 1e6,
        "main_us_per_req": main / max(1, res["requests"]) * 1e6,
        "threads_us_per_req": rest / max(1, res["requests"]) * 1e6,
        "srv_cpu": srv, "load_cpu": load, "other_cpu": other, "rows": rows,
        "dropped": after["dropped"] - before["dropped"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_node":
        role_node(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bills", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs (order alternates)")
    parser.add_argument("--quick", action="store_true", help="100k bills, 3 s phases, 2 rounds")
    parser.add_argument("--connections", type=int, default=32, help="inquiry connections")
    parser.add_argument("--no-wrk", action="store_true", help="use aiohttp clients, not wrk")
    parser.add_argument("--dir", default=None, help="where the temp data dir goes")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    parser.add_argument("--strict", action="store_true", help="exit 1 below the target")
    args = parser.parse_args(argv)
    if args.quick:
        args.bills, args.seconds, args.rounds = 100_000, 3.0, 2
    # What bench_api's harness reads from its own arguments.
    args.cycles, args.no_strace, args.switch_interval, args.payers = 4, True, 0, 0
    signal.signal(signal.SIGALRM, bench_api._alarm)
    signal.alarm(int(120 + args.bills / 10_000 + args.rounds * 2 * (args.seconds + 40)))
    h = bench_api.Harness(args)
    try:
        h.seeded = h.seed()
        h.token = h.seeded["token"]
        if h.wrk:
            h.lua, h.bare_script = h.wrk_scripts(h.seeded["accounts"])
        print(f"seeded {h.seeded['bills']:,} bills; code {bench_api.code_version()}", flush=True)
        runs: list[dict[str, Any]] = []
        for r in range(args.rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                runs.append(measure(h, mode, args.seconds))
                m = runs[-1]
                print(f"round {r + 1} audit {mode:>3}: {m['rps']:7.0f} req/s,"
                      f" {m['cpu_us_per_req']:5.0f} us CPU/req (loop thread"
                      f" {m['main_us_per_req']:.0f}, other threads {m['threads_us_per_req']:.1f}),"
                      f" p99 {m['p99_ms']:.2f} ms, others {m['other_cpu']:.0%}, rows {m['rows']}",
                      flush=True)  # fmt: skip
        return report(args, runs)
    except (bench_api.Aborted, KeyboardInterrupt) as exc:
        print(f"aborted: {exc or 'interrupted'}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
        h.cleanup()


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> int:
    def med(mode: str, key: str) -> float:
        return statistics.median(m[key] for m in runs if m["mode"] == mode)

    off, on = med("off", "rps"), med("on", "rps")
    ratio = on / off
    # Each round's on/off pair ran back to back: their ratio is less exposed to drift.
    pairs = [b["rps"] / a["rps"] if a["mode"] == "off" else a["rps"] / b["rps"]
             for a, b in zip(runs[::2], runs[1::2], strict=True)]  # fmt: skip
    threads_off, threads_on = med("off", "threads_us_per_req"), med("on", "threads_us_per_req")
    main_off, main_on = med("off", "main_us_per_req"), med("on", "main_us_per_req")
    cpu_off, cpu_on = med("off", "cpu_us_per_req"), med("on", "cpu_us_per_req")
    lost = [m for m in runs if m["mode"] == "on" and m["rows"] < m["requests"] - m["non2xx"]]
    dropped = sum(m["dropped"] for m in runs)
    ok = ratio >= TARGET and not lost and not dropped
    print(
        f"\n== audit cost ({args.bills:,} bills, {args.seconds:g} s phases, {args.rounds} rounds,"
        f" {'wrk' if not args.no_wrk and bench_api.shutil.which('wrk') else 'aiohttp load'}) ==\n"
        f"inquiries, audit off: {off:7.0f} req/s (median), {cpu_off:5.0f} us node CPU per inquiry\n"
        f"inquiries, audit on : {on:7.0f} req/s (median), {cpu_on:5.0f} us node CPU per inquiry\n"
        f"{'PASS' if ratio >= TARGET else 'FAIL'}  rate on / off = {ratio:.3f} (target >= {TARGET})"
        f"; CPU per inquiry on / off = {cpu_on / cpu_off:.3f}\n"
        f"      per round (on / off, back to back): {', '.join(f'{p:.2f}' for p in pairs)}"
        f"; median {statistics.median(pairs):.3f}\n"
        f"      loop thread {main_off:.1f} -> {main_on:.1f} us per inquiry; other threads"
        f" (the writer: audit flushes) {threads_off:.1f} -> {threads_on:.1f} us per inquiry\n"
        f"{'PASS' if not lost else 'FAIL'}  every answered inquiry left an audit row"
        f"; {dropped} rows dropped"
    )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
