"""Offline limits: how much money the node may hold that the centre has not confirmed yet.

"Offline" means undelivered, whatever the link's state: an online node delivers each payment
within seconds, so the limits bite only while the link is down (DESIGN 5.8). The payment
write job reads the usage once per group commit and counts each payment it accepts.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import Any

import outbox
from edge import errors, mirror
from edge.config import Settings
from sync.timefmt import iso

LIMITS = ("max_payment", "max_total", "max_count", "max_age_h", "mirror_max_age_h")


@dataclass(frozen=True)
class Limits:
    """The `[limits.offline]` settings (0: off) and the Retry-After each kind of refusal gets."""

    max_payment: int = 0
    max_total: int = 0
    max_count: int = 0
    max_age_h: float = 0.0
    mirror_max_age_h: float = 0.0
    replay_retry_s: int = 300  # undelivered money must reach the centre: the replayer's cap
    pull_retry_s: int = 30  # the link or the mirror must hear from the centre: one pull

    @classmethod
    def of(cls, s: Settings) -> Limits:
        return cls(
            max_payment=s.limits_offline_max_payment, max_total=s.limits_offline_max_total,
            max_count=s.limits_offline_max_count, max_age_h=s.limits_offline_max_age_h,
            mirror_max_age_h=s.limits_offline_mirror_max_age_h,
            replay_retry_s=max(1, round(s.centre_retry_cap_s)),
            pull_retry_s=max(1, round(s.centre_pull_interval_s)),
        )  # fmt: skip

    @property
    def on(self) -> bool:
        return any(getattr(self, name) for name in LIMITS)


@dataclass(frozen=True)
class Usage:
    """Undelivered payments (count, piastres, when the oldest was taken) and the mirror's age."""

    count: int = 0
    total: int = 0
    oldest_at: float | None = None
    mirror_as_of: float | None = None

    def taken(self, amount: int, now: float) -> Usage:
        """The usage once one more payment is accepted (the next in the same commit sees it)."""
        oldest = now if self.oldest_at is None else self.oldest_at
        return replace(self, count=self.count + 1, total=self.total + amount, oldest_at=oldest)


def read(conn: sqlite3.Connection) -> Usage:
    """Three one-row reads: the counters that triggers keep (edge.0008), the queue's head, the
    mirror's state. Cheap enough for every group commit, however long the outage."""
    row = conn.execute("SELECT count, total FROM offline_totals WHERE id = 1").fetchone()
    count, total = (0, 0) if row is None else (int(row[0]), int(row[1]))
    return Usage(count, total, outbox.oldest_pending_at(conn), mirror.state(conn).as_of)


@dataclass(frozen=True)
class Breach:
    """Which limit a payment would pass, said in English and Arabic, and when to try again."""

    limit: str
    value: float
    used: float | None
    detail: str
    detail_ar: str
    retry_after_s: int

    def error(self) -> errors.OfflineLimit:
        return errors.OfflineLimit(
            self.detail,
            headers={"Retry-After": str(self.retry_after_s)},
            extra={"limit": self.limit, "value": self.value, "used": self.used,
                   "detail_ar": self.detail_ar},
        )  # fmt: skip


def syp(piastres: int | float) -> str:
    p = int(piastres)
    return f"{p // 100:,}.{p % 100:02d} SYP"


def _hours(seconds: float) -> float:
    return round(max(0.0, seconds) / 3600, 2)


def check(limits: Limits, usage: Usage, amount: int, now: float, online: bool) -> Breach | None:
    """The first limit a new payment of `amount` would pass, or None: it may be taken.

    `online`: the link to the centre is up. Only `max_payment` looks at it: a large payment
    is taken only when the centre will judge it within seconds.
    """
    tail = " Inquiries still work."
    tail_ar = " الاستعلامات تعمل كالمعتاد."
    if limits.max_payment and not online and amount > limits.max_payment:
        return Breach(
            "max_payment", limits.max_payment, amount,
            f"the link to the centre is not up, and {syp(amount)} is more than"
            f" limits.offline.max_payment ({syp(limits.max_payment)}) allows while offline;"
            " it clears when the link is back (or pay at the centre)." + tail,
            f"الاتصال بالمركز غير قائم، والمبلغ {syp(amount)} أكبر من الحد المسموح به دون اتصال"
            f" ({syp(limits.max_payment)}، limits.offline.max_payment). يزول الحد عند عودة"
            " الاتصال بالمركز، أو ادفع في المركز." + tail_ar,
            limits.pull_retry_s,
        )  # fmt: skip
    if limits.max_count and usage.count + 1 > limits.max_count:
        return Breach(
            "max_count", limits.max_count, usage.count,
            f"{usage.count:,} payments are not delivered to the centre yet, the most"
            f" limits.offline.max_count ({limits.max_count:,}) allows; new payments are taken"
            " again as those reach the centre." + tail,
            f"عدد الدفعات التي لم تُسلَّم إلى المركز بعد {usage.count:,}، وهو الحد الأقصى"
            f" ({limits.max_count:,}، limits.offline.max_count). تُقبل الدفعات الجديدة من جديد"
            " حين تصل الدفعات المنتظرة إلى المركز." + tail_ar,
            limits.replay_retry_s,
        )  # fmt: skip
    if limits.max_total and usage.total + amount > limits.max_total:
        return Breach(
            "max_total", limits.max_total, usage.total,
            f"{syp(usage.total)} is not delivered to the centre yet; this payment's"
            f" {syp(amount)} would pass limits.offline.max_total ({syp(limits.max_total)});"
            " it clears as undelivered payments reach the centre." + tail,
            f"المبالغ التي لم تُسلَّم إلى المركز بعد {syp(usage.total)}، وهذه الدفعة"
            f" ({syp(amount)}) تتجاوز بها الحد الأقصى {syp(limits.max_total)}"
            " (limits.offline.max_total). يزول الحد حين تصل الدفعات المنتظرة إلى المركز." + tail_ar,
            limits.replay_retry_s,
        )  # fmt: skip
    if limits.max_age_h and usage.oldest_at is not None:
        age = now - usage.oldest_at
        if age > limits.max_age_h * 3600:
            return Breach(
                "max_age_h", limits.max_age_h, _hours(age),
                f"the oldest undelivered payment was taken {_hours(age)} h ago"
                f" ({iso(usage.oldest_at)}), past limits.offline.max_age_h ({limits.max_age_h} h);"
                " it clears once it reaches the centre." + tail,
                f"أقدم دفعة لم تُسلَّم إلى المركز قُبضت منذ {_hours(age)} ساعة ({iso(usage.oldest_at)})،"
                f" أي بعد الحد {limits.max_age_h} ساعة (limits.offline.max_age_h). يزول الحد حين"
                " تصل إلى المركز." + tail_ar,
                limits.replay_retry_s,
            )  # fmt: skip
    # A mirror that never heard from the centre has no age to judge (nor bills of its own:
    # the bootstrap sets both); the bill checks above speak for it.
    as_of = usage.mirror_as_of
    if (
        limits.mirror_max_age_h
        and as_of is not None
        and now - as_of > limits.mirror_max_age_h * 3600
    ):
        return Breach(
            "mirror_max_age_h", limits.mirror_max_age_h, _hours(now - as_of),
            f"the bills mirror last heard from the centre {_hours(now - as_of)} h ago, past"
            f" limits.offline.mirror_max_age_h ({limits.mirror_max_age_h} h), so what it"
            " shows due may be wrong; it clears at the next pull from the centre." + tail,
            f"آخر تحديث لنسخة الفواتير من المركز منذ {_hours(now - as_of)} ساعة، أي بعد الحد"
            f" {limits.mirror_max_age_h} ساعة (limits.offline.mirror_max_age_h)، فقد تكون"
            " المبالغ المستحقة المعروضة غير صحيحة. يزول الحد عند أول تحديث من المركز." + tail_ar,
            limits.pull_retry_s,
        )  # fmt: skip
    return None


def status(limits: Limits, usage: Usage, now: float, online: bool) -> dict[str, Any]:
    """`{limit: {value, used, tripped}}` for /v1/status and the dashboard (value 0: off).

    `tripped`: payments are refused by it now (`max_payment`: only those above it, while the
    link is not up; its `used` is null).
    """
    age = None if usage.oldest_at is None else _hours(now - usage.oldest_at)
    mirror_age = None if usage.mirror_as_of is None else _hours(now - usage.mirror_as_of)
    out: dict[str, Any] = {
        "max_payment": {"value": limits.max_payment, "used": None,
                        "tripped": bool(limits.max_payment) and not online},
        "max_total": {"value": limits.max_total, "used": usage.total,
                      "tripped": bool(limits.max_total) and usage.total >= limits.max_total},
        "max_count": {"value": limits.max_count, "used": usage.count,
                      "tripped": bool(limits.max_count) and usage.count >= limits.max_count},
        "max_age_h": {"value": limits.max_age_h, "used": age or 0.0,
                      "tripped": bool(limits.max_age_h) and (age or 0.0) > limits.max_age_h},
        "mirror_max_age_h": {
            "value": limits.mirror_max_age_h, "used": mirror_age,
            "tripped": bool(limits.mirror_max_age_h)
            and mirror_age is not None and mirror_age > limits.mirror_max_age_h,
        },
    }  # fmt: skip
    return out
