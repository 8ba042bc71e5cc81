"""Meter readings taken at the node (DESIGN 5.15): the checks against the mirror and the
node's own readings, and the write job that records one as an outbox entry.

Readings can come in crowds (an inspector's round typed in at once), so they go through a
Batcher over the writer's group commit, one savepoint per reading.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

import msgpack

import outbox
from edge import errors
from edge.payments import Reply, stored_reply
from sync.timefmt import iso

KIND = "meter_reading"
SOURCES = ("counter", "subscriber", "inspector")
NOTE_MAX = 500  # characters of a note or a rollover's reason (edge.text's rule)
MAX_READING = 10**12  # kWh on a register: far above any meter, within SQLite's integers
CYCLE_DAYS = 61  # a billing cycle is two months: its kWh over this is the average daily use
MIN_DAILY_KWH = 1.0  # a meter that used nothing last cycle still gets a day's allowance
METER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}\Z")
JUMP = "implausible_jump"
TABLE_SQL = """
-- The meter readings this node took (edge/readings.py, DESIGN 5.15): `seq` is the reading's
-- own outbox entry. The last one of a meter that the centre did not reject is the meter's
-- "last known reading" at this node; `flag` marks one taken but to be reviewed.
CREATE TABLE meter_readings (
    seq       INTEGER PRIMARY KEY REFERENCES outbox_entries (seq),
    account   TEXT NOT NULL,
    meter     TEXT NOT NULL,
    reading   INTEGER NOT NULL CHECK (reading >= 0),
    read_at   TEXT NOT NULL,
    source    TEXT NOT NULL CHECK (source IN ('counter', 'subscriber', 'inspector')),
    note      TEXT,
    rollover  INTEGER NOT NULL CHECK (rollover IN (0, 1)),
    flag      TEXT,
    channel   TEXT NOT NULL,
    at        REAL NOT NULL
);
CREATE INDEX meter_readings_meter ON meter_readings (meter, seq);
CREATE INDEX meter_readings_at ON meter_readings (at);
"""


@dataclass(frozen=True)
class Reading:
    """A reading as the client sent it, checked for shape (not yet against the mirror)."""

    account: str
    meter: str
    reading: int
    read_at: str  # YYYY-MM-DD
    source: str
    note: str | None
    rollover: bool

    def fingerprint(self) -> str:
        return outbox.fingerprint(
            "POST /v1/meter-readings", self.account, self.meter, str(self.reading), self.read_at,
            self.source, self.note or "", "1" if self.rollover else "0",
        )  # fmt: skip


@dataclass(frozen=True)
class ReadingCall:
    """One reading to record, with its id and time prepared off the writer."""

    channel: str
    key: str
    reading: Reading
    now: float
    entry_id: str


@dataclass(frozen=True)
class Previous:
    reading: int
    read_at: str


@dataclass(frozen=True)
class Taker(outbox.Batcher[ReadingCall, Any]):
    """The write job over every reading of one commit (frozen: equal takers share a commit)."""

    jump_factor: float

    def __call__(
        self, conn: sqlite3.Connection, items: list[ReadingCall]
    ) -> list[Any | BaseException]:
        out: list[Any | BaseException] = []
        for call in items:
            conn.execute("SAVEPOINT reading")
            try:
                out.append(take(conn, self.jump_factor, call))
            except errors.ApiError as exc:
                conn.execute("ROLLBACK TO reading")
                out.append(exc)
            conn.execute("RELEASE reading")
        return out


def previous(conn: sqlite3.Connection, meter: str) -> Previous | None:
    """The meter's last known reading at this node: its newest one the centre did not reject."""
    row = conn.execute(
        "SELECT r.reading, r.read_at FROM meter_readings r JOIN outbox_entries e ON e.seq = r.seq"
        " WHERE r.meter = ? AND e.state != 'rejected' ORDER BY r.seq DESC LIMIT 1",
        (meter,),
    ).fetchone()
    return None if row is None else Previous(int(row[0]), str(row[1]))


def jumped(rise: int, days: int, cycle_kwh: int, factor: float) -> bool:
    """True when `rise` kWh in `days` is more than `factor` times the last cycle's daily use."""
    daily = max(cycle_kwh / CYCLE_DAYS, MIN_DAILY_KWH)
    return rise > factor * daily * max(days, 1)


def take(conn: sqlite3.Connection, jump_factor: float, call: ReadingCall) -> Any:
    """Check one reading and record it (its entry, its row, its stored answer); raise to refuse."""
    r = call.reading
    fp = r.fingerprint()
    known = stored_reply(conn, call.channel, call.key, fp)
    if known is not None:
        return known
    meters = conn.execute(
        "SELECT meter, kwh FROM bills WHERE account = ? ORDER BY cycle DESC", (r.account,)
    ).fetchall()
    if not meters:
        raise errors.UnknownAccount(f"no bills for account {r.account} in this node's mirror")
    cycle_kwh = next((int(kwh) for meter, kwh in meters if meter == r.meter), None)
    if cycle_kwh is None:
        raise errors.MeterNotOnAccount(f"meter {r.meter} is not on account {r.account}'s bills")
    last = previous(conn, r.meter)
    flag = None
    if last is not None and r.reading < last.reading and not r.rollover:
        raise errors.ReadingBelowLast(
            f"{r.reading} kWh is below the meter's last known reading, {last.reading} kWh on"
            f" {last.read_at}; send rollover: true with the reason in note if the register"
            " rolled over or the meter was replaced"
        )
    if last is not None and r.reading >= last.reading:
        days = (date.fromisoformat(r.read_at) - date.fromisoformat(last.read_at)).days
        if jumped(r.reading - last.reading, days, cycle_kwh, jump_factor):
            flag = JUMP
    payload = {
        "reading_id": call.entry_id, "account": r.account, "meter": r.meter,
        "reading": r.reading, "read_at": r.read_at, "source": r.source, "note": r.note,
        "rollover": r.rollover, "flag": flag, "channel": call.channel,
        "idempotency_key": call.key, "taken_at": iso(call.now),
    }  # fmt: skip
    raw = msgpack.packb(payload, use_bin_type=True)
    (appended,) = outbox.append_many(conn, [(KIND, raw, call.entry_id, call.now)])
    conn.execute(
        "INSERT INTO meter_readings (seq, account, meter, reading, read_at, source, note,"
        " rollover, flag, channel, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (appended.seq, r.account, r.meter, r.reading, r.read_at, r.source, r.note,
         int(r.rollover), flag, call.channel, call.now),
    )  # fmt: skip
    body = document(payload, last, "pending_sync")
    raw_body = json.dumps(body, ensure_ascii=False).encode()
    outbox.idempotency.remember(
        conn, call.channel, call.key, fp, outbox.StoredResponse(201, raw_body), now=call.now
    )
    return Reply(201, raw_body, replayed=False, payment_id=call.entry_id)


def document(payload: dict[str, Any], last: Previous | None, state: str) -> dict[str, Any]:
    """The reading as the API shows it."""
    return {
        "reading_id": payload["reading_id"], "account": payload["account"],
        "meter": payload["meter"], "reading": payload["reading"],
        "read_at": payload["read_at"], "source": payload["source"], "note": payload["note"],
        "rollover": payload["rollover"], "flag": payload["flag"],
        "previous": None if last is None else {"reading": last.reading, "read_at": last.read_at},
        "state": state, "taken_at": payload["taken_at"],
    }  # fmt: skip


def counts(conn: sqlite3.Connection, since: float) -> tuple[int, int]:
    """(readings taken since `since`, readings not yet answered by the centre)."""
    today = conn.execute("SELECT COUNT(*) FROM meter_readings WHERE at >= ?", (since,)).fetchone()
    pending = conn.execute(
        "SELECT COUNT(*) FROM meter_readings r JOIN outbox_entries e ON e.seq = r.seq"
        " WHERE e.state = 'pending'"
    ).fetchone()
    return int(today[0]), int(pending[0])
