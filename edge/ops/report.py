"""`edge report day`: the day's close of this node, read-only while the node runs.

The numbers are edge.dayreport's (the same SQL as GET /v1/reports/day); this prints them as
JSON, CSV (UTF-8 with a BOM, for spreadsheets) or the printable A4 HTML page.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

from edge import config, dayprint, dayreport
from edge.errors import DatabaseError
from edge.ops.payments import connect

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
    if args.date is None:
        day = datetime.fromtimestamp(now, settings.tz).date()
    else:
        try:
            day = dayreport.parse_day(args.date)
        except dayreport.BadDay:
            print(f"edge: --date {args.date[:20]!r} is not a day YYYY-MM-DD", file=sys.stderr)
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


def register(sub: Any) -> None:
    group = sub.add_parser("report", help="reports for clearing").add_subparsers(
        dest="report_cmd", required=True
    )
    day = group.add_parser("day", help="the day's close (read-only; the node may run)")
    day.add_argument("--config", type=Path, required=True)
    day.add_argument("--date", help="local day YYYY-MM-DD (node.timezone; default today)")
    day.add_argument("--format", choices=FORMATS, default="json")
    day.set_defaults(func=cmd_day)
