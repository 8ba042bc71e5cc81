"""`edge reconcile`: this node's day against what the centre recorded of it (edge.reconcile).

Reads the node's database read-only (the node may run) and asks the centre over the signed
link. Exit 0: no difference but `pending`; 1: anything else, or the centre could not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import closing
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from edge import config, dayreport, reconcile, replication
from edge.errors import ConfigError
from edge.ops.payments import connect
from sync import ledgerlink
from sync.errors import SyncError


async def _run(settings: config.Settings, day: date) -> reconcile.Result:
    secret = replication.read_secret(settings)
    now = time.time()
    with closing(connect(settings.db_path)) as conn:

        async def read(fn: Any) -> list[reconcile.Ours]:
            found: list[reconcile.Ours] = fn(conn)
            return found

        async with replication.make_session(settings) as session:

            async def fetch(day_text: str) -> Any:
                return await ledgerlink.fetch(
                    session, settings.centre_url, settings.node_id, secret(), day_text, now
                )

            return await reconcile.run(day, fetch, read, now)


def print_result(result: reconcile.Result, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
        return
    print(f"day {result.day}: {result.node_entries} entries here, {result.centre_entries} at"
          f" the centre")  # fmt: skip
    for d in result.differences:
        rest = " ".join(f"{k}={v}" for k, v in d.items() if k not in ("what", "id", "seq"))
        print(f"{d['what']:<8} seq {d['seq']} {d['id']} {rest}")
    counts = ", ".join(f"{k} {n}" for k, n in result.counts().items())
    print(f"{'OK' if result.ok else 'DIFFERENCES'}: {counts}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    if not settings.centre_url:
        raise ConfigError("centre.url is not set: there is no centre to reconcile with")
    if args.date is None:
        day = datetime.fromtimestamp(time.time(), settings.tz).date() - timedelta(days=1)
    else:
        try:
            day = dayreport.parse_day(args.date)
        except dayreport.BadDay:
            print(f"edge: --date {args.date[:20]!r} is not a day YYYY-MM-DD", file=sys.stderr)
            return 2
    try:
        result = asyncio.run(_run(settings, day))
    except SyncError as exc:
        print(f"edge: the centre did not answer the reconciliation: {exc}", file=sys.stderr)
        return 1
    print_result(result, args.format)
    return 0 if result.ok else 1


def register(sub: Any) -> None:
    p = sub.add_parser("reconcile", help="this node's day against the centre's (exit 1: differs)")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--date", help="local day YYYY-MM-DD (node.timezone; default yesterday)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_reconcile)
