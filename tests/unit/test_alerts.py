"""edge.alerts.Judge (pure): each event once per episode, after its "for this long", timed by
the monotonic clock; and the Notifier's rate limit per group, seen through a recording sink."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge import alerts, notifier
from edge.config import Settings

S = Settings(node_data_dir=Path("/nonexistent"), notify_battery_after_s=300,
             notify_link_down_after_s=600, notify_oldest_pending_h=4,
             notify_disk_free_percent=10, notify_offline_limit_ratio=0.8,
             mirror_stale_after_s=3600, notify_min_interval_s=300)  # fmt: skip
CALM = alerts.Observation(
    at=1_800_000_000.0, power="mains", charge_percent=100.0, runtime_s=3600.0, link="up",
    pending=0, oldest_pending_age_s=None, unresolved=0, mirror_age_s=10.0, failed_tasks={},
    disk=alerts.Disk(free=50 * 2**30, total=100 * 2**30), offline={"max_count": 0.0},
    min_free_bytes=64 * 2**20,
)  # fmt: skip


def run(judge: alerts.Judge, steps: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, str]]:
    """Feed (monotonic time, changes to CALM) in order; (time, kind) of each event raised."""
    out = []
    for t, changes in steps:
        out += [(t, e.kind) for e in judge.judge(replace(CALM, **changes), t)]
    return out


def test_on_battery_is_told_after_its_delay_low_at_once_and_power_back_after_either() -> None:
    got = run(alerts.Judge(S), [
        (0, {"power": "battery"}), (299, {"power": "battery"}), (300, {"power": "battery"}),
        (301, {"power": "battery"}), (400, {"power": "low"}), (401, {"power": "low"}),
        (500, {"power": "mains"}), (501, {}),
    ])  # fmt: skip
    assert got == [(300, "on_battery"), (400, "low_battery"), (500, "power_back")]


def test_a_short_cut_is_not_told_at_all_and_unknown_neither_ends_nor_starts_one() -> None:
    got = run(alerts.Judge(S), [
        (0, {"power": "battery"}), (100, {"power": "mains"}), (200, {"power": "unknown"}),
        (1000, {"power": "unknown"}), (1001, {"power": "battery"}), (1200, {"power": "unknown"}),
        (1400, {"power": "battery"}), (1500, {"power": "mains"}),
    ])  # fmt: skip
    assert got == [(1400, "on_battery"), (1500, "power_back")]


def test_a_low_battery_straight_from_mains_is_told_and_so_is_its_end() -> None:
    got = run(alerts.Judge(S), [(0, {"power": "low"}), (5, {"power": "mains"})])
    assert got == [(0, "low_battery"), (5, "power_back")]


def test_link_down_after_its_delay_degraded_counts_and_link_up_only_after_down_was_told() -> None:
    got = run(alerts.Judge(S), [
        (0, {"link": "degraded"}), (300, {"link": "down"}), (599, {"link": "down"}),
        (600, {"link": "down"}), (900, {"link": "down"}), (901, {"link": "up"}),
        (1000, {"link": "down"}), (1100, {"link": "up"}), (2000, {"link": "unknown"}),
    ])  # fmt: skip
    assert got == [(600, "link_down"), (901, "link_up")]


def test_rising_edges_outbox_mirror_disk() -> None:
    full = alerts.Disk(free=5 * 2**30, total=100 * 2**30)
    small = alerts.Disk(free=100 * 2**20, total=200 * 2**20)  # half free, under twice the floor
    got = run(alerts.Judge(S), [
        (0, {"oldest_pending_age_s": 4 * 3600 - 1}), (1, {"oldest_pending_age_s": 4 * 3600}),
        (2, {"oldest_pending_age_s": 5 * 3600}), (3, {}), (4, {"oldest_pending_age_s": 9e9}),
        (5, {"mirror_age_s": 3601}), (6, {"mirror_age_s": 7200}),
        (7, {"disk": full}), (8, {"disk": full}), (9, {}), (10, {"disk": small}),
        (11, {"disk": None}),
    ])  # fmt: skip
    assert got == [(1, "outbox_stuck"), (4, "outbox_stuck"), (5, "mirror_stale"),
                   (7, "disk_low"), (10, "disk_low")]  # fmt: skip


def test_rejections_tasks_and_limits_are_told_when_new_ones_appear() -> None:
    judge = alerts.Judge(S)
    got = run(judge, [
        (0, {"unresolved": 2}), (1, {"unresolved": 2}), (2, {"unresolved": 3}),
        (3, {"unresolved": 1}), (4, {"unresolved": 2}),
        (5, {"failed_tasks": {"puller": "X: y"}}), (6, {"failed_tasks": {"puller": "X: y"}}),
        (7, {"failed_tasks": {"puller": "X: y", "audit": "Z"}}),
        (8, {"offline": {"max_count": 0.79}}), (9, {"offline": {"max_count": 0.8}}),
        (10, {"offline": {"max_count": 0.9, "max_age_h": 0.85}}), (11, {"offline": {"max_age_h": 0.85}}),
    ])  # fmt: skip
    assert got == [(0, "payment_rejected"), (2, "payment_rejected"), (4, "payment_rejected"),
                   (5, "task_failed"), (7, "task_failed"), (9, "offline_limit_near"),
                   (10, "offline_limit_near")]  # fmt: skip
    events = judge.judge(replace(CALM, unresolved=5), 12)
    assert events[0].details == {"unresolved": 5, "new": 5}


def test_a_threshold_of_zero_turns_an_event_off() -> None:
    judge = alerts.Judge(replace(S, notify_oldest_pending_h=0, notify_disk_free_percent=0))
    full = alerts.Disk(free=2**30, total=100 * 2**30)
    assert run(judge, [(0, {"oldest_pending_age_s": 9e9, "disk": full})]) == []


@pytest.mark.parametrize("kind", sorted(alerts.KINDS))
def test_every_kind_has_arabic_and_english_text_naming_where(kind: str) -> None:
    details = {"minutes": 7, "charge_percent": None, "runtime_s": 300.0, "state": "down",
               "pending": 12, "oldest_pending_age_s": 18000.0, "unresolved": 2, "age_s": 7200.0,
               "tasks": ["puller"], "free_bytes": 2**30, "free_percent": 4.5,
               "limits": {"max_count": 0.85}}  # fmt: skip
    event = alerts.make(kind, CALM.at, details, S)
    assert event.text_ar.startswith("دمشق: ") and re.search("[\u0600-\u06ff]{3}", event.text_ar[6:])
    assert event.text_en.startswith("dam-1 (Damascus): ")
    body = event.body(S)
    assert (body["event"], body["node"], body["time"]) == (
        kind,
        "dam-1",
        "2027-01-15T08:00:00.000Z",
    )


class Recording(notifier.Sink):
    """A sink that only records what it is offered (the rate limit is pure logic)."""

    def __init__(self) -> None:
        super().__init__("recording", S, notifier._ignore)
        self.offered: list[alerts.Event] = []

    def offer(self, event: alerts.Event) -> None:
        self.offered.append(event)


def test_the_rate_limit_is_per_group_and_sends_the_latest_held_back_once_the_interval_passes() -> (
    None
):
    now = [0.0]
    notify = notifier.Notifier(S, monotonic=lambda: now[0])
    sink = Recording()
    notify.sinks = [sink]

    def event(kind: str) -> alerts.Event:
        return alerts.make(kind, CALM.at, {"minutes": 1, "charge_percent": 90.0, "runtime_s": 60.0,
                                           "free_bytes": 1, "free_percent": 1.0}, S)  # fmt: skip

    assert notify.emit(event("on_battery"))
    now[0] = 10
    assert not notify.emit(event("power_back"))  # the same group: held
    assert notify.emit(event("low_battery"))  # its own group: never waits behind on_battery
    assert notify.emit(event("disk_low"))
    now[0] = 20
    assert not notify.emit(event("on_battery"))
    assert not notify.emit(event("power_back"))
    now[0] = 299
    notify.release()
    assert [e.kind for e in sink.offered] == ["on_battery", "low_battery", "disk_low"]
    now[0] = 300
    notify.release()
    assert [(e.kind, e.suppressed) for e in sink.offered[3:]] == [("power_back", 2)]
    now[0] = 700  # a new event after the interval goes at once, with nothing held
    assert notify.emit(event("on_battery"))
    assert sink.offered[-1].suppressed == 0
    notify.release()
    assert len(sink.offered) == 5
