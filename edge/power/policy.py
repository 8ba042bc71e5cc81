"""The upsmon-style mapping of UPS readings to power states, over time (pure logic).

`classify` maps one reading to a state and `PowerTracker.step` adds what upsmon adds over
time (dead time, latching) plus debouncing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

STATES = ("mains", "battery", "low", "unknown")
CONFIRM_READINGS = 2  # a change (other than into `low`) must be seen twice: blips are ignored


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
