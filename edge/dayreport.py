"""The day's close (issue 16): what a node's payments of one local day came to, by SQL.

One definition, used by `edge report day` and GET /v1/reports/day alike. The local day is the
one in the receipt number (node.timezone when it was taken), so the payments_day index
(edge.0007) serves it. States are payments.STATE_SQL's (a void or refund is the action in force
on a payment: edge.actions), so a correction counts on the payment's own day.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

import outbox
from edge import payments
from sync.timefmt import iso

_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
KEYS = ("channel", "cashier", "method", "kind")
# Each state a payment shows (payments.STATE_SQL, one rule each) is one figure: a payment is
# in exactly one, so taken = pending + delivered + credited + rejected + voided + refunded +
# retargeted. moved_in (a retarget's new payment, an entry kind of its own) is part of taken.
STATES = (
    ("pending", "pending_sync"), ("delivered", "synced"), ("credited", "credited"),
    ("rejected", "rejected"), ("voided", "voided"), ("refunded", "refunded"),
    ("retargeted", "retargeted"),
)  # fmt: skip
FIGURES: tuple[tuple[str, str], ...] = (
    ("taken", "1"),
    *((name, f"st = '{state}'") for name, state in STATES),
    ("moved_in", "kind = 'retarget'"),
)
NAMES = tuple(name for name, _ in FIGURES)


class BadDay(ValueError):
    """Not a local day YYYY-MM-DD."""


def parse_day(value: str) -> date:
    if not _DAY.match(value):
        raise BadDay(value)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadDay(value) from None


def _select() -> str:
    """One statement: a row per group, then the day's totals row (keys NULL) summed from them."""
    # Each payment's state is decided once (the CASE stops at the first rule that holds) and
    # the rows are MATERIALIZED, else flattening repeats the CASE, subqueries and all, in
    # every figure; the totals are summed from the groups, not from a second pass.
    state = " ".join(f"WHEN {payments.STATE_SQL[st]} THEN '{st}'" for _, st in STATES)
    inner = (
        f"SELECT p.channel, p.cashier, p.method, o.kind, p.amount, p.receipt,"
        f" CASE {state} END AS st FROM payments p JOIN {outbox.TABLE} o ON o.seq = p.seq"
        " WHERE substr(p.receipt, -15, 8) = ?"  # the expression payments_day indexes
    )
    sums = ", ".join(
        f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS c{n},"
        f" SUM(CASE WHEN {cond} THEN amount ELSE 0 END) AS a{n}"
        for n, (_, cond) in enumerate(FIGURES)
    )
    again = ", ".join(f"SUM(c{n}), SUM(a{n})" for n in range(len(FIGURES)))
    keys = "channel, cashier, method, kind"
    return (
        f"WITH d AS MATERIALIZED ({inner}),"
        f" g AS MATERIALIZED (SELECT {keys}, {sums}, MIN(receipt) AS lo, MAX(receipt) AS hi"
        f" FROM d GROUP BY {keys})"
        f" SELECT 0, * FROM g UNION ALL SELECT 1, NULL, NULL, NULL, NULL, {again}, MIN(lo),"
        " MAX(hi) FROM g ORDER BY 1, 2, 3, 4, 5"
    )


def _figures(values: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, name in enumerate(NAMES):
        out[name] = {"count": int(values[2 * n] or 0), "amount": int(values[2 * n + 1] or 0)}
    first, last = values[2 * len(NAMES)], values[2 * len(NAMES) + 1]
    out["first_receipt"], out["last_receipt"] = first, last
    return out


@dataclass(frozen=True)
class DayReport:
    node: str
    governorate: str
    timezone: str
    day: date
    generated_at: float
    rows: list[dict[str, Any]]
    totals: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "governorate": self.governorate, "day": self.day.isoformat(),
            "timezone": self.timezone, "currency": "SYP", "generated_at": iso(self.generated_at),
            "rows": self.rows, "totals": self.totals, "net": net(self.totals),
        }  # fmt: skip


def build(
    conn: sqlite3.Connection, *, node: str, governorate: str, timezone: str, day: date,
    now: float,
) -> DayReport:  # fmt: skip
    """The report of local day `day`: one row per channel, cashier, method and entry kind
    (a retarget's new payment is of kind `retarget`), and the day's totals."""
    key = day.strftime("%Y%m%d")
    *groups, last = conn.execute(_select(), (key,)).fetchall()
    rows = [{**dict(zip(KEYS, v[1:5], strict=True)), **_figures(v[5:])} for v in groups]
    return DayReport(node, governorate, timezone, day, now, rows, _figures(last[5:]))


def net(figures: dict[str, Any]) -> int:
    """The cash the day's payments leave in the drawers: taken, less voided and refunded,
    less moved_in (a retarget's payment moves money taken before; it is not new money)."""
    out = int(figures["taken"]["amount"]) - int(figures["moved_in"]["amount"])
    return out - int(figures["voided"]["amount"]) - int(figures["refunded"]["amount"])
