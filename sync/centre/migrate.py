"""`edge centre migrate-to-postgres`: an SQLite centre copied into PostgreSQL in one transaction
(COPY, table by table), then verified on both sides: row counts, every node's chain head, and
a SHA-256 digest of every table (the ledger's in node and seq order). See deploy/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgpack

from sync.centre import pgschema
from sync.centre.store import CENTRE_MIGRATIONS
from sync.errors import ImportFailed, SyncError
from sync.progress import Progress

if TYPE_CHECKING:  # asyncpg is imported only when a move runs (the CLI loads this module)
    import asyncpg

log = logging.getLogger(__name__)

CHUNK = 10_000  # rows per COPY call and per digest fetch
SKIPPED = frozenset({"schema_migrations"})  # each side keeps its own migration ledger
# Rows a fresh PostgreSQL schema starts with (the source's replace them).
SEEDED_ROWS = {"change_counter": 1}
# PostgreSQL's insertion-order column where SQLite has its rowid (sync.centre.pgschema).
ROWID = "n"
# The one table ordered by something else than its key: the ledger, node by node, in chain order.
ORDER = {"entries": ("node", "seq")}
# What each PostgreSQL type takes from an SQLite value (SQLite has only these few types).
CONVERT: dict[str, Callable[[Any], Any]] = {
    "bigint": int, "integer": int, "smallint": int, "double precision": float, "real": float,
    "text": str, "character varying": str, "bytea": bytes, "boolean": bool,
}  # fmt: skip


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]  # those both sides have, in the source's order
    key: tuple[str, ...]  # the digest's order
    text: frozenset[str]  # columns compared as text ("C" collation on PostgreSQL)
    rowid: bool = False  # the source's rowid goes into the target's `n`


@dataclass
class Figures:
    """What must be equal on both sides after the move."""

    counts: dict[str, int] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)

    def differences(self, other: Figures) -> list[str]:
        out = [f"{t}: {n} rows here, {other.counts.get(t)} there"
               for t, n in self.counts.items() if other.counts.get(t) != n]  # fmt: skip
        out += [f"{t}: digests differ" for t, d in self.digests.items()
                if other.digests.get(t) != d and other.counts.get(t) == self.counts[t]]  # fmt: skip
        out += [f"chain head of {node}: {head} here, {other.heads.get(node)} there"
                for node, head in self.heads.items() if other.heads.get(node) != head]  # fmt: skip
        out += [f"chain head of {node} only there" for node in set(other.heads) - set(self.heads)]
        return out


def _canonical(row: Sequence[Any]) -> bytes:
    # floats as repr: a double round-trips exactly through PostgreSQL's double precision.
    packed: bytes = msgpack.packb(
        [repr(v) if isinstance(v, float) else v for v in row], use_bin_type=True
    )
    return packed


def safe_url(url: str) -> str:
    """The URL for a log line: never a password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{parts.username + '@' if parts.username else ''}{host}" + (
        f":{parts.port}" if parts.port else ""
    ) + parts.path  # fmt: skip


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ImportFailed("--to must be a postgresql:// URL")
    if parts.password is not None or "password=" in parts.query:
        # argv shows in `ps` and shell histories: the password comes from PGPASSFILE.
        raise ImportFailed("--to must not carry a password: put it in a pgpass file (PGPASSFILE)")


# --- the source -----------------------------------------------------------------------------


def open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ImportFailed(f"{path} does not exist")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    except sqlite3.Error as exc:
        conn.close()
        raise ImportFailed(f"{path} is not a centre database: {exc}") from exc
    missing = [m.name for m in CENTRE_MIGRATIONS if m.name not in done]
    if missing:
        conn.close()
        raise ImportFailed(f"{path} lacks migrations {', '.join(missing)}: open it once with"
                           " this version (e.g. `edge centre ledger`), then move it")  # fmt: skip
    return conn


Columns = list[tuple[str, int]]  # (name, primary-key position or 0), in the table's order


def source_tables(conn: sqlite3.Connection) -> dict[str, tuple[Columns, bool]]:
    """Table -> (its columns, whether it has a rowid), in creation order."""
    found = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY rowid"
    ).fetchall()
    return {
        name: ([(r[1], r[5]) for r in conn.execute(f'PRAGMA table_info("{name}")')],
               "WITHOUT ROWID" not in sql.upper())
        for name, sql in found if name not in SKIPPED
    }  # fmt: skip


def source_rows(conn: sqlite3.Connection, table: Table, ordered: bool) -> Iterator[list[Any]]:
    """Rows in the key's order (`ordered`, for the digest) or for COPY (then the rowid last)."""
    cols = ", ".join(f'"{c}"' for c in table.columns)
    if table.rowid and not ordered:
        cols += ", rowid"
    order = " ORDER BY " + ", ".join(f'"{c}"' for c in table.key) if ordered else ""
    cursor = conn.execute(f'SELECT {cols} FROM "{table.name}"{order}')
    while rows := cursor.fetchmany(CHUNK):
        yield from (list(r) for r in rows)


def source_figures(conn: sqlite3.Connection, tables: Sequence[Table]) -> Figures:
    figures = Figures()
    conn.execute("BEGIN")  # one snapshot for every figure
    try:
        for table in tables:
            digest, n = hashlib.sha256(), 0
            for row in source_rows(conn, table, ordered=True):
                digest.update(_canonical(row))
                n += 1
            figures.counts[table.name], figures.digests[table.name] = n, digest.hexdigest()
        figures.heads = {r[0]: (int(r[1]), r[2])
                         for r in conn.execute("SELECT node, seq, hash FROM chain_heads")}  # fmt: skip
    finally:
        conn.execute("ROLLBACK")
    return figures


# --- the target -----------------------------------------------------------------------------


async def target_columns(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        out.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    return out


def plan(source: dict[str, tuple[Columns, bool]], target: dict[str, dict[str, str]]) -> list[Table]:
    """The tables to move; refuses a source column the target has no place for (never dropped)."""
    tables = []
    for name, (cols, has_rowid) in source.items():
        there = target.get(name)
        if there is None:
            raise ImportFailed(f"the target's schema has no table {name}")
        names = tuple(c for c, _ in cols)
        lost = [c for c in names if c not in there]
        odd = [f"{c} ({there[c]})" for c in names if c in there and there[c] not in CONVERT]
        if lost or odd:
            raise ImportFailed(f"table {name}: cannot move column(s) {', '.join(lost + odd)}")
        key = ORDER.get(name) or tuple(c for c, pk in sorted(cols, key=lambda c: c[1]) if pk)
        text = frozenset(c for c in names if there[c] in ("text", "character varying"))
        rowid = has_rowid and ROWID in there and ROWID not in names
        tables.append(Table(name, names, key or names, text, rowid))
    return tables


def _target_query(table: Table) -> str:
    # SQLite compares text bytewise and puts NULL first: the same order here, whatever the
    # database's collation.
    order = ", ".join(f'"{c}"' + (' COLLATE "C"' if c in table.text else "") + " NULLS FIRST"
                      for c in table.key)  # fmt: skip
    cols = ", ".join(f'"{c}"' for c in table.columns)
    return f'SELECT {cols} FROM "{table.name}" ORDER BY {order}'


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


async def target_figures(conn: asyncpg.Connection, tables: Sequence[Table]) -> Figures:
    figures = Figures()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for table in tables:
            digest, n = hashlib.sha256(), 0
            async for record in conn.cursor(_target_query(table), prefetch=CHUNK):
                digest.update(_canonical([_plain(v) for v in record.values()]))
                n += 1
            figures.counts[table.name], figures.digests[table.name] = n, digest.hexdigest()
        figures.heads = {r["node"]: (int(r["seq"]), r["hash"])
                         for r in await conn.fetch("SELECT node, seq, hash FROM chain_heads")}  # fmt: skip
    return figures


async def occupied(conn: asyncpg.Connection, tables: Sequence[Table]) -> list[str]:
    """Tables holding centre data (the rows a fresh schema starts with do not count)."""
    full = []
    for table in tables:
        n = await conn.fetchval(f'SELECT count(*) FROM "{table.name}"')
        if n > SEEDED_ROWS.get(table.name, 0):
            full.append(table.name)
    return full


async def _chunks(
    rows: Iterator[list[Any]], convert: list[Callable[[Any], Any]]
) -> AsyncIterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(tuple(None if v is None else f(v) for f, v in zip(convert, row, strict=True)))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
            await asyncio.sleep(0)
    if chunk:
        yield chunk


async def copy_table(conn: asyncpg.Connection, source: sqlite3.Connection, table: Table,
                     types: dict[str, str], clock: Callable[[], float]) -> int:  # fmt: skip
    total = source.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]
    convert = [CONVERT[types[c]] for c in table.columns] + ([int] if table.rowid else [])
    columns = list(table.columns) + ([ROWID] if table.rowid else [])
    if table.name in SEEDED_ROWS:  # a singleton the schema made: the source's replaces it
        await conn.execute(f'DELETE FROM "{table.name}"')
    done = 0
    # The one progress of long work: a bar on a terminal, a log line every few seconds else.
    with Progress(f"copy {table.name}", total, unit="rows", clock=clock) as progress:
        async for chunk in _chunks(source_rows(source, table, ordered=False), convert):
            await conn.copy_records_to_table(table.name, records=chunk, columns=columns)
            done += len(chunk)
            progress.advance(len(chunk))
    return done


async def _identities_after_copy(conn: asyncpg.Connection) -> None:
    """COPY wrote the identity columns itself: their sequences go on after the largest value."""
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    )
    for row in rows:
        table, column = row["table_name"], row["column_name"]
        top = await conn.fetchval(f'SELECT max("{column}") FROM "{table}"')
        if top is not None:
            await conn.execute("SELECT setval(pg_get_serial_sequence($1, $2), $3)",
                               f'"{table}"', column, top)  # fmt: skip


@dataclass(frozen=True)
class Moved:
    rows: dict[str, int]
    heads: dict[str, tuple[int, str]]
    seconds: float
    differences: list[str]


async def migrate(source_path: Path, url: str, *, replace: bool = False,
                  clock: Callable[[], float] = time.monotonic) -> Moved:  # fmt: skip
    """Create the schema (as the centre would at its first start), copy, commit, verify.
    ImportFailed when it cannot: then no centre data was written."""
    import asyncpg

    check_url(url)
    started = clock()
    with closing(open_source(source_path)) as source:
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ImportFailed(f"cannot connect to {safe_url(url)}: {exc}") from exc
        try:
            await pgschema.apply_migrations(conn)
            types = await target_columns(conn)
            tables = plan(source_tables(source), types)
            source.execute("BEGIN")  # one snapshot of the source for the whole copy
            try:
                async with conn.transaction():
                    full = await occupied(conn, tables)
                    if full and not replace:
                        raise ImportFailed(f"the target already holds centre data ({', '.join(full)}):"
                                           " nothing written; --replace empties it first")  # fmt: skip
                    if full:
                        names = ", ".join(f'"{t.name}"' for t in tables)
                        await conn.execute(f"TRUNCATE {names}")
                        log.info("emptied the target's tables (--replace)")
                    rows = {t.name: await copy_table(conn, source, t, types[t.name], clock)
                            for t in tables}  # fmt: skip
                    await _identities_after_copy(conn)
            finally:
                source.execute("ROLLBACK")
            log.info("committed; verifying both sides")
            here = source_figures(source, tables)
            there = await target_figures(conn, tables)
        finally:
            await conn.close()
    return Moved(rows, here.heads, clock() - started, here.differences(there))


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        check_url(args.to)
        if not args.source.is_file():
            raise ImportFailed(f"--from {args.source} does not exist")
    except ImportFailed as exc:
        print(f"edge centre migrate-to-postgres: {exc.detail}", file=sys.stderr)
        return 2
    import asyncpg

    try:
        moved = asyncio.run(migrate(args.source, args.to, replace=args.replace))
    except ImportFailed as exc:
        print(f"edge centre migrate-to-postgres: {exc.detail}", file=sys.stderr)
        return 1
    except (SyncError, OSError, sqlite3.Error, asyncpg.PostgresError) as exc:
        print(f"edge centre migrate-to-postgres: {exc}", file=sys.stderr)
        return 1
    for name, n in moved.rows.items():
        print(f"{name}: {n} rows")
    for node, (seq, digest) in sorted(moved.heads.items()):
        print(f"chain head {node}: seq {seq}, hash {digest}")
    if moved.differences:
        print("NOT VERIFIED: " + "; ".join(moved.differences), file=sys.stderr)
        print("the source changed during the move? stop the SQLite centre and run again with"
              " --replace", file=sys.stderr)  # fmt: skip
        return 1
    print(
        f"verified: {sum(moved.rows.values())} rows in {len(moved.rows)} tables, "
        f"{len(moved.heads)} chain heads, the digests equal ({moved.seconds:.1f} s)"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "move an SQLite centre into PostgreSQL (one transaction, verified after)"
    parser = sub.add_parser("migrate-to-postgres", help=text, description=text)
    parser.add_argument("--from", dest="source", type=Path, required=True, metavar="CENTRE.db",
                        help="the SQLite centre's database file (read only)")  # fmt: skip
    parser.add_argument("--to", required=True, metavar="postgresql://USER@HOST/DB",
                        help="no password here: it comes from PGPASSFILE or ~/.pgpass")  # fmt: skip
    parser.add_argument("--replace", action="store_true",
                        help="empty the target's centre tables first (same transaction)")  # fmt: skip
    parser.set_defaults(func=cmd_migrate)
