"""The node's side of the link: runs the replayer and the mirror puller as background tasks.

`replication_ctx` opens one kept-alive HTTP session to the centre, starts both loops, and
on close stops them and makes one bounded final replay before the database closes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

import outbox
from edge import errors, mirror
from edge.api import client_of, json_response
from edge.config import Settings
from edge.errors import ConfigError
from edge.node import NODE, Node
from sync import signing
from sync.errors import SyncError
from sync.puller import PullConfig, Puller
from sync.replayer import ReplayConfig, Replayer

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def read_secret(settings: Settings) -> bytes:
    try:
        return signing.read_secret(settings.centre_secret_file)
    except SyncError as exc:
        raise ConfigError(f"centre.secret_file: {exc}") from exc


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.centre_url.startswith("https://"):
        return None
    context = ssl.create_default_context(cafile=settings.centre_ca_file or None)
    if settings.centre_client_cert:
        context.load_cert_chain(settings.centre_client_cert, settings.centre_client_key or None)
    return context


def make_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=4, ssl=ssl_context(settings) or True)
    timeout = aiohttp.ClientTimeout(
        total=settings.centre_timeout_s, connect=min(10.0, settings.centre_timeout_s)
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def build(node: Node, session: aiohttp.ClientSession, secret: bytes) -> tuple[Replayer, Puller]:
    s = node.settings
    policy = outbox.RetryPolicy(base_s=s.centre_retry_base_s, cap_s=s.centre_retry_cap_s)
    url = s.centre_url.rstrip("/")
    replayer = Replayer(
        ReplayConfig(node=s.node_id, url=url, secret=secret, batch_size=s.centre_batch_size,
                     policy=policy, config_fault_retry_s=s.centre_config_fault_retry_s),
        node.db.writer, session, node.link, clock=node.clock,
        on_result=node.on_replay_result,  # edge.metrics counts batches
    )  # fmt: skip

    async def apply(bills: list[dict[str, Any]], cursor: int | None) -> None:
        now = node.clock()
        await node.db.write(lambda c: mirror.apply_changes(c, bills, cursor, now=now))

    async def heard() -> None:
        now = node.clock()
        await node.db.write(lambda c: mirror.mark_heard(c, now=now))

    def cursor() -> int | None:
        return node.db.read(lambda c: mirror.state(c).cursor)

    puller = Puller(
        PullConfig(node=s.node_id, governorate=s.node_governorate, url=url, secret=secret,
                   limit=s.centre_pull_limit, interval_s=s.centre_pull_interval_s, policy=policy),
        session, node.link, cursor=cursor, apply=apply, heard=heard, clock=node.clock,
    )  # fmt: skip
    return replayer, puller


async def replication_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    settings = node.settings
    if not settings.centre_url:
        log.warning("centre.url is empty: this node keeps payments locally and replays nothing")
        yield
        return
    secret = read_secret(settings)
    session = make_session(settings)
    replayer, puller = build(node, session, secret)
    node.replayer = replayer
    node.puller = puller
    tasks = [
        asyncio.create_task(replayer.run(), name="replayer"),
        asyncio.create_task(puller.run(), name="puller"),
        asyncio.create_task(_wake_on_payment(node, replayer), name="replay-wakeup"),
    ]
    try:
        yield
    finally:
        replayer.stop()
        puller.stop()
        for task in tasks[2:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # litestream's rule: always one last sync on close, bounded so the stop stays timely.
        drained = await replayer.drain(settings.power_final_replay_s)
        pending = await node.db.read_slow(lambda c: outbox.stats(c).pending)
        log.info(
            "final replay %s; %d entries still pending", "done" if drained else "cut short", pending
        )
        await session.close()


async def _wake_on_payment(node: Node, replayer: Replayer) -> None:
    while True:
        await node.outbox_changed.wait()
        node.outbox_changed.clear()
        replayer.notify()


@routes.post("/v1/admin/replay")
async def replay_now(request: web.Request) -> web.Response:
    client_of(request, "admin")
    node = request.app[NODE]
    if node.replayer is None:
        raise errors.NoCentre("centre.url is empty in this node's configuration")
    node.replayer.trigger()
    if node.puller is not None:
        node.puller.trigger()
    pending = await node.db.read_slow(lambda c: outbox.stats(c).pending)
    return json_response({"triggered": True, "pending": pending}, status=202)
