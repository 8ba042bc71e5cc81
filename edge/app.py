"""`create_app(settings)`: the node's aiohttp application, built without I/O.

Resources open in `cleanup_ctx` in dependency order (database, tokens, then the loops
that use them) and close in reverse, so the database is the last thing to close.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from edge import api, dashboard, metrics, monitor, notify, replication, status
from edge.auth import Tokens
from edge.config import Settings
from edge.db import Database
from edge.node import NODE, Node
from edge.problems import problems

log = logging.getLogger(__name__)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.db.open()
    try:
        yield
    finally:
        await node.db.close()
        log.info("database closed")


async def tokens_ctx(app: web.Application) -> AsyncIterator[None]:
    app[NODE].tokens.load()
    yield


async def stop_taking_money(app: web.Application) -> None:
    # Runs when shutdown starts: requests already in flight finish, new payments get 503.
    node = app[NODE]
    if not node.shutting_down:
        node.refuse_payments("the node is stopping")
    power = node.power_monitor
    if power is not None:
        power.stop()  # mains returning during the stop must not reopen payments


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    node = Node(
        settings=settings,
        db=Database(settings.node_data_dir, synchronous=settings.storage_synchronous),
        tokens=Tokens(settings.auth_tokens_file),
        clock=clock,
    )
    node.link.clock = clock
    app = web.Application(middlewares=[metrics.observe, problems], client_max_size=api.MAX_BODY)
    app[NODE] = node
    app.cleanup_ctx.extend(
        [notify.notify_ctx, database_ctx, tokens_ctx, replication.replication_ctx,
         monitor.power_ctx]
    )  # fmt: skip
    app.on_shutdown.extend([stop_taking_money, notify.stopping])
    app.add_routes(api.routes)
    app.add_routes(status.routes)
    app.add_routes(replication.routes)
    app.add_routes(monitor.routes)
    metrics.setup(app)
    dashboard.setup(app)
    return app
