"""Cashiers and inquiry clients against a node, run inside the node's network namespace.

    ip netns exec NS python netload.py --url http://127.0.0.1:8080 --token T \
        --bills DAM-2026-05-0100000001,... --out load.jsonl [--cashiers 3] [--inquirers 2]

Every request becomes one JSON line in --out: `{"t0", "t1", "kind", "status", ...}` with
times from `time.monotonic()` (CLOCK_MONOTONIC: the same clock in every process on the
machine, whatever its network namespace), so the test can split them by fault window.
Payments (`kind` "pay") also carry `id`, `bill`, `amount` and `key`; a cashier whose request
fails in transport retries it with the same Idempotency-Key, as a real counter would.
Runs until SIGTERM or SIGINT: requests in flight finish, the file is flushed, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from typing import IO, Any

import aiohttp

PAY_AMOUNT = 100  # 1 SYP, in piastres


class Recorder:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def record(self, **fields: Any) -> None:
        self.out.write(json.dumps(fields, separators=(",", ":")) + "\n")


async def cashier(
    session: aiohttp.ClientSession, args: argparse.Namespace, rec: Recorder, n: int,
    stop: asyncio.Event,
) -> None:  # fmt: skip
    rng = random.Random(n)  # which bill each payment goes to
    bills = args.bills.split(",")
    headers = {"Authorization": f"Bearer {args.token}"}
    i = 0
    while not stop.is_set():
        i += 1
        key = f"{args.prefix}-c{n}-{i}"
        body = {"bill_id": rng.choice(bills), "amount": PAY_AMOUNT, "method": "cash",
                "cashier": f"counter-{n}"}  # fmt: skip
        while True:  # the same key until the node answers: a retry never pays twice
            t0 = time.monotonic()
            try:
                async with session.post(
                    f"{args.url}/v1/payments", json=body, headers=headers | {"Idempotency-Key": key}
                ) as resp:
                    doc = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                rec.record(t0=t0, t1=time.monotonic(), kind="pay_error", error=repr(exc), key=key)
                await asyncio.sleep(0.2)
                continue
            rec.record(t0=t0, t1=time.monotonic(), kind="pay", status=status, key=key,
                       id=doc.get("payment_id"), bill=body["bill_id"], amount=PAY_AMOUNT,
                       code=doc.get("code"))  # fmt: skip
            break
        await asyncio.sleep(args.pause)


async def inquirer(
    session: aiohttp.ClientSession, args: argparse.Namespace, rec: Recorder, n: int,
    stop: asyncio.Event,
) -> None:  # fmt: skip
    rng = random.Random(1000 + n)
    accounts = [bill.rsplit("-", 1)[1] for bill in args.bills.split(",")]
    headers = {"Authorization": f"Bearer {args.token}"}
    while not stop.is_set():
        account = rng.choice(accounts)
        t0 = time.monotonic()
        try:
            async with session.get(
                f"{args.url}/v1/accounts/{account}/bills", headers=headers
            ) as resp:
                doc = await resp.json(content_type=None)
                ok = resp.status == 200 and doc["account"] == account and bool(doc["bills"])
                rec.record(t0=t0, t1=time.monotonic(), kind="inquire", status=resp.status, ok=ok)
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.record(t0=t0, t1=time.monotonic(), kind="inquire_error", error=repr(exc))
        await asyncio.sleep(args.pause)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=30)
    with open(args.out, "a", encoding="utf-8", buffering=1) as out:
        rec = Recorder(out)
        rec.record(t0=time.monotonic(), kind="started")
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = [cashier(session, args, rec, n, stop) for n in range(args.cashiers)]
            tasks += [inquirer(session, args, rec, n, stop) for n in range(args.inquirers)]
            await asyncio.gather(*tasks)
        rec.record(t0=time.monotonic(), kind="stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--bills", required=True, help="comma-separated bill ids")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prefix", default="load")
    parser.add_argument("--cashiers", type=int, default=3)
    parser.add_argument("--inquirers", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.03, help="seconds between requests")
    asyncio.run(main(parser.parse_args()))
