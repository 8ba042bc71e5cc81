"""Late fines at the centre: the published rules, their CLI, and judging a payment's fine.

The centre keeps every version of each governorate's rule (`fine_rules`, centre.fines) and
serves them whole (protocol 4 `fine_rules` frame); it recomputes each payment's fine with
sync.fines, the node's own function, and names a disagreement `fine_mismatch`.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sync import fines
from sync.bill import GOVERNORATE

# Every governorate keeps Damascus time (DESIGN 7); the node's node.timezone is the same zone.
TIMEZONE = ZoneInfo("Asia/Damascus")

# `fine_paid` is what this centre counted of payments towards fines on the bill: the fine
# still owed is the fine of the day less it (sync.fines.owed). `entries.fine` is the part of
# each payment counted to the fine (NULL: not a payment decided under protocol 4), which a
# resent entry's verdict repeats.
MIGRATION_SQL = """
CREATE TABLE fine_rules (
    governorate TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    effective   TEXT NOT NULL,
    grace_days  INTEGER NOT NULL CHECK (grace_days >= 0),
    fixed       INTEGER NOT NULL CHECK (fixed >= 0),
    percent_bp  INTEGER NOT NULL CHECK (percent_bp BETWEEN 0 AND 10000),
    cap         INTEGER CHECK (cap >= 0),
    created_at  REAL NOT NULL,
    PRIMARY KEY (governorate, version)
);
ALTER TABLE bills ADD COLUMN fine_paid INTEGER NOT NULL DEFAULT 0 CHECK (fine_paid >= 0);
ALTER TABLE entries ADD COLUMN fine INTEGER CHECK (fine >= 0);
"""


RULE_COLUMNS = "governorate, version, effective, grace_days, fixed, percent_bp, cap"


def rules_from(rows: Iterable[Sequence[Any]]) -> list[fines.Rule]:
    """Rules from rows of RULE_COLUMNS."""
    return [
        fines.Rule(gov, version, date.fromisoformat(eff), grace, fixed, bp, cap)
        for gov, version, eff, grace, fixed, bp, cap in rows
    ]


def rules_of(conn: sqlite3.Connection, governorate: str) -> list[fines.Rule]:
    return rules_from(
        conn.execute(
            f"SELECT {RULE_COLUMNS} FROM fine_rules WHERE governorate = ? ORDER BY version",
            (governorate,),
        )
    )


def next_rule(
    last: int, governorate: str, effective: date, grace_days: int, fixed: int, percent_bp: int,
    cap: int | None,
) -> fines.Rule:  # fmt: skip
    """The version after `last` of `governorate`'s rule; ValueError if out of range."""
    rule = fines.Rule(governorate, last + 1, effective, grace_days, fixed, percent_bp, cap)
    if not GOVERNORATE.match(governorate):
        raise ValueError("governorate must be three capital letters")
    rule.check()
    return rule


def publish(
    conn: sqlite3.Connection, governorate: str, effective: date, grace_days: int, fixed: int,
    percent_bp: int, cap: int | None, now: float,
) -> fines.Rule:  # fmt: skip
    """Add the next version of `governorate`'s rule (a write job); ValueError if out of range.

    Old versions stay: a payment taken on a day before `effective` is judged by the rule of
    its own day, however late it reaches the centre.
    """
    (last,) = conn.execute(
        "SELECT COALESCE(MAX(version), 0) FROM fine_rules WHERE governorate = ?", (governorate,)
    ).fetchone()
    rule = next_rule(last, governorate, effective, grace_days, fixed, percent_bp, cap)
    conn.execute(
        "INSERT INTO fine_rules (governorate, version, effective, grace_days, fixed,"
        " percent_bp, cap, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (governorate, rule.version, effective.isoformat(), grace_days, fixed, percent_bp, cap,
         now),
    )  # fmt: skip
    return rule


def judge(
    rules: list[fines.Rule], accepted_at: str, now: float, amount: int, due_date: str,
    principal_due: int, fine_paid: int,
) -> int:  # fmt: skip
    """The fine the centre counts first out of a payment taken at `accepted_at` (ISO) on a
    bill of `amount`: the owed fine of the payment's day (sync.fines.payment_day)."""
    try:
        day = fines.payment_day(accepted_at, now, TIMEZONE)
    except ValueError:
        day = fines.local_day(now, TIMEZONE)
    return fines.owed(fines.rule_on(rules, day), day, amount, due_date, principal_due, fine_paid)


def register(
    command: Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """`edge centre fine-rule set --governorate G --grace-days N --fixed P --percent-bp B
    [--cap C] --effective YYYY-MM-DD`."""
    parser = command("fine-rule", "publish the next version of a governorate's fine rule", run)
    parser.add_argument("action", choices=("set",), help="set: publish a new version")
    parser.add_argument("--governorate", required=True, help="whose rule (e.g. DAM)")
    parser.add_argument(
        "--grace-days", type=int, required=True, help="days after the due date before a fine"
    )
    parser.add_argument("--fixed", type=int, default=0, help="piastres per started month")
    parser.add_argument(
        "--percent-bp", type=int, default=0, help="basis points of the bill per started month"
    )
    parser.add_argument("--cap", type=int, default=None, help="piastres (default: no cap)")
    parser.add_argument(
        "--effective", type=date.fromisoformat, required=True, help="from this day YYYY-MM-DD"
    )
