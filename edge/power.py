"""Power sources (NUT, psutil, none) and the upsmon-style mapping of UPS readings to states.

Pure logic apart from the sources' reads: `classify` maps one reading to a state and
`PowerTracker.step` adds what upsmon adds over time (dead time, latching) plus debouncing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil  # type: ignore[import-untyped]

from edge import nut
from edge.config import Settings
from edge.errors import ConfigError

log = logging.getLogger(__name__)

STATES = ("mains", "battery", "low", "unknown")
CONFIRM_READINGS = 2  # a change (other than into `low`) must be seen twice: blips are ignored
PSUTIL_LOW_CHARGE = 10.0  # percent; NUT drivers' usual battery.charge.low default


@dataclass(frozen=True)
class Reading:
    """One poll of a source: `status` is NUT's `ups.status`, None when no data came."""

    status: str | None = None
    charge: float | None = None
    runtime_s: float | None = None
    load_pct: float | None = None
    input_voltage: float | None = None
    error: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and self.error is None

    @property
    def flags(self) -> frozenset[str]:
        return frozenset((self.status or "").split())


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def from_nut(values: Mapping[str, str]) -> Reading:
    status = values.get("ups.status", "").strip()
    if not status:
        return Reading(error="the UPS reports no ups.status", raw=values)
    return Reading(
        status=" ".join(status.split()),
        charge=_number(values.get("battery.charge")),
        runtime_s=_number(values.get("battery.runtime")),
        load_pct=_number(values.get("ups.load")),
        input_voltage=_number(values.get("input.voltage")),
        raw=values,
    )


def classify(reading: Reading, runtime_floor_s: float) -> tuple[str, str]:
    """(state, reason) for one reading, the way upsmon judges it."""
    if not reading.ok:
        return "unknown", reading.error or "no data from the UPS"
    flags = reading.flags
    if "FSD" in flags:
        return "low", "forced shutdown (FSD) set by upsd"
    if "OB" in flags and "LB" in flags:
        return "low", "on battery and the battery is low (OB LB)"
    runtime = reading.runtime_s
    if "OB" in flags and runtime is not None and runtime < runtime_floor_s:
        return (
            "low",
            f"on battery with {runtime:.0f} s of runtime left (floor {runtime_floor_s:.0f} s)",
        )
    if "OB" in flags:
        return "battery", "on battery (OB)"
    if "OL" in flags or "BYPASS" in flags:
        return "mains", "on mains (OL)"
    return "unknown", f"ups.status {reading.status!r} says neither OL nor OB"


@dataclass(frozen=True)
class Transition:
    from_state: str
    to_state: str
    reason: str
    reading: Reading


class PowerTracker:
    """The node's power state over time; feed it one reading per poll with `step`.

    Into `low` is immediate (safety first, as upsmon). Leaving `unknown` is immediate (data
    is back). Any other change must be seen in `confirm` consecutive readings. A UPS lost
    while last seen on battery keeps `battery` for `dead_time_s`, then counts as `low`.
    `low` latches until mains is confirmed: the shutdown it started is not undone by an
    `OB` without `LB` or by losing the UPS.
    """

    def __init__(
        self, *, runtime_floor_s: float, dead_time_s: float, confirm: int = CONFIRM_READINGS
    ) -> None:
        self.runtime_floor_s = runtime_floor_s
        self.dead_time_s = dead_time_s
        self.confirm = confirm
        self.state = "unknown"
        self.pending: str | None = None
        self.pending_count = 0
        self.last_ok_at: float | None = None

    def step(self, reading: Reading, now: float) -> Transition | None:
        target, reason = classify(reading, self.runtime_floor_s)
        if reading.ok:
            self.last_ok_at = now
        elif self.state in ("battery", "low"):
            lost_for = now - (self.last_ok_at if self.last_ok_at is not None else now)
            if self.state == "low" or lost_for >= self.dead_time_s:
                target = "low"
                reason = f"UPS lost while on battery for {lost_for:.0f} s ({reading.error})"
            else:
                target = self.state
        if self.state == "low" and target != "mains":
            target = "low"
        if target == self.state:
            self.pending, self.pending_count = None, 0
            return None
        if target != "low" and self.state != "unknown":
            if target == self.pending:
                self.pending_count += 1
            else:
                self.pending, self.pending_count = target, 1
            if self.pending_count < self.confirm:
                return None
        change = Transition(self.state, target, reason, reading)
        self.state, self.pending, self.pending_count = target, None, 0
        return change


class PowerSource(Protocol):
    name: str

    def describe(self) -> str: ...

    async def read(self) -> Reading: ...

    async def close(self) -> None: ...


class NutSource:
    """A UPS served by NUT's upsd; every NUT failure becomes a reading without data."""

    name = "nut"

    def __init__(self, client: nut.NutClient, ups: str) -> None:
        self.client, self.ups = client, ups

    def describe(self) -> str:
        return f"nut: UPS {self.ups!r} at upsd {self.client.address}"

    async def read(self) -> Reading:
        try:
            return from_nut(await self.client.read_ups(self.ups))
        except nut.UpsWaiting:
            return Reading(error="WAIT: the UPS driver has not reported yet")
        except nut.NutServerError as exc:
            why = type(exc).__doc__ or "upsd refused the request"
            return Reading(error=f"{exc.code} for UPS {self.ups!r}: {why}")
        except (nut.NutConnectionError, nut.NutProtocolError) as exc:
            return Reading(error=str(exc))

    async def close(self) -> None:
        await self.client.close()


class PsutilSource:
    """A UPS that the OS shows as a battery (`psutil.sensors_battery()`)."""

    name = "psutil"

    def describe(self) -> str:
        return "psutil: the operating system's battery"

    async def read(self) -> Reading:
        # Reads a few sysfs files: microseconds, so no thread hop.
        battery = psutil.sensors_battery()
        if battery is None:
            return Reading(error="the operating system reports no battery")
        if battery.power_plugged is None:
            return Reading(error="the operating system cannot tell mains from battery")
        charge = float(battery.percent)
        status = "OL" if battery.power_plugged else "OB"
        if not battery.power_plugged and charge <= PSUTIL_LOW_CHARGE:
            status += " LB"
        secs = battery.secsleft
        runtime = float(secs) if isinstance(secs, int | float) and secs >= 0 else None
        return Reading(status=status, charge=charge, runtime_s=runtime)

    async def close(self) -> None:
        return None


class NoSource:
    """No UPS: the power state stays `unknown`."""

    name = "none"

    def describe(self) -> str:
        return 'none: no UPS is monitored (ups.source = "none")'

    async def read(self) -> Reading:
        return Reading(error="no UPS source configured")

    async def close(self) -> None:
        return None


def make_source(settings: Settings) -> PowerSource:
    if settings.ups_source == "psutil":
        return PsutilSource()
    if settings.ups_source == "none":
        return NoSource()
    password = ""
    if settings.ups_password_file:
        try:
            password = Path(settings.ups_password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"ups.password_file: cannot read it: {exc}") from exc
    client = nut.NutClient(
        settings.ups_host, settings.ups_port, timeout_s=settings.ups_timeout_s,
        username=settings.ups_username, password=password,
    )  # fmt: skip
    return NutSource(client, settings.ups_name)
