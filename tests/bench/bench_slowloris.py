"""Benchmark: the issue-14 attack, many half-sent requests from one address, against a node.

Usage: .venv/bin/python tests/bench/bench_slowloris.py [--connections 2000] [--header-timeout 10]
       [--cap 64]

Starts a node in-process the way `edge serve` does (edge.web.server: the guarded site),
opens `--connections` connections from 127.0.0.1 that each send half a request head and
wait, and meanwhile asks /v1/status from 127.0.0.2 (another client on this machine). Prints
how many were refused at accept, the longest time one was held, and the other client's
answer times. Before issue 14 all 2,000 were held for as long as the attacker liked.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge import config  # noqa: E402
from edge.app import create_app  # noqa: E402
from edge.web import server  # noqa: E402

HALF = b"GET /v1/status HTTP/1.1\r\nHost: node\r\nX-Slow: "


async def attacker(port: int, timeout: float, held: list[float], refused: list[int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        refused.append(1)
        return
    connected = time.monotonic()
    try:
        writer.write(HALF)
        await writer.drain()
        await reader.read()  # until the node closes it
    except OSError:
        pass
    took = time.monotonic() - connected
    held.append(took)
    if took < timeout / 2:  # closed at once: refused at accept, not cut at the deadline
        refused.append(1)
    writer.close()


async def other_client(port: int, stop: asyncio.Event, times: list[float]) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        writer.write(b"GET /v1/status HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        await reader.read()
        writer.close()
        times.append(time.monotonic() - t0)
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = config.Settings(
            node_data_dir=Path(tmp) / "data", auth_tokens_file=Path(tmp) / "tokens.toml",
            http_host="127.0.0.1", http_port=0, ups_source="none", storage_min_free_mb=0,
            centre_url="", http_header_timeout_s=args.header_timeout,
            http_max_connections_per_address=args.cap,
        )  # fmt: skip
        runner = server.runner(create_app(settings), settings)
        await runner.setup()
        try:
            await server.site(runner, settings).start()
            port = runner.addresses[0][1]
            held: list[float] = []
            refused: list[int] = []
            times: list[float] = []
            stop = asyncio.Event()
            side = asyncio.create_task(other_client(port, stop, times))
            await asyncio.gather(
                *(attacker(port, args.header_timeout, held, refused)
                  for _ in range(args.connections))
            )  # fmt: skip
            stop.set()
            await side
        finally:
            await runner.cleanup()
    print(f"{args.connections} half-sent requests from one address, header timeout "
          f"{args.header_timeout} s, cap {args.cap} per address:")  # fmt: skip
    print(f"  refused at accept: {len(refused)}; held longest: {max(held):.2f} s after connect")
    print(f"  another client meanwhile: {len(times)} requests, median "
          f"{statistics.median(times) * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--cap", type=int, default=64)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
