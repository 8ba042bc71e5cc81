"""The `alerts` loop: every `notify.check_s` it looks at the node as `/metrics` does, lets
`edge.alerts.Judge` decide what is news, and hands that to the `Notifier`; it runs only when
`[notify]` names a program or a webhook.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

import outbox
from edge import actions, alerts, mirror, offline
from edge.node import Node
from edge.notifier import Notifier
from sync.loop import Loop

log = logging.getLogger(__name__)

State = tuple[outbox.Stats, mirror.MirrorState, offline.Usage, int]


def read_state(conn: sqlite3.Connection, now: float) -> State:
    """What a look at the node needs from its database (off the loop: the counts may scan):
    the outbox's counts, the mirror's freshness, the offline limits' use, unresolved rejections."""
    return (
        outbox.stats(conn, now=now),
        mirror.state(conn),
        offline.read(conn),
        actions.unresolved(conn),
    )


class Watcher(Loop[None]):
    """A `sync.loop.Loop` whose step is one look; it owns the notifier's sinks' lifetime."""

    def __init__(
        self, node: Node, notifier: Notifier, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__("alerts", logger=log)
        self.node, self.notifier, self.monotonic = node, notifier, monotonic
        self.judge = alerts.Judge(node.settings)

    async def observe(self) -> alerts.Observation:
        node = self.node
        now = node.clock()
        stats, state, usage, unresolved = await node.db.read_slow(lambda c: read_state(c, now))
        limits = offline.status(node.acceptor.limits, usage, now, online=node.link.state == "up")
        heard = node.started_at if state.as_of is None else state.as_of
        failed = {
            n: t["error"] or "" for n, t in node.tasks.states().items() if t["state"] == "failed"
        }
        return alerts.Observation(
            at=now, power=node.power.state, charge_percent=node.power.battery_charge,
            runtime_s=node.power.runtime_s, link=node.link.state, pending=stats.pending,
            oldest_pending_age_s=stats.oldest_pending_age_s, unresolved=unresolved,
            mirror_age_s=max(0.0, now - heard), failed_tasks=failed,
            disk=alerts.disk(node.settings.node_data_dir), offline=alerts.usage_ratios(limits),
            min_free_bytes=node.settings.storage_min_free_mb * 2**20,
        )  # fmt: skip

    async def step(self) -> None:
        observation = await self.observe()
        for event in self.judge.judge(observation, self.monotonic()):
            self.notifier.emit(event)
        self.notifier.release()

    def pace(self, result: None) -> float:
        return self.node.settings.notify_check_s

    async def start(self) -> None:
        for sink in self.notifier.sinks:
            await sink.open()
            self.node.tasks.start(sink.name, sink.run)
        self.node.tasks.start("alerts", self.run)

    async def close(self) -> None:
        """Stop looking, look once more (a low battery seen just before the stop is told),
        give the sinks `notify.timeout_s` to send what is queued, then stop them."""
        tasks, timeout = self.node.tasks, self.node.settings.notify_timeout_s
        self.stop()
        await tasks.stop("alerts", cancel=False)
        try:
            await asyncio.wait_for(self.step(), timeout)
        except Exception:  # the stop goes on; the reason is in the log
            log.warning("alerts: the last look before the stop failed", exc_info=True)
        drained = await self.notifier.drain(timeout)
        if not drained:
            left = sum(len(sink.queue) for sink in self.notifier.sinks)
            log.warning("alerts: %d notifications not sent before the stop", left)
        for sink in self.notifier.sinks:
            sink.stop()
            await tasks.stop(sink.name, cancel=not drained)
            await sink.close()


ALERTS = web.AppKey("alerts", Watcher)


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the database (its last look reads it), before replication and power (so it stops
    after them and sees how they ended)."""
    watcher = app.get(ALERTS)
    if watcher is None:
        yield
        return
    await watcher.start()
    try:
        yield
    finally:
        await watcher.close()


def build(
    node: Node, monotonic: Callable[[], float], on_result: Callable[[str, str], None]
) -> Watcher | None:
    """The watcher with its notifier when `[notify]` names a sink, else None."""
    s = node.settings
    if not (s.notify_exec or s.notify_webhook_url):
        return None
    return Watcher(node, Notifier(s, monotonic=monotonic, on_result=on_result), monotonic=monotonic)
