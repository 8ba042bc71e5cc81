"""sync.loop: one step at a time, waits cut short, failures counted and logged once per change.

Time is injected: `Sleeps` records every wait the loop asks for and returns at once (or
never, to show that only wake() and stop() end a wait), so nothing here takes real seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from outbox import RetryPolicy
from sync.errors import CentreRefused, CentreUnavailable, SyncError
from sync.link import Link
from sync.loop import Loop

LOGGER = "tests.loop"
POLICY = RetryPolicy(base_s=1.0, factor=2.0, cap_s=60.0)


class Sleeps:
    """An injected sleep: records each wait; returns at once unless `forever`."""

    def __init__(self, forever: bool = False) -> None:
        self.waits: list[float] = []
        self.forever = forever

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.forever:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


class Scripted(Loop[str]):
    """Each step takes the next item of `script`: an exception is raised, a value returned.

    After the script it stops itself; `pace` is `interval` (None: until woken).
    """

    expected = (SyncError,)

    def __init__(self, script: list[Any], sleep: Sleeps, interval: float | None = 5.0) -> None:
        super().__init__("scripted", policy=POLICY, sleep=sleep,
                         logger=logging.getLogger(LOGGER))  # fmt: skip
        self.script = list(script)
        self.interval = interval
        self.steps = 0

    async def step(self) -> str:
        self.steps += 1
        if not self.script:
            self.stop()
            return "done"
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return str(item)

    def pace(self, result: str) -> float | None:
        return self.interval


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def test_identical_failures_are_counted_each_time_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    n = 12
    sleeps = Sleeps()
    loop = Scripted([CentreUnavailable("centre answered 503")] * n, sleeps)
    seen: list[int] = []
    original = loop.failed

    def failed(exc: Exception) -> float:
        seen.append(loop.failures)
        return original(exc)

    loop.failed = failed  # type: ignore[method-assign]
    await loop.run()
    assert seen == list(range(1, n + 1))  # counted every time
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "centre answered 503" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # an expected type: its message, no traceback
    assert len(lines(caplog, logging.DEBUG)) == n - 1  # the repeats, below the default level
    # started, stopped, and one recovery: the step that ends the script succeeds.
    assert len(lines(caplog, logging.INFO)) == 3


async def test_each_change_is_logged_and_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    a, b = CentreUnavailable("transport: refused"), CentreRefused(409, "chain_gap", "seq 4")
    script: list[Any] = [a, a, a, b, b, a, "ok", "ok", a, a]
    loop = Scripted(script, Sleeps())
    await loop.run()
    warnings = [r.getMessage() for r in lines(caplog, logging.WARNING)]
    assert len(warnings) == 4  # a, then b, then a again, then a after the recovery
    assert [("chain_gap" in w) for w in warnings] == [False, True, False, False]
    recoveries = [
        r.getMessage() for r in lines(caplog, logging.INFO) if "recovered" in r.getMessage()
    ]
    # Once per recovery: after the six failures, and after the two at the end of the script.
    assert recoveries == [
        "scripted recovered after 6 failed attempts",
        "scripted recovered after 2 failed attempts",
    ]
    assert loop.failures == 0


async def test_an_unexpected_exception_gets_its_traceback_once_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    loop = Scripted([KeyError("bills"), KeyError("bills"), KeyError("bills"), "ok"], Sleeps())
    await loop.run()
    assert loop.steps == 5  # three failures, "ok", then the end of the script
    with_traceback = [r for r in caplog.records if r.name == LOGGER and r.exc_info]
    assert len(with_traceback) == 1 and with_traceback[0].levelno == logging.WARNING


async def test_the_wait_after_a_failure_is_the_policy_backoff_and_grows() -> None:
    sleeps = Sleeps()
    loop = Scripted([CentreUnavailable("down")] * 8 + ["ok"], sleeps, interval=5.0)
    await loop.run()
    backoff, after_success = sleeps.waits[:8], sleeps.waits[8]
    for failures, wait in enumerate(backoff, start=1):
        top = POLICY.ceiling(failures)
        assert top / 2 <= wait <= top, (failures, wait)
    assert after_success == 5.0  # success: the loop's own pace again


async def test_failed_is_the_hook_for_the_delay() -> None:
    sleeps = Sleeps()

    class Patient(Scripted):
        def failed(self, exc: Exception) -> float:
            return 42.0 if isinstance(exc, CentreRefused) else super().failed(exc)

    loop = Patient([CentreRefused(403, "forbidden_governorate", "x"), "ok"], sleeps)
    await loop.run()
    assert sleeps.waits[0] == 42.0 and loop.failures == 0


async def test_stop_ends_a_wait_at_once_and_no_timer_is_slept_out() -> None:
    sleeps = Sleeps(forever=True)  # the timer never fires: only stop() can end the wait
    loop = Scripted(["ok"] * 100, sleeps, interval=3600.0)
    task = asyncio.create_task(loop.run())
    while not sleeps.waits:
        await asyncio.sleep(0)
    loop.stop()
    await asyncio.wait_for(task, 1.0)
    assert loop.steps == 1 and sleeps.waits == [3600.0]


async def test_wake_cuts_the_current_wait_short() -> None:
    sleeps = Sleeps(forever=True)
    loop = Scripted(["one", "two", "three"], sleeps, interval=None)
    task = asyncio.create_task(loop.run())
    for expected in (1, 2):
        while loop.steps < expected or loop.woken:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert loop.steps == expected  # waiting until woken, however long
        loop.wake()
    while loop.steps < 3:
        await asyncio.sleep(0)
    loop.stop()
    await asyncio.wait_for(task, 1.0)
    assert sleeps.waits == []  # pace None: no timer at all


async def test_cancellation_propagates() -> None:
    loop = Scripted([asyncio.CancelledError()], Sleeps())
    with pytest.raises(asyncio.CancelledError):
        await loop.run()
    waiting = Scripted(["ok"] * 5, Sleeps(forever=True), interval=60.0)
    task = asyncio.create_task(waiting.run())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_loop_shaped_like_the_power_monitor() -> None:
    """Poll, return interval(); a failed poll is logged and polling goes on at the interval."""

    class Poller(Loop[str | None]):
        def __init__(self, readings: list[Any], sleep: Sleeps) -> None:
            super().__init__("power poll", sleep=sleep)
            self.readings = readings

        def interval(self) -> float:
            return 2.0 if self.readings and self.readings[0] == "OB" else 10.0

        async def step(self) -> str | None:
            if not self.readings:
                self.stop()
                return None
            reading = self.readings.pop(0)
            if isinstance(reading, Exception):
                raise reading
            return reading

        def pace(self, result: str | None) -> float:
            return self.interval()

        def failed(self, exc: Exception) -> float:
            return self.interval()

    sleeps = Sleeps()
    poller = Poller(["OL", OSError("upsd gone"), "OB", "OB", "OL"], sleeps)
    await poller.run()
    assert sleeps.waits == [10.0, 2.0, 2.0, 10.0, 10.0]


# --- retries inside a step ---------------------------------------------------------------


class Exchanging(Loop[int]):
    """A step is one exchange retried by tenacity; `answers` scripts each attempt."""

    def __init__(self, answers: list[Any], sleep: Sleeps, attempts: int = 3) -> None:
        super().__init__("exchange", policy=POLICY, sleep=sleep, attempts=attempts)
        self.answers = answers
        self.calls = 0

    async def _once(self) -> int:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return int(answer)

    async def step(self) -> int:
        return await self.retried(self._once, (CentreUnavailable,))

    def pace(self, result: int) -> float | None:
        return None


async def test_transient_errors_are_retried_within_the_step_with_the_growing_backoff() -> None:
    sleeps = Sleeps()
    loop = Exchanging([CentreUnavailable("503"), CentreUnavailable("503"), 7], sleeps)
    assert await loop.step() == 7
    assert loop.calls == 3  # a fresh call, so a fresh request, each attempt
    assert len(sleeps.waits) == 2 and loop.failures == 2
    for failures, wait in enumerate(sleeps.waits, start=1):
        assert POLICY.ceiling(failures) / 2 <= wait <= POLICY.ceiling(failures)


async def test_after_its_attempts_a_step_raises_and_the_count_goes_on() -> None:
    sleeps = Sleeps()
    loop = Exchanging([CentreUnavailable("down")] * 5, sleeps, attempts=3)
    with pytest.raises(CentreUnavailable):
        await loop.step()
    assert loop.calls == 3 and loop.failures == 3 and len(sleeps.waits) == 2
    # The loop counts the raised failure once (tenacity already counted it).
    assert loop.failure(CentreUnavailable("down")) > 0 and loop.failures == 4


async def test_refusals_and_bad_frames_are_not_retried_within_the_step() -> None:
    for error in (CentreRefused(401, "bad_signature", "x"), SyncError("bad reply")):
        loop = Exchanging([error, 1], Sleeps())
        with pytest.raises(type(error)):
            await loop.step()
        assert loop.calls == 1


async def test_stop_during_a_retry_wait_ends_the_step_without_another_attempt() -> None:
    sleeps = Sleeps(forever=True)
    loop = Exchanging([CentreUnavailable("down"), 1], sleeps)
    task = asyncio.create_task(loop.run())
    while not sleeps.waits:
        await asyncio.sleep(0)
    loop.stop()
    await asyncio.wait_for(task, 1.0)
    assert loop.calls == 1


async def test_once_stopped_a_failure_is_not_retried() -> None:
    """What the replayer's bounded final replay (after stop) relies on."""
    sleeps = Sleeps()
    loop = Exchanging([CentreUnavailable("down"), 1], sleeps)
    loop.stop()
    with pytest.raises(CentreUnavailable):
        await loop.step()
    assert loop.calls == 1 and sleeps.waits == []


# --- resuming when the link is back --------------------------------------------------------


async def test_any_answer_from_the_centre_ends_a_backoff() -> None:
    link = Link()
    loop = Scripted([], Sleeps())
    link.on_ok(loop.resume)
    loop.failure(CentreUnavailable("down"))
    loop.failure(CentreUnavailable("down again"))
    assert loop.failures == 2 and not loop.woken
    link.ok()
    assert loop.failures == 0 and loop.woken


async def test_an_answer_does_not_end_the_wait_after_a_refusal() -> None:
    loop = Scripted([], Sleeps())
    loop.failure(CentreUnavailable("down"))
    loop.holding = True  # what the replayer sets for a configuration fault
    loop.resume()
    assert loop.failures == 1 and not loop.woken
