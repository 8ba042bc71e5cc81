"""How the node serves HTTP: its runner, its guarded site, and the loop `edge serve` runs.

Tests serve through `runner` and `site` too, so they exercise the same limits as production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from ssl import SSLContext

from aiohttp import web

from edge.config import Settings
from edge.web import connections

log = logging.getLogger(__name__)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """Idle keep-alive limit; bad requests reported on the filtered protocol logger."""
    connections.install_parser_filter()
    return web.AppRunner(
        app,
        keepalive_timeout=settings.http_keepalive_timeout_s,
        shutdown_timeout=settings.http_shutdown_timeout_s,
        access_log=None,
        logger=connections.PROTOCOL_LOG,
    )


def site(
    app_runner: web.AppRunner, settings: Settings, *, ssl_context: SSLContext | None = None
) -> connections.GuardedSite:
    return connections.GuardedSite(
        app_runner, settings.http_host, settings.http_port, connections.Limits.of(settings),
        ssl_context=ssl_context,
    )  # fmt: skip


async def serve_until_signal(
    app: web.Application, settings: Settings, *, ssl_context: SSLContext | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (as web.run_app would).

    Not web.run_app: it builds its own sites, and ours must wrap every connection.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app_runner = runner(app, settings)
    started = time.monotonic()
    await app_runner.setup()  # opens the database: a failure here is the start's failure
    try:
        await site(app_runner, settings, ssl_context=ssl_context).start()
        # Only now: the socket listens, so the port answers from this line on.
        scheme = "https" if ssl_context else "http"
        log.info(
            "serving on %s (started in %.1f s)",
            ", ".join(f"{scheme}://{_host(a[0])}:{a[1]}" for a in app_runner.addresses),
            time.monotonic() - started,
        )
        await stop.wait()
    finally:
        await app_runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def serve(
    app: web.Application, settings: Settings, *, ssl_context: SSLContext | None = None
) -> None:
    asyncio.run(serve_until_signal(app, settings, ssl_context=ssl_context))
