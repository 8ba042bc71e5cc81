"""A payment writer to be killed: accepts payments with many tasks, prints each id once durable.

Usage: PYTHONPATH=.:tests crash_writer.py DATA_DIR [TASKS]. Prints "ready" once the database
is open, then one acknowledged payment id per line, each only after `db.write` has returned
(after the commit), exactly as the API answers 201 only after the commit. Runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC
from pathlib import Path

from helpers import make_bill

from edge import mirror, payments
from edge.db import Database

NODE, GOV = "dam-1", "DAM"
BILLS = [make_bill(str(account), amount=10**15) for account in range(100, 108)]


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def cashier(db: Database, task: int) -> None:
    n = 0
    while True:
        n += 1
        bill_id = BILLS[(task + n) % len(BILLS)]["bill_id"]
        request = payments.PaymentRequest(bill_id, 100 + n % 900, "cash", f"cashier-{task}")
        key = f"{os.getpid()}-{task}-{n}"

        def job(conn, request=request, key=key):  # type: ignore[no-untyped-def]
            return payments.accept(
                conn, node=NODE, governorate=GOV, channel="crash-test", key=key,
                request=request, now=time.time(), tz=UTC,
            )  # fmt: skip

        reply = await db.write(job)
        emit(json.loads(reply.body)["payment_id"])


async def main(data_dir: Path, tasks: int) -> None:
    db = Database(data_dir)
    await db.open()
    await db.write(lambda conn: mirror.apply_changes(conn, BILLS, 1))
    emit("ready")
    try:
        await asyncio.gather(*(cashier(db, task) for task in range(tasks)))
    finally:
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 16))
