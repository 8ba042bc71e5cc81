"""The replayer: drains the outbox to the centre in seq order, in signed batches.

One `step()` sends one batch and settles its verdicts; `run()` repeats it, waiting on the
stop/wake event between steps. Transport errors and 5xx back off exponentially with jitter
(capped); a whole-batch 4xx is a configuration fault: logged loudly, retried slowly,
nothing dropped. `drain()` is the bounded final replay before the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

import outbox
from outbox import crashpoints
from sync import protocol, signing
from sync.errors import ProtocolError
from sync.link import Link

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayConfig:
    node: str
    url: str  # the centre's base URL, e.g. http://127.0.0.1:9090
    secret: bytes
    batch_size: int = 500
    policy: outbox.RetryPolicy = field(default_factory=outbox.RetryPolicy)
    config_fault_retry_s: float = 300.0


@dataclass(frozen=True)
class StepResult:
    """What one step did: `sent` entries, `settled` by verdict, or the `error` that stopped it."""

    sent: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    config_fault: bool = False
    retry_in_s: float = 0.0

    @property
    def idle(self) -> bool:
        return self.sent == 0 and self.error is None


class Replayer:
    def __init__(
        self,
        config: ReplayConfig,
        writer: outbox.Writer,
        session: aiohttp.ClientSession,
        link: Link,
        *,
        clock: Callable[[], float] = time.time,
        on_result: Callable[[StepResult], None] | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.session = session
        self.link = link
        self.clock = clock
        self.on_result = on_result
        self.path = f"/v1/nodes/{config.node}/outbox"
        self.failures = 0
        self._wake = asyncio.Event()
        self._stopping = False

    # --- control -----------------------------------------------------------------------

    def trigger(self) -> None:
        """Replay now (operator's "replay now", or a new payment while the link is up)."""
        self.failures = 0
        self._wake.set()

    def notify(self) -> None:
        """A new entry was committed: send it at once unless we are backing off."""
        if self.failures == 0:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("replayer started for node %s -> %s", self.config.node, self.config.url)
        while not self._stopping:
            # Cleared before the step, so a payment committed during it wakes the next wait.
            self._wake.clear()
            try:
                result = await self.step()
            except asyncio.CancelledError:
                raise
            except outbox.StorageError as exc:
                # A full disk: expected, shown on the status page; no traceback every retry.
                log.warning("replayer cannot record verdicts: %s", exc)
                self.failures += 1
                result = StepResult(
                    error=f"storage: {exc}", retry_in_s=self.config.policy.delay(self.failures)
                )
            except Exception as exc:  # a loop never dies silently
                log.exception("replayer step failed unexpectedly")
                self.failures += 1
                result = StepResult(
                    error=f"internal: {exc}", retry_in_s=self.config.policy.delay(self.failures)
                )
            if result.error is not None:
                await self._wait(result.retry_in_s)
            elif result.idle:
                await self._wait(None)
            # A full batch means more is waiting: loop straight on.
        log.info("replayer stopped")

    async def _wait(self, seconds: float | None) -> None:
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def drain(self, deadline_s: float) -> bool:
        """Bounded final replay: send until nothing is pending, a failure, or the deadline."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                result = await asyncio.wait_for(self.step(), max(0.1, end - time.monotonic()))
            except TimeoutError:
                return False
            except Exception:
                # E.g. the disk is full and the verdicts cannot be stored: the entries stay
                # pending and go again after the restart; the stop itself must stay clean.
                log.exception("final replay step failed; the rest waits for the next start")
                return False
            if result.error is not None:
                return False
            if result.idle:
                return True
        return False

    # --- one batch ---------------------------------------------------------------------

    async def step(self) -> StepResult:
        entries = await self.writer.submit(lambda c: outbox.claim(c, self.config.batch_size))
        if not entries:
            return StepResult()
        body = protocol.encode_batch(self.config.node, entries)
        headers = signing.sign(
            self.config.secret, self.config.node, "POST", self.path, body,
            int(self.link.corrected_time()),
        )  # fmt: skip
        headers["Content-Type"] = protocol.CONTENT_TYPE
        try:
            async with self.session.post(
                # BytesIO: aiohttp warns about (and copies) raw bytes bodies over 1 MiB.
                self.config.url + self.path,
                data=io.BytesIO(body),
                headers=headers,
            ) as resp:
                raw = await resp.read()
                status, date = resp.status, resp.headers.get("Date")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return await self._failed(entries, f"transport: {type(exc).__name__}: {exc}", None)
        if status >= 500:
            return await self._failed(entries, f"centre answered {status}", date)
        if status != 200:
            code, detail = protocol.decode_error(raw)
            if status == 401 and code == "stale_timestamp":
                # Our clock is off; this answer's Date header corrects the skew: retry soon.
                return await self._failed(entries, f"{status} {code}: {detail}", date, delay=1.0)
            return await self._failed(
                entries, f"{status} {code}: {detail}", date, config_fault=True
            )
        try:
            reply = protocol.decode_reply(raw)
        except ProtocolError as exc:
            return await self._failed(entries, f"bad reply from centre: {exc}", date)
        crashpoints.reached("before_settle")
        return await self._settle(entries, reply, date)

    async def _settle(
        self, entries: list[outbox.Entry], reply: protocol.Reply, date: str | None
    ) -> StepResult:
        sent = {(e.seq, e.id) for e in entries}
        results = [
            outbox.Result(v.seq, v.id, v.verdict, v.reason, v.version)
            for v in reply.results
            if (v.seq, v.id) in sent
        ]
        now = self.clock()
        await self.writer.submit(lambda c: outbox.settle(c, results, now=now))
        self.failures = 0
        self.link.ok(date)
        counts: dict[str, int] = {}
        for r in results:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
            if r.verdict == "rejected":
                log.warning(
                    "centre rejected entry %s (seq %d): %s; an operator must resolve it",
                    r.id,
                    r.seq,
                    r.reason,
                )
        if len(results) < len(entries):
            log.warning(
                "centre answered %d of %d entries; the rest stay pending",
                len(results),
                len(entries),
            )
        result = StepResult(sent=len(entries), verdicts=counts)
        self._report(result)
        return result

    async def _failed(
        self,
        entries: list[outbox.Entry],
        error: str,
        date: str | None,
        *,
        config_fault: bool = False,
        delay: float | None = None,
    ) -> StepResult:
        self.failures += 1
        if delay is None:
            delay = (
                self.config.config_fault_retry_s
                if config_fault
                else self.config.policy.delay(self.failures)
            )
        if config_fault:
            log.error("centre refused a batch (configuration fault, nothing dropped): %s", error)
        else:
            log.warning(
                "replay failed (attempt %d), next try in %.1f s: %s", self.failures, delay, error
            )
        self.link.failed(error, config_fault=config_fault, server_date=date)
        seqs = [e.seq for e in entries]
        now = self.clock()

        def record(conn: sqlite3.Connection) -> float:
            return outbox.record_failure(
                conn, seqs, error, self.config.policy, now=now, delay=delay
            )

        await self.writer.submit(record)
        result = StepResult(
            sent=len(entries), error=error, config_fault=config_fault, retry_in_s=delay
        )
        self._report(result)
        return result

    def _report(self, result: StepResult) -> None:
        if self.on_result is not None:
            self.on_result(result)
