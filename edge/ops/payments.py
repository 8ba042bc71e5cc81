"""`edge payments list`: find payments in the node's database, read-only, while it runs.

The filters and the query are edge.paymentquery's, the same as GET /v1/payments; the
operator at the server sees every channel (or one, with --channel). CSV is UTF-8 with a
header row; JSON is the API's page; the table is for a terminal.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from edge import config, errors, paymentquery, receipts
from edge.errors import DatabaseError

CSV_COLUMNS = ("payment_id", "receipt", "bill_id", "account", "amount", "currency", "method",
               "cashier", "channel", "accepted_at", "seq", "state", "verdict", "reason",
               "settled_at", "attempts", "last_error")  # fmt: skip
TABLE_COLUMNS = ("seq", "receipt", "bill_id", "amount", "method", "cashier", "channel",
                 "accepted_at", "state")  # fmt: skip


def connect(db: Path) -> sqlite3.Connection:
    """A read-only connection: the node's writer keeps writing while this reads (WAL)."""
    if not db.exists():
        raise DatabaseError(f"no database at {db}: is node.data_dir right?")
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5.0)
        conn.execute("PRAGMA query_only=ON")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open {db} read-only: {exc}") from exc
    return conn


def pages(conn: sqlite3.Connection, filters: paymentquery.Filters, every: bool
          ) -> Iterator[paymentquery.Page]:  # fmt: skip
    """One page, or (`every`) each page until the last, following the cursor."""
    while True:
        page = paymentquery.search(conn, filters)
        yield page
        if not every or page.next is None:
            return
        filters = replace(filters, after=int(page.next))


def row(item: dict[str, Any]) -> dict[str, Any]:
    verdict = item["verdict"] or {}
    return {**{k: item.get(k) for k in CSV_COLUMNS}, "verdict": verdict.get("verdict"),
            "reason": verdict.get("reason"), "settled_at": verdict.get("at")}  # fmt: skip


def write(out: TextIO, fmt: str, items: list[dict[str, Any]], nxt: str | None) -> None:
    if fmt == "json":
        json.dump({"items": items, "next": nxt}, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row(item) for item in items)
    else:
        cells = [[receipts.syp(i["amount"]) if c == "amount" else str(i[c]) for c in TABLE_COLUMNS]
                 for i in items]  # fmt: skip
        header = [c if c != "amount" else "amount (SYP)" for c in TABLE_COLUMNS]
        widths = [max([len(h), *(len(r[n]) for r in cells)]) for n, h in enumerate(header)]
        for line in [header, *cells]:
            out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
            out.write("\n")
        out.write(f"({len(items)} payment{'s' if len(items) != 1 else ''})\n")


def cmd_list(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    params = [(name, str(getattr(args, name))) for name in paymentquery.PARAMS
              if getattr(args, name) is not None]  # fmt: skip
    try:
        filters = paymentquery.parse(params, args.channel)
    except errors.InvalidQuery as exc:
        print(f"edge: {exc.detail}", file=sys.stderr)
        return 2
    with closing(connect(settings.db_path)) as conn:
        try:
            found = list(pages(conn, filters, args.all))
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot read {settings.db_path}: {exc}") from exc
    items = [item for page in found for item in page.items]
    nxt = found[-1].next
    write(sys.stdout, args.format, items, nxt)
    if nxt is not None and args.format != "json":
        print(f"edge: more payments: add --after {nxt} (or --all)", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("payments", help="payments taken at this node").add_subparsers(
        dest="payments_cmd", required=True
    )
    ls = group.add_parser("list", help="find payments, newest first (read-only; the node may run)")
    config.config_option(ls)
    ls.add_argument("--receipt", help="DAM-20261201-000003 or DAM-DAM1-20261201-000003")
    ls.add_argument("--account", help="only this account")
    ls.add_argument("--bill-id", dest="bill_id", help="only this bill")
    ls.add_argument("--cashier", help="only what this cashier took")
    ls.add_argument("--day", help="local day YYYY-MM-DD (node.timezone)")
    ls.add_argument("--state", help="pending_sync, synced, credited or rejected")
    ls.add_argument("--channel", help="only what this token name took (default: every channel)")
    ls.add_argument("--limit", help=f"per page, 1-{paymentquery.MAX_LIMIT} (default 50)")
    ls.add_argument("--after", help="the cursor the previous page ended at")
    ls.add_argument("--all", action="store_true", help="follow the cursor to the last page")
    ls.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="default table"
    )
    ls.set_defaults(func=cmd_list)
