"""Late-payment fines: the rule the centre publishes and the one computation of a fine.

Pure and shared: the node (inquiries, taking a payment) and the centre (judging a payment)
import these functions, so the same rule, bill and day give the same integer on both sides.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from sync.bill import MAX_INT
from sync.timefmt import parse_iso

BP = 10_000  # basis points in a whole: percent_bp = 150 is 1.5 %
MAX_GRACE_DAYS = 366
MISMATCH = "fine_mismatch"  # the verdict's reason when the centre's figure is not the node's


@dataclass(frozen=True)
class Rule:
    """One version of a governorate's fine rule, in force from `effective` (a local day).

    Each started month after the grace adds `fixed` piastres plus `percent_bp` basis points
    of the bill's amount; the total never exceeds `cap` (None: no cap).
    """

    governorate: str
    version: int
    effective: date
    grace_days: int
    fixed: int
    percent_bp: int
    cap: int | None

    def check(self) -> None:
        """Raise ValueError naming the field that is out of range."""
        if not 1 <= self.version <= MAX_INT:
            raise ValueError("version must be at least 1")
        if not 0 <= self.grace_days <= MAX_GRACE_DAYS:
            raise ValueError(f"grace_days must be in [0, {MAX_GRACE_DAYS}]")
        if not 0 <= self.fixed <= MAX_INT:
            raise ValueError("fixed must be a non-negative integer of piastres")
        if not 0 <= self.percent_bp <= BP:
            raise ValueError(f"percent_bp must be in [0, {BP}]")
        if self.cap is not None and not 0 <= self.cap <= MAX_INT:
            raise ValueError("cap must be a non-negative integer of piastres, or none")

    def monthly(self, amount: int) -> int:
        """What one started month adds on a bill of `amount` piastres.

        The percentage is rounded down to the piastre (in the subscriber's favour), once per
        month, before anything is added: the fine is always a whole number of these.
        """
        return self.fixed + amount * self.percent_bp // BP


def local_day(ts: float, tz: tzinfo) -> date:
    """The local calendar day (governorate time zone) that contains the Unix time `ts`."""
    return datetime.fromtimestamp(ts, tz).date()


def payment_day(accepted_at: str, now: float, tz: tzinfo) -> date:
    """The centre's day for a payment: the local day of its `accepted_at`, but never after
    the centre's own today, so a node whose clock runs ahead cannot date a payment into a
    fine that is not due yet. A replay days later keeps the day the cashier took the money.
    ValueError when `accepted_at` is not an ISO time."""
    return min(local_day(parse_iso(accepted_at), tz), local_day(now, tz))


def due_day(due_date: str) -> date | None:
    """A bill's `due_date` (`YYYY-MM-DD`) as a day; None when it is not one (no fine then)."""
    if len(due_date) != 10:
        return None
    try:
        return date.fromisoformat(due_date)
    except ValueError:
        return None


def add_months(day: date, months: int) -> date:
    """The same day of the month `months` later, clamped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def started_months(first_late: date, day: date) -> int:
    """Months started from `first_late` to `day` inclusive: 1 on `first_late` itself, 2 from
    the same day a month later (31 January -> 28 or 29 February), 0 before it."""
    if day < first_late:
        return 0
    whole = (day.year - first_late.year) * 12 + day.month - first_late.month
    if add_months(first_late, whole) > day:
        whole -= 1
    return whole + 1


def rule_on(rules: Iterable[Rule], day: date) -> Rule | None:
    """The rule in force on `day`: the latest `effective` on or before it (the highest
    version among those of one day); None before the first rule takes effect."""
    best: Rule | None = None
    for rule in rules:
        if rule.effective <= day and (
            best is None or (rule.effective, rule.version) > (best.effective, best.version)
        ):
            best = rule
    return best


def fine(rule: Rule | None, amount: int, due_date: str, day: date) -> int:
    """The whole fine a bill carries on `day` under `rule`, in piastres.

    0 without a rule, before its effective date, for a due date that is not a date, and up
    to and including the last grace day (`due_date + grace_days`). From the next day, each
    started month adds `rule.monthly(amount)`; the total is capped. A rule that changes
    mid-cycle is not pro-rated: on each day the whole fine is the one rule of that day's.
    """
    if rule is None or day < rule.effective:
        return 0
    due = due_day(due_date)
    if due is None:
        return 0
    try:
        first_late = due + timedelta(days=rule.grace_days + 1)
    except OverflowError:  # a due date in year 9999: never late
        return 0
    total = started_months(first_late, day) * rule.monthly(amount)
    if rule.cap is not None:
        total = min(total, rule.cap)
    return min(total, MAX_INT)


def owed(
    rule: Rule | None, day: date, amount: int, due_date: str, principal_due: int, fine_paid: int
) -> int:
    """The fine still to pay on a bill: its fine on `day` less what was paid of fines on it.

    Only a bill with something of its amount left to pay owes a fine: once the amount is
    paid (and payments cover the fine first, `allocate`) the fine stops growing.
    """
    if principal_due <= 0:
        return 0
    return max(0, fine(rule, amount, due_date, day) - fine_paid)


def allocate(amount: int, fine_owed: int) -> tuple[int, int]:
    """(to the fine, to the bill) of a payment: the fine first, then the bill's amount."""
    to_fine = min(amount, max(0, fine_owed))
    return to_fine, amount - to_fine
