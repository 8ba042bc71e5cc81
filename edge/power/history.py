"""The node's recent past: power events (every change of state), UPS readings (one a
minute), power periods for the dashboard's chart, and when the link last changed state.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.db import Database
from edge.power.policy import Reading, Transition
from sync.timefmt import iso

log = logging.getLogger(__name__)

READING_EVERY_S = 60.0
KEEP_READINGS_S = 8 * 86400.0  # a week back and a day spare, ~11,500 rows
MAX_HOURS = 168
MAX_POINTS = 1500  # a chart is a few hundred pixels wide: more points only cost bytes
LINK_CHANGES_KEPT = 500
EVENTS_LIMIT = 1000


@dataclass
class History:
    """Per-node state: when the last reading was stored, the UPS's marks, the link's changes."""

    db: Database
    clock: Callable[[], float]
    runtime_floor_s: float
    source: str = "none"
    every_s: float = READING_EVERY_S
    last_stored: float | None = None  # monotonic
    charge_low: float | None = None
    ups_runtime_low_s: float | None = None
    link_since: float | None = None
    link_changes: deque[tuple[float, str]] = field(
        default_factory=lambda: deque(maxlen=LINK_CHANGES_KEPT)
    )

    def on_link_change(self, state: str) -> None:
        now = self.clock()
        self.link_since = now
        self.link_changes.append((now, state))

    async def note(self, reading: Reading) -> None:
        """Keep the UPS's low marks; store the reading if a minute has passed since the last."""
        if reading.ok:
            self.charge_low = _number(reading.raw.get("battery.charge.low"), self.charge_low)
            self.ups_runtime_low_s = _number(
                reading.raw.get("battery.runtime.low"), self.ups_runtime_low_s
            )
        mono = time.monotonic()
        if self.last_stored is not None and mono - self.last_stored < self.every_s:
            return
        self.last_stored = mono
        at = self.clock()
        try:
            await self.db.write(lambda c: store_reading(c, reading, at))
        except Exception:  # the chart loses a point; the monitor must go on
            log.exception("could not store the power reading")

    def marks(self) -> dict[str, float | None]:
        charge_low = self.charge_low
        if charge_low is None and self.source == "psutil":
            charge_low = 10.0  # what PsutilSource treats as low battery
        return {
            "charge_low": charge_low,
            "runtime_low_s": float(self.runtime_floor_s),
            "ups_runtime_low_s": self.ups_runtime_low_s,
        }


def _number(value: str | None, default: float | None) -> float | None:
    try:
        return default if value is None else float(value)
    except ValueError:
        return default


def store_reading(conn: sqlite3.Connection, reading: Reading, at: float) -> None:
    ok = reading.ok
    conn.execute(
        "INSERT INTO power_readings (at, flags, charge, runtime_s, load_pct, input_voltage)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (at, reading.status if ok else None, reading.charge if ok else None,
         reading.runtime_s if ok else None, reading.load_pct if ok else None,
         reading.input_voltage if ok else None),
    )  # fmt: skip
    conn.execute("DELETE FROM power_readings WHERE at < ?", (at - KEEP_READINGS_S,))


def power_history(conn: sqlite3.Connection, since: float, until: float) -> dict[str, Any]:
    """Readings (with the events' own figures merged in) and state periods in [since, until]."""
    rows = conn.execute(
        "SELECT at, flags, charge, runtime_s FROM power_readings WHERE at >= ? AND at <= ?"
        " ORDER BY at",
        (since, until),
    ).fetchall()
    events = conn.execute(
        "SELECT at, to_state, flags, charge, runtime_s FROM power_events"
        " WHERE at >= ? AND at <= ? ORDER BY at, id",
        (since, until),
    ).fetchall()
    before = conn.execute(
        "SELECT to_state FROM power_events WHERE at < ? ORDER BY at DESC, id DESC LIMIT 1",
        (since,),
    ).fetchone()
    points = [(at, flags, charge, runtime) for at, flags, charge, runtime in rows]
    points += [(at, flags, charge, runtime) for at, _, flags, charge, runtime in events]
    points.sort(key=lambda p: p[0])
    stride = max(1, -(-len(points) // MAX_POINTS))
    readings = [
        {"at": iso(at), "flags": flags, "charge": charge, "runtime_s": runtime}
        for at, flags, charge, runtime in points[::stride]
    ]
    periods: list[dict[str, Any]] = []
    state, start = (before[0] if before else "unknown"), since
    for at, to_state, *_ in events:
        if to_state != state:
            periods.append({"state": state, "from": iso(start), "to": iso(at)})
            state, start = to_state, at
    periods.append({"state": state, "from": iso(start), "to": None})
    return {"readings": readings, "periods": periods}


def link_periods(history: History, since: float) -> list[dict[str, Any]]:
    """The link's states since `since`, as far back as this process has seen them."""
    out: list[dict[str, Any]] = []
    changes = list(history.link_changes)
    for i, (at, state) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else None
        if end is not None and end < since:
            continue
        out.append(
            {
                "state": state,
                "from": iso(max(at, since)),
                "to": None if end is None else iso(end),
            }
        )
    return out


def record_event(conn: sqlite3.Connection, change: Transition, at: float) -> None:
    r = change.reading
    conn.execute(
        "INSERT INTO power_events (at, from_state, to_state, flags, charge, runtime_s, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (at, change.from_state, change.to_state, r.status, r.charge, r.runtime_s, change.reason),
    )


def events(
    conn: sqlite3.Connection, *, since_id: int | None = None, since_at: float | None = None,
    limit: int = EVENTS_LIMIT,
) -> list[dict[str, Any]]:  # fmt: skip
    """Events after `since_id` / `since_at`, oldest first; without either, the latest `limit`."""
    cols = "id, at, from_state, to_state, flags, charge, runtime_s, reason"
    if since_id is not None or since_at is not None:
        where, arg = ("id > ?", since_id) if since_id is not None else ("at > ?", since_at)
        sql = f"SELECT {cols} FROM power_events WHERE {where} ORDER BY id LIMIT ?"
        rows = conn.execute(sql, (arg, limit)).fetchall()
    else:
        sql = f"SELECT {cols} FROM power_events ORDER BY id DESC LIMIT ?"
        rows = conn.execute(sql, (limit,)).fetchall()[::-1]
    keys = ("id", "at", "from", "to", "flags", "charge", "runtime_s", "reason")
    return [dict(zip(keys, (*row[:1], iso(row[1]), *row[2:]), strict=True)) for row in rows]
