"""The mirror puller: follows the centre's bill changes from the stored cursor.

A new node (no cursor) first streams the snapshot, applying it in batches, then follows
`bills/changes`. Each batch goes to a callable the node provides (sync never imports
edge) that stores the bills and the cursor in one transaction. A `sync.loop.Loop`: each
request is retried by tenacity on transport errors and 5xx. On battery the power policy
lengthens `interval_s`. Every answer is checked (sync.answers, sync.snapshot) and every
bill must be of the node's governorate before anything is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

import outbox
from sync import answers, protocol, signing, snapshot, tls
from sync.errors import BadAnswer, CentreRefused, CentreUnavailable, ProtocolError, SyncError
from sync.fines import Rule
from sync.link import Link
from sync.loop import ATTEMPTS_PER_STEP, Loop, Sleep
from sync.progress import Progress

log = logging.getLogger(__name__)
ApplyBatch = Callable[[list[dict[str, Any]], int | None], Coroutine[Any, Any, None]]
SNAPSHOT_BATCH = 5_000
MAX_PAGES_PER_STEP = 50
TRANSIENT = (CentreUnavailable,)


@dataclass(frozen=True)
class PullConfig:
    node: str
    governorate: str
    url: str
    secret: bytes
    limit: int = 1000
    interval_s: float = 30.0
    policy: outbox.RetryPolicy = field(default_factory=outbox.RetryPolicy)
    attempts_per_step: int = ATTEMPTS_PER_STEP


class Puller(Loop[int]):
    """`step()` pulls what is new and returns how many bills it applied, or raises a
    SyncError: CentreUnavailable (transport, 5xx), CentreRefused (4xx), ProtocolError."""

    expected = (SyncError,)

    def __init__(
        self,
        config: PullConfig,
        session: aiohttp.ClientSession,
        link: Link,
        *,
        cursor: Callable[[], int | None],
        apply: ApplyBatch,
        heard: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        secret: Callable[[], bytes] | None = None,
        fine_rules: Callable[[list[Rule]], Awaitable[None]] | None = None,
        statuses: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__("mirror pull", policy=config.policy, sleep=sleep,
                         attempts=config.attempts_per_step, logger=log)  # fmt: skip
        self.config = config
        self.session = session
        self.link = link
        self.cursor = cursor
        self.apply = apply
        self.heard = heard
        self.fine_rules = fine_rules
        # Requests' statuses of a page (protocol 4), applied before the page's cursor: each
        # replaces only a lower version, so a page pulled again changes nothing.
        self.statuses = statuses
        self.clock = clock
        self.interval_s = config.interval_s
        self.base = f"/v1/governorates/{config.governorate}/bills"
        self._bootstrap_told = False
        # The key to sign with now: a SecretFile follows a rotation without a restart.
        self.secret: Callable[[], bytes] = secret or (lambda: config.secret)
        # The bootstrap's bills applied and the total the centre announced (readiness shows
        # them); the last attempt's, None before the first.
        self.bootstrap_progress: Progress | None = None
        link.on_ok(self.resume)

    def trigger(self) -> None:
        self.reset_backoff()
        self.wake()

    def set_interval(self, seconds: float) -> None:
        if seconds != self.interval_s:
            log.info("mirror pull interval now %.0f s", seconds)
            self.interval_s = seconds

    def pace(self, result: int) -> float:
        return self.interval_s

    def failed(self, exc: Exception) -> float:
        self.holding = isinstance(exc, CentreRefused) and exc.config_fault
        delay = super().failed(exc)
        # The mirror is never left older than one interval for a centre that only failed.
        return min(self.interval_s, delay) if isinstance(exc, SyncError) else delay

    async def step(self) -> int:
        """Pull what is new (bootstrapping from the snapshot if needed); return bills applied."""
        cursor = self.cursor()
        applied = await (self.bootstrap() if cursor is None else self._follow(cursor))
        if self.fine_rules is not None:
            await self._pull_fine_rules(self.fine_rules)
        return applied

    async def _pull_fine_rules(self, store: Callable[[list[Rule]], Awaitable[None]]) -> None:
        """The governorate's fine rules, whole (protocol 4): a handful of rows, every step."""
        path = f"/v1/governorates/{self.config.governorate}/fine-rules"
        raw, _ = await self.retried(functools.partial(self._get, path), TRANSIENT)
        try:
            rules = protocol.decode_fine_rules(raw, self.config.governorate)
        except ProtocolError as exc:
            bad = ProtocolError(f"bad fine rules: {exc}", code=exc.code)
            raise self._untrusted(bad) from exc
        await store(rules)

    async def _follow(self, cursor: int) -> int:
        applied = 0
        for _ in range(MAX_PAGES_PER_STEP):
            path = f"{self.base}/changes?since={cursor}&limit={self.config.limit}"
            raw, date = await self.retried(functools.partial(self._get, path), TRANSIENT)
            try:
                changes = protocol.decode_changes(raw, self.config.governorate)
            except ProtocolError as exc:
                bad = ProtocolError(f"bad changes page: {exc}", code=exc.code)
                raise self._untrusted(bad) from exc
            if changes.requests and self.statuses is not None:
                await self.statuses(changes.requests)
            if changes.changes or changes.cursor != cursor:
                await self.apply(changes.changes, changes.cursor)
            else:
                await self.heard()
            self._heard_from_centre(date)
            applied += len(changes.changes)
            cursor = changes.cursor
            if not changes.more:
                break
        return applied

    async def bootstrap(self) -> int:
        """Stream the snapshot into the mirror in batches; the cursor is stored with the last.

        A stream cut by the network starts again from the beginning (the bills already
        applied stay: a bill is only replaced by a higher version).
        """
        return await self.retried(self._bootstrap_once, TRANSIENT)

    def _heard_from_centre(self, date: str | None) -> None:
        # Reset first: the link's listeners include this loop's own `resume`.
        self.reset_backoff()
        self.link.ok(date)

    async def _bootstrap_once(self) -> int:
        try:
            return await self._bootstrap()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._transport(exc) from exc
        except (BadAnswer, ProtocolError) as exc:
            raise self._untrusted(exc) from exc

    async def _bootstrap(self) -> int:
        path = f"{self.base}/snapshot"
        headers, secret = self._sign(path)
        reader = snapshot.SnapshotReader(
            secret, headers[signing.SIGNATURE_HEADER],
            governorate=self.config.governorate,
        )  # fmt: skip
        pending: list[dict[str, Any]] = []
        applied = 0
        in_flight: asyncio.Task[None] | None = None
        progress: Progress | None = None  # from the stream's start: no bar for a refusal

        async def apply(bills: list[dict[str, Any]], cursor: int | None) -> None:
            await self.apply(bills, cursor)
            if progress is not None:
                progress.advance(len(bills))

        if not self._bootstrap_told:  # once, not once per retry of a centre that is away
            self._bootstrap_told = True
            log.info("mirror is empty: bootstrapping from the centre's snapshot")
        try:
            # The session's total timeout bounds ordinary requests; a snapshot of a whole
            # governorate takes as long as the link needs, so only a stalled read times out.
            # The reader releases a page's bills only once its seal verified; the cursor
            # comes with the last seal, so it is stored only after that page verified.
            async with self._request(path, headers, timeout=self._stream_timeout()) as resp:
                await self._check(resp, headers, secret, None)
                total = answers.announced_count(secret, headers[signing.SIGNATURE_HEADER],
                                                resp.headers)  # fmt: skip
                progress = Progress("mirror bootstrap", total, unit="bills")
                self.bootstrap_progress = progress
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    pending.extend(reader.feed(chunk))
                    if len(pending) >= SNAPSHOT_BATCH:
                        # One batch is written while the next is read and decoded.
                        if in_flight is not None:
                            await in_flight
                        in_flight = asyncio.create_task(apply(pending, None))
                        applied += len(pending)
                        pending = []
                reader.finish()
                date = resp.headers.get("Date")
            if in_flight is not None:
                await in_flight
                in_flight = None
            await apply(pending, reader.cursor)
            applied += len(pending)
        finally:
            took = 0.0 if progress is None else progress.finish()
            if in_flight is not None:
                in_flight.cancel()
                with contextlib.suppress(BaseException):
                    await in_flight
        self._heard_from_centre(date)
        log.info(
            "mirror bootstrapped: %d bills, cursor %s, in %.1f s", applied, reader.cursor, took
        )
        return applied

    def _stream_timeout(self) -> aiohttp.ClientTimeout:
        read = self.session.timeout.total or 30.0
        return aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, read), sock_read=read)

    def _sign(self, path: str) -> tuple[dict[str, str], bytes]:
        secret = self.secret()
        at = int(self.link.corrected_time())
        return signing.sign(secret, self.config.node, "GET", path, b"", at), secret

    def _request(
        self, path: str, headers: dict[str, str], timeout: aiohttp.ClientTimeout | None = None
    ) -> Any:
        # Never follow a redirect: a man in the middle could send the signed request (and the
        # node's trust in the answer) to a server of its choosing.
        url = self.config.url + path
        if timeout is None:
            return self.session.get(url, headers=headers, allow_redirects=False)
        return self.session.get(url, headers=headers, timeout=timeout, allow_redirects=False)

    async def _check(
        self,
        resp: aiohttp.ClientResponse,
        headers: dict[str, str],
        secret: bytes,
        body: bytes | None,
    ) -> None:
        """Raise unless a signed 200 (`body` None: a stream, its pages are signed instead)."""
        if resp.status >= 500:
            # Acted on only as "try again later" (a proxy's 502 is unsigned): its Date is not.
            code, detail = protocol.decode_error(await resp.read())
            unavailable = CentreUnavailable(f"{resp.status} {code}: {detail}")
            self.link.failed(str(unavailable), code=unavailable.code)
            raise unavailable
        if resp.status != 200:
            body = await resp.read()
        signature = headers[signing.SIGNATURE_HEADER]
        date = resp.headers.get("Date")
        try:
            answers.check_answer(secret, signature, resp.status, resp.headers, body)
        except BadAnswer as exc:
            refusal = answers.unsigned_refusal(resp.status, body or b"", exc)
            if not isinstance(refusal, CentreRefused):
                raise
            refused, date = refusal, None
        else:
            if resp.status == 200:
                return
            code, detail = protocol.decode_error(body or b"")
            refused = CentreRefused(resp.status, code, detail)
        self.link.failed(
            str(refused), code=refused.code, config_fault=refused.config_fault, server_date=date
        )
        raise refused

    async def _get(self, path: str) -> tuple[bytes, str | None]:
        headers, secret = self._sign(path)
        try:
            async with self._request(path, headers) as resp:
                if resp.status != 200:
                    await self._check(resp, headers, secret, None)
                body = await resp.read()
                await self._check(resp, headers, secret, body)
                return body, resp.headers.get("Date")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._transport(exc) from exc
        except BadAnswer as exc:
            raise self._untrusted(exc) from exc

    def _untrusted(self, exc: SyncError) -> SyncError:
        """An answer that cannot be trusted: a link fault, nothing of it applied."""
        self.link.failed(str(exc), code=exc.code, answered=True)
        return exc

    def _transport(self, exc: BaseException) -> SyncError:
        failure = tls.transport_failure(exc, self.config.url)
        self.link.failed(
            str(failure), code=failure.code, config_fault=isinstance(failure, CentreRefused)
        )
        return failure
