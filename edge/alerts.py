"""The alert events the node tells people about (upsmon's NOTIFYTYPEs and their kin), and the
pure rules that raise them from what the node sees; deploy/prometheus/edge-alerts.yml holds
the same rules for Prometheus, with the defaults of `[notify]` as its thresholds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import GOVERNORATES, Settings
from sync import timefmt

CRITICAL, WARNING, INFO = "critical", "warning", "info"
# Limits whose use has no "nearly": max_payment is per payment (and "tripped" whenever offline).
MEASURED_LIMITS = ("max_total", "max_count", "max_age_h", "mirror_max_age_h")
Texts = Callable[[Mapping[str, Any], Settings], tuple[str, str]]


@dataclass(frozen=True)
class Kind:
    """One kind of event. `group` is what rate limiting counts by: an event and its return
    to normal share one, so a flapping mains is one notification per interval, not two."""

    name: str
    severity: str
    notifytype: str  # the exec's NOTIFYTYPE: upsmon's name where upsmon has the event
    group: str
    texts: Texts  # (Arabic, English) from the event's details


def _n(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "?" if value is None else f"{value:.{digits}f}{unit}"


def _on_battery(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    charge, runtime = _n(d["charge_percent"], " %"), _n(_minutes(d["runtime_s"]), " min")
    return (
        f"انقطاع في الكهرباء: الخادم يعمل على بطارية جهاز UPS منذ {d['minutes']} دقيقة"
        f" (الشحن {charge}، يكفي نحو {runtime}). الدفع مستمر.",
        f"Power cut: the server has run on UPS battery for {d['minutes']} min"
        f" (charge {charge}, about {runtime} left). Payments go on.",
    )


def _low_battery(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    charge, runtime = _n(d["charge_percent"], " %"), _n(_minutes(d["runtime_s"]), " min")
    stays = s.power_on_low == "read_only"
    return (
        f"بطارية جهاز UPS على وشك النفاد (الشحن {charge}، يكفي نحو {runtime}): الخادم يرفض"
        + (" الدفعات حتى عودة الكهرباء." if stays else " الدفعات الجديدة وسيتوقف بعد قليل."),
        f"UPS battery nearly empty (charge {charge}, about {runtime} left): the node refuses"
        + (" payments until mains returns." if stays else " new payments and stops shortly."),
    )


def _power_back(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    return (
        f"عادت الكهرباء بعد {d['minutes']} دقيقة على البطارية.",
        f"Mains power is back after {d['minutes']} min on battery.",
    )


def _link_down(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    refused = d["state"] == "degraded"
    return (
        f"الاتصال بالمركز الوطني {'لا يعمل (المركز يرفض الطلبات)' if refused else 'مقطوع'} منذ"
        f" {d['minutes']} دقيقة؛ الدفعات محفوظة وتُرسل عند عودته ({d['pending']} بانتظار الإرسال).",
        f"The link to the national centre has been {'refused' if refused else 'down'} for"
        f" {d['minutes']} min; payments are kept and sent once it is back ({d['pending']} waiting).",
    )


def _link_up(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    return (
        f"عاد الاتصال بالمركز الوطني بعد {d['minutes']} دقيقة.",
        f"The link to the national centre is back after {d['minutes']} min.",
    )


def _outbox_stuck(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    hours = _n(d["oldest_pending_age_s"] / 3600, digits=1)
    return (
        f"أقدم دفعة لم تصل إلى المركز عمرها {hours} ساعة ({d['pending']} بانتظار الإرسال).",
        f"The oldest payment not yet at the centre is {hours} h old ({d['pending']} waiting).",
    )


def _rejected(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    return (
        f"رفض المركز دفعات: {d['unresolved']} بانتظار أن يعالجها المشرف (استرداد أو تحويل).",
        f"The centre rejected payments: {d['unresolved']} wait for an operator to refund or"
        " retarget them.",
    )


def _mirror_stale(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    hours = _n(d["age_s"] / 3600, digits=1)
    return (
        f"نسخة الفواتير المحلية لم تتحدث من المركز منذ {hours} ساعة: المبالغ المستحقة قد لا"
        " تكون دقيقة.",
        f"The local bills mirror has not heard from the centre for {hours} h: dues may be out"
        " of date.",
    )


def _task_failed(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    return (
        "توقفت مهمة خلفية في الخادم عن العمل والخادم غير جاهز: أعد تشغيل الخدمة.",
        f"A background task died ({', '.join(d['tasks'])}): the node is not ready; restart it.",
    )


def _disk_low(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    free, percent = _n(d["free_bytes"] / 2**20, " MB"), _n(d["free_percent"], " %", 1)
    return (
        f"قرص البيانات شبه ممتلئ: المتبقي {free} ({percent}). تتوقف الدفعات عند امتلائه.",
        f"The data disk is nearly full: {free} free ({percent}). Payments stop when it is full.",
    )


def _offline_near(d: Mapping[str, Any], s: Settings) -> tuple[str, str]:
    percent = _n(100 * max(d["limits"].values()), " %")
    return (
        f"الخادم قريب من حدود العمل دون اتصال ({percent} من الحد): عند بلوغه تُرفض الدفعات"
        " الجديدة حتى تصل الدفعات المحفوظة إلى المركز.",
        f"An offline limit is {percent} used ({', '.join(d['limits'])}): at the limit new"
        " payments are refused until the held ones reach the centre.",
    )


KINDS = {
    k.name: k
    for k in (
        Kind("on_battery", WARNING, "ONBATT", "power", _on_battery),
        Kind("low_battery", CRITICAL, "LOWBATT", "low_battery", _low_battery),
        Kind("power_back", INFO, "ONLINE", "power", _power_back),
        Kind("link_down", WARNING, "LINKDOWN", "link", _link_down),
        Kind("link_up", INFO, "LINKUP", "link", _link_up),
        Kind("outbox_stuck", WARNING, "OUTBOXSTUCK", "outbox_stuck", _outbox_stuck),
        Kind("payment_rejected", CRITICAL, "REJECTED", "payment_rejected", _rejected),
        Kind("mirror_stale", WARNING, "MIRRORSTALE", "mirror_stale", _mirror_stale),
        Kind("task_failed", CRITICAL, "TASKFAILED", "task_failed", _task_failed),
        Kind("disk_low", CRITICAL, "DISKLOW", "disk_low", _disk_low),
        Kind("offline_limit_near", WARNING, "OFFLINELIMIT", "offline_limit_near", _offline_near),
    )
}


@dataclass(frozen=True)
class Event:
    kind: str
    at: float  # wall time it was seen
    details: dict[str, Any]
    text_ar: str
    text_en: str
    suppressed: int = 0  # events of its group held back by the rate limit since the last one

    @property
    def severity(self) -> str:
        return KINDS[self.kind].severity

    def body(self, s: Settings) -> dict[str, Any]:
        """The JSON every sink gets."""
        return {
            "event": self.kind, "severity": self.severity,
            "notifytype": KINDS[self.kind].notifytype, "node": s.node_id,
            "governorate": s.node_governorate, "time": timefmt.iso(self.at),
            "details": self.details, "text_ar": self.text_ar, "text_en": self.text_en,
            "suppressed": self.suppressed,
        }  # fmt: skip


def make(kind: str, at: float, details: dict[str, Any], s: Settings) -> Event:
    """An event with its texts, each prefixed with where it happened."""
    ar, en = KINDS[kind].texts(details, s)
    gov_en, gov_ar = GOVERNORATES[s.node_governorate]
    return Event(kind, at, details, f"{gov_ar}: {ar}", f"{s.node_id} ({gov_en}): {en}")


# --- what the node sees -------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    free: int
    total: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 100.0


def disk(path: Path) -> Disk | None:
    """Free and total bytes of the filesystem holding `path` (None: cannot tell)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return Disk(usage.free, usage.total)


def usage_ratios(limits: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """used / value of each offline limit that is on and measures something (edge.offline)."""
    out = {}
    for name in MEASURED_LIMITS:
        shown = limits.get(name)
        if shown and shown["value"] and shown["used"] is not None:
            out[name] = float(shown["used"]) / float(shown["value"])
    return out


@dataclass(frozen=True)
class Observation:
    at: float  # wall time
    power: str  # edge.power.policy state
    charge_percent: float | None
    runtime_s: float | None
    link: str  # sync.link state
    pending: int
    oldest_pending_age_s: float | None
    unresolved: int  # rejected payments no operator has resolved
    mirror_age_s: float  # since the centre was last heard (since the start, if never)
    failed_tasks: dict[str, str]  # name -> error
    disk: Disk | None
    offline: dict[str, float]  # usage_ratios
    min_free_bytes: int = 0


@dataclass
class Judge:
    """Turns observations into events, each once per episode (a rising edge); `monotonic`
    times the "for this long" conditions, so a clock set back after a power cut does not."""

    settings: Settings
    _outage_since: float | None = None
    _told: set[str] = field(default_factory=set)  # kinds told in the current episode
    _link_bad_since: float | None = None
    _unresolved: int | None = None
    _failed: set[str] = field(default_factory=set)
    _near: set[str] = field(default_factory=set)

    def judge(self, o: Observation, monotonic: float) -> list[Event]:
        out: list[Event] = []
        self._power(o, monotonic, out)
        self._link(o, monotonic, out)
        s = self.settings
        stuck = bool(s.notify_oldest_pending_h) and (o.oldest_pending_age_s or 0.0) >= (
            s.notify_oldest_pending_h * 3600
        )
        self._edge("outbox_stuck", stuck, o, out,
                   {"oldest_pending_age_s": o.oldest_pending_age_s, "pending": o.pending})  # fmt: skip
        if o.unresolved > (self._unresolved or 0):
            new = o.unresolved - (self._unresolved or 0)
            out.append(self._make("payment_rejected", o, unresolved=o.unresolved, new=new))
        self._unresolved = o.unresolved
        stale = o.mirror_age_s > s.mirror_stale_after_s
        self._edge("mirror_stale", stale, o, out, {"age_s": round(o.mirror_age_s, 1)})
        if set(o.failed_tasks) - self._failed:
            out.append(self._make("task_failed", o, tasks=sorted(o.failed_tasks),
                                  errors=dict(sorted(o.failed_tasks.items()))))  # fmt: skip
        self._failed = set(o.failed_tasks)
        full = o.disk is not None and (
            o.disk.free_percent < s.notify_disk_free_percent or o.disk.free < 2 * o.min_free_bytes
        )
        if o.disk is not None:
            free = {"free_bytes": o.disk.free, "total_bytes": o.disk.total,
                    "free_percent": round(o.disk.free_percent, 2)}  # fmt: skip
            self._edge("disk_low", full, o, out, free)
        near = {k: round(v, 4) for k, v in o.offline.items() if v >= s.notify_offline_limit_ratio}
        if set(near) - self._near:
            out.append(self._make("offline_limit_near", o, limits=near))
        self._near = set(near)
        return out

    def _make(self, kind: str, o: Observation, **details: Any) -> Event:
        return make(kind, o.at, details, self.settings)

    def _edge(
        self, kind: str, active: bool, o: Observation, out: list[Event], details: dict[str, Any]
    ) -> None:
        if active and kind not in self._told:
            out.append(make(kind, o.at, details, self.settings))
            self._told.add(kind)
        elif not active:
            self._told.discard(kind)

    def _power(self, o: Observation, now: float, out: list[Event]) -> None:
        figures = {"charge_percent": o.charge_percent, "runtime_s": o.runtime_s}
        if o.power in ("battery", "low"):
            if self._outage_since is None:
                self._outage_since = now
            minutes = _whole_minutes(now - self._outage_since)
            after = self.settings.notify_battery_after_s
            if "on_battery" not in self._told and now - self._outage_since >= after:
                out.append(self._make("on_battery", o, minutes=minutes, **figures))
                self._told.add("on_battery")
            if o.power == "low" and "low_battery" not in self._told:
                out.append(self._make("low_battery", o, minutes=minutes, **figures))
                self._told.add("low_battery")
        elif o.power == "mains" and self._outage_since is not None:
            # "unknown" (the UPS not answering) neither ends an outage nor starts one.
            if self._told & {"on_battery", "low_battery"}:
                minutes = _whole_minutes(now - self._outage_since)
                out.append(self._make("power_back", o, minutes=minutes, **figures))
            self._outage_since = None
            self._told -= {"on_battery", "low_battery"}

    def _link(self, o: Observation, now: float, out: list[Event]) -> None:
        if o.link in ("down", "degraded"):
            if self._link_bad_since is None:
                self._link_bad_since = now
            elapsed = now - self._link_bad_since
            if "link_down" not in self._told and elapsed >= self.settings.notify_link_down_after_s:
                out.append(self._make("link_down", o, state=o.link, pending=o.pending,
                                      minutes=_whole_minutes(elapsed)))  # fmt: skip
                self._told.add("link_down")
        elif o.link == "up" and self._link_bad_since is not None:
            if "link_down" in self._told:
                minutes = _whole_minutes(now - self._link_bad_since)
                out.append(self._make("link_up", o, minutes=minutes))
            self._link_bad_since = None
            self._told.discard("link_down")


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def _whole_minutes(seconds: float) -> int:
    return int(seconds // 60)
