"""systemd's notify protocol without libsystemd: READY, WATCHDOG, STOPPING and STATUS.

Datagrams to $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace); outside
systemd nothing is sent. See sd_notify(3) and sd_watchdog_enabled(3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

import outbox
from edge import config
from edge.node import NODE, Node

log = logging.getLogger(__name__)

STATUS_EVERY_S = 15.0
PROBE_EVERY_S = 0.1


def address(env: Mapping[str, str] | None = None) -> str | None:
    """Where systemd listens, as socket.sendto wants it; None outside systemd."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]
    return path if path.startswith("/") else None


def send(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `KEY=value` fields in one datagram; False when there is no one to tell.

    Never blocks and never raises: a full or vanished socket must not stop the node.
    """
    target = address(env)
    if target is None or not fields:
        return False
    message = "\n".join(fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message, target)
    except OSError as exc:
        log.warning("cannot notify systemd at %r: %s", target, exc)
        return False
    return True


def watchdog_period(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked."""
    values = os.environ if env is None else env
    usec, owner = values.get("WATCHDOG_USEC", ""), values.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    # The variables are inherited by children; only the process systemd named must ping.
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2_000_000


def status_line(node: Node, pending: int | None) -> str:
    s = node.settings
    parts = [
        f"node {s.node_id} on {s.http_host or '*'}:{s.http_port}",
        node.mode(),
        f"power {node.power.state}",
        f"link {node.link.state}",
    ]
    if pending is not None:
        parts.append(f"{pending} payments pending")
    return "STATUS=" + ", ".join(parts)


async def _listening(host: str, port: int) -> bool:
    probe = config.probe_host(host)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(probe, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_until_serving(node: Node) -> None:
    """Return once the HTTP port accepts connections (the app starts before its socket)."""
    s = node.settings
    if s.http_port == 0:
        await asyncio.sleep(0)  # an ephemeral port (tests): nothing to probe
        return
    # Nothing to wait on but the socket itself: aiohttp binds it after the app has started.
    while not await _listening(s.http_host, s.http_port):  # noqa: ASYNC110
        await asyncio.sleep(PROBE_EVERY_S)


async def _pending(node: Node) -> int | None:
    try:
        return await node.db.read_slow(lambda c: outbox.stats(c).pending)
    except Exception:  # a status line is not worth an error
        return None


async def _writer_alive(node: Node, within_s: float) -> bool:
    # A trivial job through the writer proves its thread is not wedged: a node that cannot
    # commit payments should be restarted by systemd rather than pinging it forever.
    try:
        async with asyncio.timeout(within_s):
            await node.db.exclusive(lambda c: None)
    except (TimeoutError, outbox.OutboxError, RuntimeError) as exc:
        log.error("watchdog: the database writer does not answer (%s); not pinging", exc)
        return False
    return True


async def keepalive(node: Node, period: float | None) -> None:
    """READY=1 once serving, then WATCHDOG=1 every `period` and STATUS= every few seconds."""
    await wait_until_serving(node)
    send("READY=1", status_line(node, await _pending(node)))
    log.info("serving; told systemd READY=1%s", f" (watchdog every {period:g} s)" if period else "")
    tick = min(period or STATUS_EVERY_S, STATUS_EVERY_S)
    loop = asyncio.get_running_loop()
    last_status = loop.time()
    while True:
        await asyncio.sleep(tick)
        if period is not None and await _writer_alive(node, period):
            send("WATCHDOG=1")
        if loop.time() - last_status >= STATUS_EVERY_S:
            last_status = loop.time()
            send(status_line(node, await _pending(node)))


async def notify_ctx(app: web.Application) -> AsyncIterator[None]:
    """Outermost cleanup context: keeps pinging through the final replay until the very end."""
    node = app[NODE]
    if address() is None:
        yield
        return
    send(f"STATUS=starting: opening {node.db.path}")
    period = watchdog_period()
    node.tasks.start("systemd-notify", lambda: keepalive(node, period))
    try:
        yield
    finally:
        await node.tasks.stop("systemd-notify")
        send("STATUS=stopped")


def install(app: web.Application) -> None:
    """Tell systemd about this app: outermost context (pings through the final replay)."""
    app.cleanup_ctx.insert(0, notify_ctx)
    app.on_shutdown.insert(0, stopping)


async def stopping(app: web.Application) -> None:
    """on_shutdown: tell systemd at once, before the drain and the final replay."""
    send("STOPPING=1", "STATUS=stopping: answering requests in flight, then a final replay")
