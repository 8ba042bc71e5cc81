"""`edge report day` and `edge reconcile`: clearing at the node, read-only while it runs.

The day's close is edge.dayreport's (the same SQL as GET /v1/reports/day), printed as JSON,
CSV (UTF-8 with a BOM, for spreadsheets) or the printable A4 page. Reconciliation is
edge.reconcile's over the signed link: exit 0 when no difference but `pending`; 1 for
anything else, or a centre that could not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from contextlib import closing
from datetime import date, datetime, timedelta
from typing import Any

from edge import config, dayprint, dayreport, reconcile, replication
from edge.errors import ConfigError, DatabaseError
from edge.ops.payments import connect
from sync import ledgerlink
from sync.errors import SyncError

FORMATS = ("json", "csv", "html")


def render(report: dayreport.DayReport, fmt: str, settings: config.Settings) -> str:
    if fmt == "csv":
        return dayprint.csv_text(report)
    if fmt == "html":
        return dayprint.html_page(report, config.GOVERNORATES[settings.node_governorate][1])
    return json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n"


def cmd_day(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    now = time.time()
    day = _day(args.date, settings, 0)
    if day is None:
        return 2
    with closing(connect(settings.db_path)) as conn:
        try:
            report = dayreport.build(
                conn, node=settings.node_id, governorate=settings.node_governorate,
                timezone=settings.node_timezone, day=day, now=now,
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot read {settings.db_path}: {exc}") from exc
    # Bytes, not the terminal's encoding: the CSV's BOM and the Arabic must reach the file.
    sys.stdout.buffer.write(render(report, args.format, settings).encode("utf-8"))
    sys.stdout.flush()
    return 0


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
    day = _day(args.date, settings, 1)
    if day is None:
        return 2
    try:
        result = asyncio.run(_run(settings, day))
    except SyncError as exc:
        print(f"edge: the centre did not answer the reconciliation: {exc}", file=sys.stderr)
        return 1
    print_result(result, args.format)
    return 0 if result.ok else 1


def _day(text: str | None, settings: config.Settings, back: int) -> date | None:
    """--date, or today less `back` days in node.timezone; None (after saying why) if bad."""
    if text is None:
        return datetime.fromtimestamp(time.time(), settings.tz).date() - timedelta(days=back)
    try:
        return dayreport.parse_day(text)
    except dayreport.BadDay:
        print(f"edge: --date {text[:20]!r} is not a day YYYY-MM-DD", file=sys.stderr)
        return None


def register(sub: Any) -> None:
    group = sub.add_parser("report", help="reports for clearing").add_subparsers(
        dest="report_cmd", required=True
    )
    day = group.add_parser("day", help="the day's close (read-only; the node may run)")
    config.config_option(day)
    day.add_argument("--date", help="local day YYYY-MM-DD (node.timezone; default today)")
    day.add_argument("--format", choices=FORMATS, default="json", help="default json")
    day.set_defaults(func=cmd_day)
    p = sub.add_parser("reconcile", help="this node's day against the centre's (exit 1: differs)")
    config.config_option(p)
    p.add_argument("--date", help="local day YYYY-MM-DD (node.timezone; default yesterday)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="default text")
    p.set_defaults(func=cmd_reconcile)
