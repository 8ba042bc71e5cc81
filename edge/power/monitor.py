"""The power monitor: polls the UPS source, stores every state change, applies the power policy.

Policy (DESIGN 5.4): on `battery` checkpoint the WAL and slow the mirror pull; on `low`
refuse payments, make a last bounded replay, checkpoint, then stop the process (or stay
read-only, by setting); back on `mains` before the stop, resume.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

from aiohttp import web

import outbox
from edge.node import Node
from edge.power.history import record_event
from edge.power.policy import PowerTracker, Reading, Transition
from edge.power.sources import PowerSource
from sync.loop import Loop

log = logging.getLogger(__name__)

REPLAY_POLL_S = 0.2
LOW_MESSAGES = {
    "shutdown": (
        "انقطاع في الكهرباء: بطارية جهاز UPS على وشك النفاد والخادم سيتوقف بعد قليل. "
        "الاستعلام عن الفواتير ما زال متاحاً؛ أعد محاولة الدفع بعد عودة الكهرباء. / "
        "Power cut: the UPS battery is nearly empty and the server is about to stop. "
        "Bill inquiries still work; retry the payment once power is back."
    ),
    "read_only": (
        "انقطاع في الكهرباء: بطارية جهاز UPS على وشك النفاد، لذلك لا يقبل الخادم الدفعات حتى "
        "عودة الكهرباء. الاستعلام عن الفواتير ما زال متاحاً. / "
        "Power cut: the UPS battery is nearly empty, so the server takes no payments until "
        "power is back. Bill inquiries still work."
    ),
}


def stop_process() -> None:
    """SIGTERM to ourselves: aiohttp's run_app then shuts down gracefully and exits 0."""
    os.kill(os.getpid(), signal.SIGTERM)


class PowerMonitor(Loop[Transition | None]):
    """A `sync.loop.Loop`: `step()` is one poll, paced by `interval()` with no backoff (a
    source never raises: no data is a reading too). `shutdown` is the final action."""

    def __init__(
        self, node: Node, source: PowerSource, *,
        monotonic: Callable[[], float] = time.monotonic,
        shutdown: Callable[[], None] = stop_process,
    ) -> None:  # fmt: skip
        super().__init__("power monitor", logger=log)
        s = node.settings
        self.node, self.source, self.monotonic, self.shutdown = node, source, monotonic, shutdown
        self.tracker = PowerTracker(
            runtime_floor_s=s.power_runtime_floor_s, dead_time_s=s.power_dead_time_s
        )
        self.last_checkpoint: tuple[int, int, int] | None = None
        self.shutdown_requested = False
        self._low_task: asyncio.Task[None] | None = None
        self._refusing = False
        node.power.source = source.name

    def interval(self) -> float:
        # Faster on battery, and while a change waits for its confirming reading.
        urgent = self.tracker.state in ("battery", "low") or self.tracker.pending is not None
        s = self.node.settings
        return s.ups_poll_battery_s if urgent else s.ups_poll_s

    def pace(self, result: Transition | None) -> float:
        return self.interval()

    def failed(self, exc: Exception) -> float:
        # The UPS is the node's own hardware: poll on at the usual pace, never back off.
        return self.interval()

    async def run(self) -> None:
        log.info("power monitor polls %s", self.source.describe())
        await super().run()

    async def close(self) -> None:
        self.stop()
        task, self._low_task = self._low_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.source.close()

    async def step(self) -> Transition | None:
        reading = await self.source.read()
        self._show(reading)
        await self.node.history.note(reading)
        change = self.tracker.step(reading, self.monotonic())
        if change is None:
            self.node.power.state = self.tracker.state
            return None
        level = logging.WARNING if change.to_state in ("low", "unknown") else logging.INFO
        log.log(level, "power %s -> %s: %s", change.from_state, change.to_state, change.reason)
        # Act, then store, then publish: whoever sees the new state can pay accordingly and
        # finds its event.
        self._apply(change)
        at = self.node.clock()
        try:
            await self.node.db.write(lambda c: record_event(c, change, at))
        except Exception:  # the policy above has acted; a lost history line must not stop it
            log.exception("could not store the power event")
        self.node.power.state = change.to_state
        if change.to_state == "battery":
            await self._checkpoint("PASSIVE")
        return change

    def _show(self, reading: Reading) -> None:
        view = self.node.power
        view.error = reading.error
        if not reading.ok:
            # Last known figures stay, dated by updated_at; the status must not look current.
            view.ups_status = None
            return
        view.ups_status = reading.status
        view.battery_charge, view.runtime_s = reading.charge, reading.runtime_s
        view.load_pct, view.input_voltage = reading.load_pct, reading.input_voltage
        view.updated_at = self.node.clock()

    # --- policy -------------------------------------------------------------------------

    def _apply(self, change: Transition) -> None:
        s = self.node.settings
        on_battery = change.to_state in ("battery", "low")
        self.node.replication.set_pull_interval(
            s.centre_pull_interval_battery_s if on_battery else s.centre_pull_interval_s
        )
        if change.to_state == "low":
            self._go_low()
        elif change.to_state == "mains":
            self._resume()
        elif change.to_state == "unknown":
            log.warning("the UPS gives no data (%s); the node keeps working", change.reason)

    def _go_low(self) -> None:
        if not self.node.shutting_down:
            self.node.refuse_payments(LOW_MESSAGES[self.node.settings.power_on_low])
            self._refusing = True
            log.warning("low battery: payments refused, inquiries still answered")
        if self._low_task is None or self._low_task.done():
            self._low_task = asyncio.create_task(self._final(), name="power-final")

    def _resume(self) -> None:
        task, self._low_task = self._low_task, None
        if task is not None and not task.done():
            task.cancel()
        if self.shutdown_requested:
            log.warning("mains is back, but the node is already stopping")
            return
        if self._refusing and not self.stopping:
            self.node.resume_payments()
            self._refusing = False
            log.info("mains is back: payments resumed")

    async def _final(self) -> None:
        s = self.node.settings
        try:
            drained = await self.final_replay(s.power_final_replay_s)
            await self._checkpoint("TRUNCATE")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("final replay/checkpoint failed; stopping anyway")
            drained = False
        if s.power_on_low == "read_only":
            log.warning("low battery: read-only until mains returns (outbox drained: %s)", drained)
            return
        log.warning("low battery: stopping the node now (outbox drained: %s)", drained)
        self.shutdown_requested = True
        self.shutdown()

    async def final_replay(self, seconds: float) -> bool:
        """Wake the running replayer and wait (bounded) until nothing is pending.

        Not `Replayer.drain`: alongside the live replay loop it would send every batch twice.
        """
        if not self.node.replication.trigger():
            return True
        deadline = time.monotonic() + seconds
        while self.node.db.read(outbox.next_attempt_at) is not None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(REPLAY_POLL_S)
        return True

    async def _checkpoint(self, mode: str) -> None:
        try:
            self.last_checkpoint = await self.node.db.checkpoint(mode)
            log.info("WAL checkpoint (%s): %s", mode, self.last_checkpoint)
        except Exception:  # a failed checkpoint costs recovery time, not data
            log.exception("WAL checkpoint (%s) failed", mode)


POWER_MONITOR = web.AppKey("power_monitor", PowerMonitor)
