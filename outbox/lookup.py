"""Statements over many rows of bounded size: `select_in` looks keys up as `IN (...)` lists,
`insert_rows` writes rows as multi-row `VALUES` lists.

SQLite caps bound parameters per statement (32,766 since 3.32, 999 before); lookups of
500 keys stay far under either and are as fast as one big list.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

CHUNK = 500


def select_in(
    conn: sqlite3.Connection, sql: str, keys: Iterable[Any], *,
    before: Sequence[Any] = (), chunk: int = CHUNK,
) -> Iterator[Any]:  # fmt: skip
    """Rows of `sql` (with one `{marks}` where the `?, ?, ...` list goes) over distinct `keys`.

    `before` are parameters bound ahead of the keys. Keys are deduplicated, order kept.
    """
    if "{marks}" not in sql:
        raise ValueError("select_in needs a {marks} placeholder in its SQL")
    distinct = list(dict.fromkeys(keys))
    for start in range(0, len(distinct), chunk):
        part = distinct[start : start + chunk]
        marks = ", ".join("?" for _ in part)
        yield from conn.execute(sql.format(marks=marks), (*before, *part))


def insert_rows(
    conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], *, tail: str = "",
    largest: int = 64,
) -> None:  # fmt: skip
    """`head` ("INSERT INTO t (a, b) VALUES ") with one `(?, ?)` per row, then `tail`.

    Rows go in order, in statements of `largest` rows and then powers of two below it: at
    most log2(largest) + n / largest statements for n rows, of sizes that repeat, so the
    connection's statement cache keeps them prepared. Each statement is one SQLite step,
    and so one release of the GIL, where executemany is one a row (the writer thread then
    interrupts the event loop far less often). Keep `largest` x width under 999.
    """
    if not rows:
        return
    width = len(rows[0])
    start, size = 0, largest
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        sql = _values(head, width, size, tail)
        conn.execute(sql, [value for row in rows[start : start + size] for value in row])
        start += size


@functools.lru_cache(maxsize=256)
def _values(head: str, width: int, rows: int, tail: str) -> str:
    mark = "(" + ", ".join(["?"] * width) + ")"
    return head + ", ".join([mark] * rows) + tail
