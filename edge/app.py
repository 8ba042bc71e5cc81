"""`create_app(settings)`: the node's aiohttp application, built without I/O.

This is the composition root: the node's parts are made here, once. Resources open in
`cleanup_ctx` in dependency order (database, audit, tokens, alerts, replication, power
monitor) and close in reverse, so the database is the last thing to close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from edge import mirror, watcher
from edge.config import Settings
from edge.node import NODE, Node
from edge.power.monitor import POWER_MONITOR, PowerMonitor
from edge.power.sources import make_source
from edge.web import (
    admin,
    audit,
    cashier,
    clearing,
    connections,
    corrections,
    dashboard,
    headers,
    limits,
    metrics,
    power,
    problems,
    readings,
    receipt,
    requests,
    search,
    status,
)
from edge.web.http import MAX_BODY

log = logging.getLogger(__name__)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.db.open()
    started = time.monotonic()
    state = node.db.read(mirror.state)
    log.info(
        "mirror: %d bills, cursor %s, read in %.1f s%s", state.bills, state.cursor,
        time.monotonic() - started,
        "" if state.cursor is not None else
        " (bootstrapping: not ready, inquiries answer 503 until the first snapshot is in)",
    )  # fmt: skip
    try:
        yield
    finally:
        await node.db.close()
        log.info("database closed")


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """Right after the database: the trail's last flush runs before the database closes."""
    audit = app[NODE].audit
    await audit.start()
    try:
        yield
    finally:
        await audit.close()


async def tokens_ctx(app: web.Application) -> AsyncIterator[None]:
    app[NODE].tokens.load()
    yield
    await app[NODE].last_used.drain()  # before the database closes


async def replication_ctx(app: web.Application) -> AsyncIterator[None]:
    replication = app[NODE].replication
    await replication.start()
    try:
        yield
    finally:
        await replication.close()


async def power_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the monitor after replication (the policy uses it); stop it first on close."""
    node = app[NODE]
    monitor = app.get(POWER_MONITOR)
    if monitor is None:
        log.warning("ups.source is none: the power state stays unknown and nothing is stopped")
        yield
        return
    # One reading before the node serves: restarted by systemd onto a battery that is still
    # low, it must refuse money from its first request, not after its first poll.
    started = time.monotonic()
    try:
        await asyncio.wait_for(monitor.step(), node.settings.ups_timeout_s * 2)
    except Exception:  # the loop reports and retries; starting must not fail
        log.warning("first UPS reading failed; the monitor keeps trying", exc_info=True)
    log.info("first UPS reading: %s in %.1f s", node.power.state, time.monotonic() - started)
    node.tasks.start("power-monitor", monitor.run)
    try:
        yield
    finally:
        monitor.stop()
        await node.tasks.stop("power-monitor", cancel=False)
        await monitor.close()


async def tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Outermost: a task still running once everything else has closed is cancelled."""
    yield
    await app[NODE].tasks.close()


async def stop_taking_money(app: web.Application) -> None:
    # Runs when shutdown starts: requests already in flight finish, new payments get 503.
    node = app[NODE]
    if not node.shutting_down:
        node.refuse_payments("the node is stopping")
    monitor = app.get(POWER_MONITOR)
    if monitor is not None:
        monitor.stop()  # mains returning during the stop must not reopen payments


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The node's app; `clock` is wall time, `monotonic` times the rate limits (both for tests)."""
    made = metrics.Metrics()
    node = Node.build(settings, clock=clock, on_replay_result=made.on_replay)
    made.collect(node)
    app = web.Application(
        middlewares=[connections.deadlines, metrics.observe, problems.problems, limits.limit],
        client_max_size=MAX_BODY,
    )
    headers.install(app)
    app[NODE] = node
    app[metrics.METRICS] = made
    app[limits.LIMITER] = limits.Limiter(settings, clock=monotonic, on_limited=made.on_limited)
    if settings.ups_source != "none":
        app[POWER_MONITOR] = PowerMonitor(node, make_source(settings))
    alerts = watcher.build(node, monotonic, made.on_notify)
    if alerts is not None:
        app[watcher.ALERTS] = alerts
        made.watch_sinks([sink.sink for sink in alerts.notifier.sinks])
    app.cleanup_ctx.extend(
        [
            tasks_ctx,
            database_ctx,
            audit_ctx,
            tokens_ctx,
            watcher.alerts_ctx,
            replication_ctx,
            power_ctx,
            limits.limits_ctx,
        ]
    )
    app.on_shutdown.append(stop_taking_money)
    for module in (
        cashier,
        receipt,
        search,
        corrections,
        clearing,
        readings,
        requests,
        status,
        admin,
        audit,
        power,
        dashboard,
        metrics,
    ):
        app.add_routes(module.routes)
    return app
