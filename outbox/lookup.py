"""`select_in`: a query over many keys as `IN (...)` lookups of bounded size.

SQLite caps bound parameters per statement (32,766 since 3.32, 999 before); lookups of
500 keys stay far under either and are as fast as one big list.
"""

from __future__ import annotations

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
