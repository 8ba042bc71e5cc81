"""Power states as upsmon would judge them, debouncing and dead time, and the policy per step.

The tracker and the monitor are driven one `step()` at a time with a fake clock; the
monitor tests use a real database file and a scripted source instead of a UPS.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from edge import errors
from edge.config import Settings
from edge.node import Node
from edge.power import history, monitor, policy, sources
from edge.power.policy import PowerTracker, Reading
from edge.web.power import parse_since

FLOOR = 180.0


def ups(status: str, *, charge: float = 80.0, runtime: float = 1200.0) -> Reading:
    return Reading(status=status, charge=charge, runtime_s=runtime, load_pct=20.0)


LOST = Reading(error="upsd at 127.0.0.1:3493 did not answer in time")


@pytest.mark.parametrize(
    ("reading", "state"),
    [
        (ups("OL"), "mains"),
        (ups("OL CHRG"), "mains"),
        (ups("OL LB"), "mains"),  # low battery while on mains is not critical
        (ups("BYPASS"), "mains"),
        (ups("OB"), "battery"),
        (ups("OB DISCHRG"), "battery"),
        (ups("OB LB"), "low"),
        (ups("LB OB DISCHRG"), "low"),
        (ups("FSD OL"), "low"),
        (ups("FSD OB"), "low"),
        (ups("OB", runtime=120), "low"),
        (ups("OB", runtime=180), "battery"),
        (ups("OL", runtime=30), "mains"),
        (ups("OFF"), "unknown"),
        (LOST, "unknown"),
        (sources.from_nut({"ups.status": "WAIT"}), "unknown"),
    ],
)
def test_classify_like_upsmon(reading: Reading, state: str) -> None:
    assert policy.classify(reading, FLOOR)[0] == state


def test_runtime_floor_zero_disables_the_runtime_rule() -> None:
    assert policy.classify(ups("OB", runtime=1), 0)[0] == "battery"


def test_from_nut_reads_the_figures_and_tolerates_junk() -> None:
    reading = sources.from_nut(
        {"ups.status": " OB  DISCHRG ", "battery.charge": "57", "battery.runtime": "n/a",
         "ups.load": "31.5", "input.voltage": "0.0"}
    )  # fmt: skip
    assert reading.ok and reading.status == "OB DISCHRG"
    assert (reading.charge, reading.runtime_s, reading.load_pct, reading.input_voltage) == (
        57.0, None, 31.5, 0.0,
    )  # fmt: skip
    assert not sources.from_nut({"battery.charge": "57"}).ok


def steps(tracker: PowerTracker, *readings: tuple[float, Reading]) -> list[str]:
    """Feed (time, reading) pairs; return the state after each."""
    out = []
    for now, reading in readings:
        tracker.step(reading, now)
        out.append(tracker.state)
    return out


def tracker() -> PowerTracker:
    return PowerTracker(runtime_floor_s=FLOOR, dead_time_s=15.0)


def test_first_data_is_taken_at_once() -> None:
    t = tracker()
    change = t.step(ups("OL"), 0.0)
    assert change is not None and (change.from_state, change.to_state) == ("unknown", "mains")


def test_a_one_poll_blip_to_battery_is_ignored() -> None:
    assert steps(tracker(), (0, ups("OL")), (5, ups("OB")), (7, ups("OL")), (12, ups("OL"))) == [
        "mains", "mains", "mains", "mains",
    ]  # fmt: skip


def test_battery_is_confirmed_on_the_second_poll() -> None:
    t = tracker()
    t.step(ups("OL"), 0)
    assert t.step(ups("OB"), 5) is None
    assert t.pending == "battery"
    change = t.step(ups("OB"), 7)
    assert change is not None and (change.from_state, change.to_state) == ("mains", "battery")


@pytest.mark.parametrize("reading", [ups("OB LB"), ups("FSD OL"), ups("OB", runtime=60)])
def test_low_is_immediate_from_mains_or_battery(reading: Reading) -> None:
    assert steps(tracker(), (0, ups("OL")), (5, reading)) == ["mains", "low"]
    assert steps(tracker(), (0, ups("OB")), (2, reading)) == ["battery", "low"]


def test_low_latches_until_mains_is_confirmed() -> None:
    states = steps(
        tracker(),
        (0, ups("OB LB")), (2, ups("OB")), (4, LOST), (6, ups("OL")), (8, ups("OB LB")),
        (10, ups("OL")), (12, ups("OL")),
    )  # fmt: skip
    assert states == ["low", "low", "low", "low", "low", "low", "mains"]


def test_ups_lost_on_mains_becomes_unknown_after_two_polls_and_returns_at_once() -> None:
    states = steps(tracker(), (0, ups("OL")), (5, LOST), (10, LOST), (15, ups("OL")))
    assert states == ["mains", "mains", "unknown", "mains"]


def test_ups_lost_on_battery_counts_as_low_after_the_dead_time() -> None:
    t = tracker()
    steps(t, (100, ups("OB")), (102, ups("OB")))
    assert steps(t, (104, LOST), (110, LOST), (116.9, LOST)) == ["battery"] * 3
    change = t.step(LOST, 117.0)
    assert change is not None and change.to_state == "low"
    assert "lost while on battery for 15 s" in change.reason


def test_dead_time_counts_from_the_last_good_reading() -> None:
    t = tracker()
    states = steps(t, (0, ups("OB")), (2, LOST), (10, ups("OB")), (20, LOST), (24.9, LOST))
    assert states == ["battery"] * 5
    assert steps(t, (25, LOST)) == ["low"]


def test_a_changing_pending_state_restarts_the_count() -> None:
    states = steps(tracker(), (0, ups("OL")), (5, ups("OB")), (7, LOST), (9, ups("OB")))
    assert states == ["mains"] * 4


async def test_psutil_source_maps_the_os_battery(monkeypatch: pytest.MonkeyPatch) -> None:
    battery = namedtuple("battery", "percent secsleft power_plugged")
    source = sources.PsutilSource()
    monkeypatch.setattr(psutil, "sensors_battery", lambda: battery(95, 7200, True))
    assert (await source.read()).status == "OL"
    monkeypatch.setattr(psutil, "sensors_battery", lambda: battery(40, 1500, False))
    reading = await source.read()
    assert (reading.status, reading.charge, reading.runtime_s) == ("OB", 40.0, 1500.0)
    monkeypatch.setattr(
        psutil, "sensors_battery", lambda: battery(8, psutil.POWER_TIME_UNKNOWN, False)
    )
    reading = await source.read()
    assert (reading.status, reading.runtime_s) == ("OB LB", None)
    monkeypatch.setattr(psutil, "sensors_battery", lambda: None)
    assert not (await source.read()).ok


# --- the monitor, one step at a time ----------------------------------------------------


class Script:
    """A power source that returns the readings it is given, then repeats the last."""

    name = "nut"

    def __init__(self) -> None:
        self.next: Reading = LOST

    def describe(self) -> str:
        return "scripted"

    async def read(self) -> Reading:
        return self.next

    async def close(self) -> None:
        return None


class FakePuller:
    def __init__(self) -> None:
        self.interval_s = 30.0

    def set_interval(self, seconds: float) -> None:
        self.interval_s = seconds


class Rig:
    def __init__(self, node: Node, mon: monitor.PowerMonitor, source: Script) -> None:
        self.node, self.monitor, self.source = node, mon, source
        self.now = 1000.0
        self.shutdowns = 0

    async def step(self, reading: Reading, dt: float = 2.0) -> None:
        self.now += dt
        self.source.next = reading
        await self.monitor.step()

    def events(self) -> list[dict[str, Any]]:
        return self.node.db.read(history.events)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = Settings(node_data_dir=tmp_path, power_on_low="shutdown", power_final_replay_s=1)
    node = Node.build(settings)
    db = node.db
    node.replication.puller = FakePuller()  # type: ignore[assignment]
    source = Script()
    mon = monitor.PowerMonitor(node, source)
    r = Rig(node, mon, source)
    mon.monotonic = lambda: r.now

    def shutdown() -> None:
        r.shutdowns += 1

    mon.shutdown = shutdown
    await db.open()
    try:
        yield r
    finally:
        await mon.close()
        await db.close()


async def test_battery_stores_the_event_checkpoints_and_slows_the_pull(rig: Rig) -> None:
    await rig.step(ups("OL"))
    await rig.step(ups("OB", charge=97, runtime=2400))
    assert rig.node.power.state == "mains" and rig.monitor.interval() == 2.0  # confirming
    await rig.step(ups("OB", charge=97, runtime=2400))
    assert rig.node.power.state == "battery"
    assert [(e["from"], e["to"]) for e in rig.events()] == [
        ("unknown", "mains"),
        ("mains", "battery"),
    ]
    last = rig.events()[-1]
    assert (last["flags"], last["charge"], last["runtime_s"]) == ("OB", 97.0, 2400.0)
    assert rig.monitor.last_checkpoint is not None
    assert (
        rig.node.replication.puller.interval_s == rig.node.settings.centre_pull_interval_battery_s
    )
    assert not rig.node.shutting_down
    assert rig.node.power.as_dict() | {"updated_at": None} == {
        "state": "battery", "source": "nut", "ups_status": "OB", "battery_charge": 97.0,
        "runtime_s": 2400.0, "load_pct": 20.0, "input_voltage": None, "updated_at": None,
        "error": None,
    }  # fmt: skip


async def test_low_refuses_payments_then_runs_the_final_action(rig: Rig) -> None:
    await rig.step(ups("OL"))
    await rig.step(ups("OB LB", charge=9))
    assert rig.node.shutting_down
    assert (
        "Power cut" in rig.node.shutdown_reason and "انقطاع في الكهرباء" in rig.node.shutdown_reason
    )
    task = rig.monitor._low_task
    assert task is not None
    await task
    assert rig.shutdowns == 1 and rig.monitor.shutdown_requested
    await rig.step(ups("OL"))
    await rig.step(ups("OL"))
    assert rig.node.power.state == "mains"
    assert rig.node.shutting_down, "once the stop is under way, mains does not undo it"


async def test_read_only_stays_up_and_mains_resumes_payments(rig: Rig) -> None:
    rig.node.settings = rig.node.settings.replace(power_on_low="read_only")
    await rig.step(ups("OB"))
    await rig.step(ups("OB", runtime=100))
    assert rig.node.shutting_down and "no payments until power" in rig.node.shutdown_reason
    assert rig.monitor._low_task is not None
    await rig.monitor._low_task
    assert rig.shutdowns == 0
    await rig.step(ups("OL"))
    assert rig.node.shutting_down, "one OL reading is not yet mains"
    await rig.step(ups("OL"))
    assert not rig.node.shutting_down and rig.node.shutdown_reason == ""
    assert rig.node.replication.puller.interval_s == rig.node.settings.centre_pull_interval_s
    assert [e["to"] for e in rig.events()] == ["battery", "low", "mains"]


async def test_a_stop_for_another_reason_is_not_undone_by_mains(rig: Rig) -> None:
    await rig.step(ups("OL"))
    rig.node.refuse_payments("the node is stopping")
    await rig.step(ups("OB LB"))
    await rig.step(ups("OL"))
    await rig.step(ups("OL"))
    assert rig.node.shutting_down and rig.node.shutdown_reason == "the node is stopping"


async def test_mains_during_the_node_stop_does_not_reopen_payments(rig: Rig) -> None:
    rig.node.settings = rig.node.settings.replace(power_on_low="read_only")
    await rig.step(ups("OB LB"))
    rig.monitor.stop()  # what the app's on_shutdown does when SIGTERM arrives
    await rig.step(ups("OL"))
    await rig.step(ups("OL"))
    assert rig.node.power.state == "mains" and rig.node.shutting_down


async def test_lost_ups_shows_the_error_and_keeps_the_last_figures(rig: Rig) -> None:
    await rig.step(ups("OL", charge=100))
    await rig.step(LOST)
    await rig.step(LOST)
    view = rig.node.power
    assert (view.state, view.ups_status, view.battery_charge) == ("unknown", None, 100.0)
    assert view.error == LOST.error
    assert rig.events()[-1]["reason"] == LOST.error


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, (None, None)),
        ("0", (0, None)),
        ("42", (42, None)),
        ("2026-06-01T00:00:00Z", (None, 1780272000.0)),
        ("2026-06-01T03:00:00+03:00", (None, 1780272000.0)),
        ("2026-06-01", (None, 1780272000.0)),
    ],
)
def test_since_is_an_event_id_or_an_iso_time(value: str | None, parsed: tuple[Any, Any]) -> None:
    assert parse_since(value) == parsed


@pytest.mark.parametrize("value", ["", "-1", "yesterday", "99999999999999999999", "٤٢", "1e3"])
def test_a_bad_since_is_invalid_query(value: str) -> None:
    with pytest.raises(errors.InvalidQuery):
        parse_since(value)
