"""`edge ups`: one reading of the configured UPS, printed with the state the node gives it."""

from __future__ import annotations

from collections.abc import Callable

from edge.config import Settings
from edge.power.policy import classify
from edge.power.sources import make_source


async def report(settings: Settings, out: Callable[[str], None] = print) -> int:
    """`edge ups`: one reading, printed with the state the node would give it (1: no data)."""
    source = make_source(settings)
    try:
        reading = await source.read()
    finally:
        await source.close()
    state, reason = classify(reading, settings.power_runtime_floor_s)
    figures = [("ups.status", reading.status, ""), ("battery.charge", reading.charge, " %"),
               ("battery.runtime", reading.runtime_s, " s"), ("ups.load", reading.load_pct, " %"),
               ("input.voltage", reading.input_voltage, " V")]  # fmt: skip
    lines = [("source", source.describe()), ("state", f"{state} ({reason})")]
    for name, value, unit in figures:
        shown = "-" if value is None else f"{value:g}{unit}" if isinstance(value, float) else value
        lines.append((name, shown))
    for label, text in lines:
        out(f"{label + ':':<17}{text}")
    if reading.raw:
        out("all variables:")
        for key in sorted(reading.raw):
            out(f"  {key}: {reading.raw[key]}")
    return 0 if reading.ok else 1
