"""`edge audit`: the audit trail as CSV on stdout, read from the live database read-only.

It may run while the node serves: a read-only connection in WAL mode never blocks the writer.
"""

from __future__ import annotations

import argparse
import csv
import io
import sqlite3
import sys
from contextlib import closing
from urllib.parse import quote

from edge import audit, config, mirror
from edge.errors import ConfigError, DatabaseError
from edge.tokens import NAME


def query_of(args: argparse.Namespace, settings: config.Settings) -> audit.Query:
    try:
        since = audit.parse_time(args.since, settings.tz)
        until = audit.parse_time(args.until, settings.tz, end=True) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: YYYY-MM-DD or an ISO 8601 time ({exc})") from None
    if args.token is not None and not NAME.match(args.token):
        raise ConfigError(f"--token {args.token!r} is not a token name")
    if args.account is not None and not mirror.ACCOUNT.match(args.account):
        raise ConfigError(f"--account {args.account!r} is not an account number (1-20 digits)")
    return audit.Query(
        since=since, until=audit.Query.until if until is None else until, token=args.token,
        account=args.account,
    )  # fmt: skip


def write_csv(conn: sqlite3.Connection, query: audit.Query, out: io.TextIOBase) -> int:
    """Header, then one row per entry in `seq` order (times as ISO UTC); the rows written."""
    writer = csv.writer(out)
    writer.writerow(audit.Entry._fields)
    count = 0
    for entry in audit.select(conn, query):
        writer.writerow(entry.as_json().values())
        count += 1
    return count


def cmd_audit(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    query = query_of(args, settings)
    path = settings.db_path
    if not path.exists():
        raise DatabaseError(f"no database at {path}")
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    try:
        # mode=ro: this command never writes, and cannot create a missing database.
        uri = f"file:{quote(str(path))}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10.0)) as conn:
            write_csv(conn, query, out)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read the audit log in {path}: {exc}") from exc
    finally:
        out.flush()
        out.detach()  # sys.stdout keeps its buffer
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("audit", help="print the audit trail as CSV (read-only, node may run)")
    config.config_option(cmd)
    cmd.add_argument("--since", required=True, help="YYYY-MM-DD (local day) or ISO 8601 time")
    cmd.add_argument("--until", help="YYYY-MM-DD (that day included) or ISO 8601 time (excluded)")
    cmd.add_argument("--token", help="only this client token's name")
    cmd.add_argument("--account", help="only reads of this subscriber's account")
    cmd.set_defaults(func=cmd_audit)
