"""Power sources: NUT (through upsd), psutil (a laptop-style battery) and none.

Each `read()` returns one `Reading` and never raises; `make_source` builds the configured one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import psutil  # type: ignore[import-untyped]

from edge.config import Settings
from edge.errors import ConfigError
from edge.power import nut
from edge.power.policy import Reading

log = logging.getLogger(__name__)

PSUTIL_LOW_CHARGE = 10.0  # percent; NUT drivers' usual battery.charge.low default


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
