"""The one way times are written: ISO 8601 UTC with milliseconds and `Z`, and local days.

Used by the centre, the node's API and its reports alike, so the same instant always reads
the same everywhere; ordering never depends on these strings (sequence numbers order).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, tzinfo


@functools.lru_cache(maxsize=64)  # inquiries format the same `as_of` over and over
def iso(ts: float) -> str:
    """`2026-12-01T22:20:13.123Z` for a Unix time."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


@functools.lru_cache(maxsize=16)  # every payment of the same second asks the same
def local_day(ts: float, tz: tzinfo) -> str:
    """`YYYYMMDD` of the local day containing `ts` (receipt numbers count per local day)."""
    return datetime.fromtimestamp(ts, tz).strftime("%Y%m%d")


def start_of_day(ts: float, tz: tzinfo) -> float:
    """Local midnight before `ts` in `tz`, as a Unix time."""
    local = datetime.fromtimestamp(ts, tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def parse_iso(value: str) -> float:
    """A Unix time from ISO 8601 (naive means UTC); ValueError when it is not one."""
    when = datetime.fromisoformat(value)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
