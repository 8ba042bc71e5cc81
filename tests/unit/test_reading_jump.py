"""The implausible-jump rule of meter readings (edge.readings.jumped, DESIGN 5.15) at its edges."""

from __future__ import annotations

from edge import readings


def test_the_threshold_is_factor_times_daily_use_times_days() -> None:
    # 610 kWh a cycle is 10 kWh a day: 10x over 3 days is 300 kWh.
    assert not readings.jumped(300, 3, 610, 10.0)
    assert readings.jumped(301, 3, 610, 10.0)


def test_a_meter_that_used_nothing_still_gets_a_kwh_a_day() -> None:
    assert not readings.jumped(10, 1, 0, 10.0)
    assert readings.jumped(11, 1, 0, 10.0)


def test_readings_on_the_same_day_count_as_one_day() -> None:
    assert readings.jumped(101, 0, 610, 10.0) and not readings.jumped(100, 0, 610, 10.0)
