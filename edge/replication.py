"""The node's side of the link: the replayer and the mirror puller, built once per node.

`Replication` is made in `create_app` without I/O; `start()` (in a cleanup context) reads
the secret, opens one kept-alive HTTP session and starts both loops under the supervisor;
`close()` stops them and makes one bounded final replay before the database closes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp

import outbox
from edge import fines, mirror, reconcile, requests
from edge.config import Settings
from edge.db import Database
from edge.errors import ConfigError
from edge.tasks import Supervisor
from sync import ledgerlink, protocol, signing, tls
from sync.errors import SyncError
from sync.fines import Rule
from sync.link import Link
from sync.puller import PullConfig, Puller
from sync.replayer import ReplayConfig, Replayer, StepResult

log = logging.getLogger(__name__)
INSECURE_WARNING_EVERY_S = 3600.0


def read_secret(settings: Settings) -> signing.SecretFile:
    """The node's key, checked against the rules now and followed when the file is replaced."""
    try:
        return signing.SecretFile(settings.centre_secret_file)
    except SyncError as exc:
        raise ConfigError(f"centre.secret_file: {exc}") from exc


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for an https:// centre (None for http://); ConfigError naming the key."""
    if not settings.centre_url.startswith("https://"):
        return None
    try:
        return tls.client_context(
            settings.centre_ca_file, settings.centre_cert_file, settings.centre_key_file
        )
    except SyncError as exc:
        raise ConfigError(f"centre.ca_file/cert_file/key_file: {exc.detail}") from exc


def make_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=4, ssl=ssl_context(settings) or True)
    timeout = aiohttp.ClientTimeout(
        total=settings.centre_timeout_s, connect=min(10.0, settings.centre_timeout_s)
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


class Replication:
    """Both loops of one node; `replayer`/`puller` are None until started (or without a centre)."""

    def __init__(
        self, settings: Settings, db: Database, link: Link, tasks: Supervisor, *,
        clock: Callable[[], float] = time.time,
        on_result: Callable[[StepResult], None] | None = None,
    ) -> None:  # fmt: skip
        self.settings, self.db, self.link, self.tasks = settings, db, link, tasks
        self.clock = clock
        self.on_result = on_result
        # Set when a payment commits, so the replayer sends it without waiting for its timer.
        self.outbox_changed = asyncio.Event()
        self.replayer: Replayer | None = None
        self.puller: Puller | None = None
        self.reconciler: reconcile.Daily | None = None  # yesterday's reconciliation, daily
        self._session: aiohttp.ClientSession | None = None
        # The node's key, once started with a centre: receipts are signed under a key of it.
        self.keyring: signing.SecretFile | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.centre_url)

    def build(
        self, session: aiohttp.ClientSession, keyring: signing.SecretFile
    ) -> tuple[Replayer, Puller]:
        s, db, clock = self.settings, self.db, self.clock
        secret = keyring()
        policy = outbox.RetryPolicy(base_s=s.centre_retry_base_s, cap_s=s.centre_retry_cap_s)
        url = s.centre_url.rstrip("/")

        replayer = Replayer(
            ReplayConfig(node=s.node_id, url=url, secret=secret, batch_size=s.centre_batch_size,
                         policy=policy, config_fault_retry_s=s.centre_config_fault_retry_s),
            db.writer, session, self.link, clock=clock, on_result=self.on_result, secret=keyring,
            settled=fines.keep,
        )  # fmt: skip

        async def apply(bills: list[dict[str, Any]], cursor: int | None) -> None:
            now = clock()
            await db.write(lambda c: mirror.apply_changes(c, bills, cursor, now=now))

        async def heard() -> None:
            now = clock()
            await db.write(lambda c: mirror.mark_heard(c, now=now))

        def cursor() -> int | None:
            return db.read(lambda c: mirror.state(c).cursor)

        async def fine_rules(rules: list[Rule]) -> None:
            if await db.write(lambda c: mirror.store_rules(c, rules)):
                log.info("fine rules now at version %s", max((r.version for r in rules), default=0))

        async def statuses(records: list[dict[str, Any]]) -> None:
            await db.write(lambda c: requests.apply_statuses(c, records))

        puller = Puller(
            PullConfig(node=s.node_id, governorate=s.node_governorate, url=url, secret=secret,
                       limit=s.centre_pull_limit, interval_s=s.centre_pull_interval_s,
                       policy=policy),
            session, self.link, cursor=cursor, apply=apply, heard=heard, clock=clock,
            secret=keyring, fine_rules=fine_rules, statuses=statuses,
        )  # fmt: skip
        return replayer, puller

    async def start(self) -> None:
        if not self.enabled:
            log.warning("centre.url is empty: this node keeps payments locally and replays nothing")
            return
        secret = read_secret(self.settings)
        self.keyring = secret
        self._session = make_session(self.settings)
        self.replayer, self.puller = self.build(self._session, secret)
        self.tasks.start("replayer", self.replayer.run)
        self.tasks.start("puller", self.puller.run)
        self.tasks.start("replay-wakeup", self._wake_on_payment)
        self.reconciler = self.daily(self._session, secret)
        self.tasks.start("reconcile", self.reconciler.run)
        if self.insecure:
            self.warn_insecure()
            self.tasks.start("insecure-link-warning", self._warn_insecure_hourly)

    def daily(self, session: aiohttp.ClientSession, keyring: signing.SecretFile) -> reconcile.Daily:
        s, link = self.settings, self.link
        url = s.centre_url.rstrip("/")

        async def fetch(day: str) -> list[protocol.LedgerEntry]:
            return await ledgerlink.fetch(
                session, url, s.node_id, keyring(), day, link.corrected_time()
            )

        return reconcile.Daily(
            fetch=fetch, read=self.db.read_slow, tz=s.tz, link_up=lambda: link.state == "up",
            clock=self.clock,
        )  # fmt: skip

    @property
    def insecure(self) -> bool:
        """Plain http:// to another machine: verdicts and bills could be forged on the way."""
        return tls.insecure(self.settings.centre_url)

    def warn_insecure(self) -> None:
        log.warning(
            "centre.url %s is plain http:// to another machine: anyone on the network between"
            " can read payments and answer in the centre's place; use https:// with"
            " centre.ca_file (deploy/README.md, section TLS)",
            tls.origin(self.settings.centre_url),
        )

    async def close(self) -> None:
        replayer, puller = self.replayer, self.puller
        if replayer is None or puller is None:
            return
        replayer.stop()
        puller.stop()
        if self.reconciler is not None:
            self.reconciler.stop()
            await self.tasks.stop("reconcile")
        await self.tasks.stop("replay-wakeup")
        await self.tasks.stop("insecure-link-warning")
        await self.tasks.stop("replayer", cancel=False)
        await self.tasks.stop("puller", cancel=False)
        # litestream's rule: always one last sync on close, bounded so the stop stays timely.
        drained = await replayer.drain(self.settings.power_final_replay_s)
        pending = await self.db.read_slow(lambda c: outbox.stats(c).pending)
        log.info(
            "final replay %s; %d entries still pending", "done" if drained else "cut short", pending
        )
        if self._session is not None:
            await self._session.close()

    def trigger(self) -> bool:
        """Replay and pull now (the operator's "replay now"); False without a centre."""
        if self.replayer is None:
            return False
        self.replayer.trigger()
        if self.puller is not None:
            self.puller.trigger()
        return True

    def set_pull_interval(self, seconds: float) -> None:
        if self.puller is not None:
            self.puller.set_interval(seconds)

    async def _warn_insecure_hourly(self) -> None:
        # Once at start is easy to miss in a journal that rotates: say it again every hour.
        while True:
            await asyncio.sleep(INSECURE_WARNING_EVERY_S)
            self.warn_insecure()

    async def _wake_on_payment(self) -> None:
        while True:
            await self.outbox_changed.wait()
            self.outbox_changed.clear()
            if self.replayer is not None:
                self.replayer.notify()
