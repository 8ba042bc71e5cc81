"""Meter readings at the centre: a node's `meter_reading` entries (PROTOCOL 5.3).

The centre records every reading it applies, from every node of the governorate, so a
meter's last reading here is the newest any counter took. A reading is rejected with a
reason when its account or meter is not the governorate's, or when it is below the meter's
last reading without a rollover; no bill changes (billing reads the readings).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import msgpack

KIND = "meter_reading"
FIELDS = ("reading_id", "account", "meter", "reading", "read_at", "source", "rollover")
COLUMNS = ("entry", "node", "governorate", "account", "meter", "reading", "read_at", "source",
           "note", "rollover", "flag", "verdict", "reason", "received_at")  # fmt: skip
LIST_HEADER = ("id", "node", "account", "meter", "reading", "read_at", "source", "rollover",
               "flag", "verdict", "reason")  # fmt: skip

MIGRATION_SQL = """
-- Every meter reading a node sent (applied or rejected) and the verdict it got; the newest
-- applied one of a meter is its last reading.
CREATE TABLE meter_readings (
    entry       TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    governorate TEXT NOT NULL,
    account     TEXT NOT NULL,
    meter       TEXT NOT NULL,
    reading     INTEGER NOT NULL,
    read_at     TEXT NOT NULL,
    source      TEXT NOT NULL,
    note        TEXT,
    rollover    INTEGER NOT NULL,
    flag        TEXT,
    verdict     TEXT NOT NULL,
    reason      TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX meter_readings_meter ON meter_readings (governorate, meter, verdict);
"""


@dataclass(frozen=True)
class Reading:
    account: str
    meter: str
    reading: int
    read_at: str
    source: str
    note: str | None
    rollover: bool
    flag: str | None


def parse(payload: bytes, entry_id: str) -> Reading | None:
    """The reading in a payload, None when it is malformed."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:  # any msgpack failure means the same thing: a malformed payload
        return None
    if not isinstance(data, dict) or any(f not in data for f in FIELDS):
        return None
    if data["reading_id"] != entry_id or type(data["reading"]) is not int or data["reading"] < 0:
        return None
    if any(not isinstance(data[f], str) for f in ("account", "meter", "read_at", "source")):
        return None
    note, flag = data.get("note"), data.get("flag")
    if not isinstance(data["rollover"], bool) or not isinstance(note, str | None):
        return None
    if not isinstance(flag, str | None):
        return None
    return Reading(
        data["account"], data["meter"], data["reading"], data["read_at"], data["source"], note,
        data["rollover"], flag,
    )  # fmt: skip


def judge(
    r: Reading, meters_of: dict[str, set[str]], last_reading: dict[str, int]
) -> tuple[str, str | None]:
    """(verdict, reason) of a reading, from its governorate's accounts' meters and each
    meter's newest applied reading (what the store read for the batch)."""
    if r.account not in meters_of:
        return "rejected", "unknown_account"
    if r.meter not in meters_of[r.account]:
        return "rejected", "meter_not_on_account"
    last = last_reading.get(r.meter)
    if last is not None and r.reading < last and not r.rollover:
        return "rejected", "reading_below_last"
    return "applied", None


def row(
    entry_id: str, node: str, governorate: str, r: Reading, verdict: str, reason: str | None,
    now: float,
) -> tuple[Any, ...]:  # fmt: skip
    """The meter_readings row of a reading (COLUMNS' order), applied or rejected."""
    return (entry_id, node, governorate, r.account, r.meter, r.reading, r.read_at, r.source,
            r.note, int(r.rollover), r.flag, verdict, reason, now)  # fmt: skip


def rows(conn: sqlite3.Connection, governorate: str | None = None) -> list[tuple[Any, ...]]:
    """The readings recorded, oldest first (LIST_HEADER's columns)."""
    sql = (
        "SELECT entry, node, account, meter, reading, read_at, source, rollover, flag, verdict,"
        " reason FROM meter_readings"
    )
    if governorate is None:
        return conn.execute(sql + " ORDER BY rowid").fetchall()
    return conn.execute(sql + " WHERE governorate = ? ORDER BY rowid", (governorate,)).fetchall()
