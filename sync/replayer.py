"""The replayer: drains the outbox to the centre in seq order, in signed batches.

A `sync.loop.Loop`: one `step()` sends one batch (retried by tenacity on transport errors
and 5xx, claimed and signed afresh each attempt) and settles its verdicts only once the
answer's signature verified (else BadAnswer: nothing settled). A 4xx other than
`stale_timestamp` is a configuration fault: logged loudly, retried slowly, nothing dropped. Any answer from the centre ends the backoff. `drain()` is the bounded final replay.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

import outbox
from outbox import crashpoints
from sync import answers, protocol, signing, tls
from sync.errors import BadAnswer, CentreRefused, CentreUnavailable, ProtocolError, SyncError
from sync.link import Link
from sync.loop import ATTEMPTS_PER_STEP, Loop, Sleep

log = logging.getLogger(__name__)
STALE_RETRY_S = 1.0
# Run in the very write job that settles a batch, with its verdicts: the node records what
# it must keep beside the outbox (the credit a verdict names) atomically with the settle.
Settled = Callable[
    [sqlite3.Connection, list[protocol.Verdict]], None
]  # a stale timestamp is corrected by that very answer's Date header


def results_of(verdicts: list[protocol.Verdict]) -> list[outbox.Result]:
    return [outbox.Result(v.seq, v.id, v.verdict, v.reason, v.version) for v in verdicts]


def settle_job(
    verdicts: list[protocol.Verdict], now: float, settled: Settled | None
) -> Callable[[sqlite3.Connection], int]:
    """The write job that settles verdicts (the replayer's, and a verdicts file's: they settle
    alike); it returns how many entries changed state."""
    results = results_of(verdicts)

    def settle(conn: sqlite3.Connection) -> int:
        changed = outbox.settle(conn, results, now=now)
        if settled is not None:
            settled(conn, verdicts)
        return changed

    return settle


@dataclass(frozen=True)
class ReplayConfig:
    node: str
    url: str  # the centre's base URL, e.g. http://127.0.0.1:9090
    secret: bytes
    batch_size: int = 500
    policy: outbox.RetryPolicy = field(default_factory=outbox.RetryPolicy)
    config_fault_retry_s: float = 300.0
    attempts_per_step: int = ATTEMPTS_PER_STEP


@dataclass(frozen=True)
class StepResult:
    """What one attempt did: `sent` entries, `settled` by verdict, or the `error` that stopped it."""

    sent: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    config_fault: bool = False
    retry_in_s: float = 0.0

    @property
    def idle(self) -> bool:
        return self.sent == 0 and self.error is None


class Replayer(Loop[StepResult]):
    """`step()` returns what a batch did, or raises once its attempts failed; `on_result`
    hears every attempt (a failed one too)."""

    expected = (SyncError, outbox.StorageError)

    def __init__(
        self,
        config: ReplayConfig,
        writer: outbox.Writer,
        session: aiohttp.ClientSession,
        link: Link,
        *,
        clock: Callable[[], float] = time.time,
        on_result: Callable[[StepResult], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        secret: Callable[[], bytes] | None = None,
        settled: Settled | None = None,
    ) -> None:
        super().__init__("replay", policy=config.policy, sleep=sleep,
                         attempts=config.attempts_per_step, logger=log)  # fmt: skip
        self.config = config
        self.writer = writer
        self.session = session
        self.link = link
        self.clock = clock
        self.monotonic = monotonic
        self.on_result = on_result
        self.path = f"/v1/nodes/{config.node}/outbox"
        # The key to sign with now: a SecretFile follows a rotation without a restart.
        self.secret: Callable[[], bytes] = secret or (lambda: config.secret)
        self._woken_by_payment_at: float | None = None
        self.settled = settled
        link.on_ok(self.resume)

    # --- control -----------------------------------------------------------------------

    def trigger(self) -> None:
        """Replay now (the operator's "replay now"), whatever the backoff or a refusal."""
        self.reset_backoff()
        self.wake()

    def notify(self) -> None:
        """A new entry was committed: send it now.

        While backing off, a payment wakes the replayer at most once per `policy.base_s`,
        and not at all while the link is down or the centre refuses us: then a storm of
        payments costs the centre nothing, and the link's recovery (`Link.ok`, from any
        loop) is what wakes the replayer. The failure count is kept: a wake that fails
        costs one attempt and the backoff goes on at the length it had.
        """
        if self.failures == 0:
            self.wake()
            return
        if self.holding or self.link.state == "down":
            return
        now = self.monotonic()
        last = self._woken_by_payment_at
        if last is None or now - last >= self.config.policy.base_s:
            self._woken_by_payment_at = now
            self.wake()

    async def run(self) -> None:
        log.info("replayer started for node %s -> %s", self.config.node, self.config.url)
        await super().run()

    def pace(self, result: StepResult) -> float | None:
        # A batch went: more may be waiting, go straight on; nothing pending: until woken.
        return None if result.idle else 0.0

    def failed(self, exc: Exception) -> float:
        self.holding = isinstance(exc, CentreRefused) and exc.config_fault
        if self.holding:
            return self.config.config_fault_retry_s
        if isinstance(exc, CentreRefused) and exc.stale:
            return STALE_RETRY_S
        return super().failed(exc)

    def severity(self, exc: Exception) -> int:
        refused = isinstance(exc, CentreRefused) and exc.config_fault
        return logging.ERROR if refused or isinstance(exc, BadAnswer) else logging.WARNING

    async def drain(self, deadline_s: float) -> bool:
        """Bounded final replay: send until nothing is pending, a failure, or the deadline.

        Meant after `stop()`: then a failed attempt is not retried within the step.
        """
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                result = await asyncio.wait_for(self.step(), max(0.1, end - time.monotonic()))
            except TimeoutError:
                return False
            except Exception as exc:
                # E.g. the centre is down or the disk is full: the entries stay pending and
                # go after the restart; the stop itself must stay clean.
                self.failure(exc)
                return False
            self.succeeded()
            if result.idle:
                return True
        return False

    # --- one batch ---------------------------------------------------------------------

    async def step(self) -> StepResult:
        return await self.retried(self._attempt, (CentreUnavailable,))

    async def _attempt(self) -> StepResult:
        # Claimed again on each attempt: a retry also carries what was paid meanwhile.
        entries = await self.writer.submit(lambda c: outbox.claim(c, self.config.batch_size))
        if not entries:
            return StepResult()
        body = protocol.encode_batch(self.config.node, entries)
        reply, date = await self._post(entries, body)
        crashpoints.reached("before_settle")
        return await self._settle(entries, reply, date)

    async def _post(
        self, entries: list[outbox.Entry], body: bytes
    ) -> tuple[protocol.Reply, str | None]:
        """One attempt: a fresh request signed with the time now (the centre dedups entries,
        so sending a batch again is safe); a failure is recorded, then raised."""
        secret = self.secret()
        headers = signing.sign(
            secret, self.config.node, "POST", self.path, body,
            int(self.link.corrected_time()),
        )  # fmt: skip
        request_signature = headers[signing.SIGNATURE_HEADER]
        headers["Content-Type"] = protocol.CONTENT_TYPE
        try:
            async with self.session.post(
                # BytesIO: aiohttp warns about (and copies) raw bytes bodies over 1 MiB.
                self.config.url + self.path,
                data=io.BytesIO(body),
                headers=headers,
                allow_redirects=False,  # only the configured centre ever sees a signed request
            ) as resp:
                raw = await resp.read()
                status, date = resp.status, resp.headers.get("Date")
                answer = dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            lost = tls.transport_failure(exc, self.config.url)
            raise await self._failed(entries, lost, None) from exc
        if status >= 500:
            # Acted on only as "try again later" (a proxy's 502 is unsigned): its Date is not.
            raise await self._failed(entries, CentreUnavailable(f"centre answered {status}"), None)
        try:
            answers.check_answer(secret, request_signature, status, answer, raw)
        except BadAnswer as exc:
            failure = answers.unsigned_refusal(status, raw, exc)
            raise await self._failed(entries, failure, None) from exc
        if status != 200:
            code, detail = protocol.decode_error(raw)
            raise await self._failed(entries, CentreRefused(status, code, detail), date)
        try:
            reply = protocol.decode_reply(raw)
        except ProtocolError as exc:
            bad = ProtocolError(f"bad reply from centre: {exc}")
            raise await self._failed(entries, bad, date) from exc
        return reply, date

    async def _settle(
        self, entries: list[outbox.Entry], reply: protocol.Reply, date: str | None
    ) -> StepResult:
        sent = {(e.seq, e.id) for e in entries}
        verdicts = [v for v in reply.results if (v.seq, v.id) in sent]
        results = results_of(verdicts)
        await self.writer.submit(settle_job(verdicts, self.clock(), self.settled))
        # Reset first: the link's listeners include this loop's own `resume`.
        self.reset_backoff()
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
        self, entries: list[outbox.Entry], exc: SyncError, date: str | None
    ) -> SyncError:
        """Count, log and record a failed attempt (the durable schedule gets the very wait the
        loop or tenacity will make); return `exc` for the caller to raise."""
        delay = self.failure(exc)
        error = str(exc)
        config_fault = isinstance(exc, CentreRefused) and exc.config_fault
        untrusted = isinstance(exc, BadAnswer | ProtocolError)
        self.link.failed(
            error, code=exc.code, config_fault=config_fault, server_date=date, answered=untrusted
        )
        seqs = [e.seq for e in entries]
        now = self.clock()

        def record(conn: sqlite3.Connection) -> float:
            return outbox.record_failure(
                conn, seqs, error, self.config.policy, now=now, delay=delay
            )

        await self.writer.submit(record)
        self._report(
            StepResult(sent=len(entries), error=error, config_fault=config_fault, retry_in_s=delay)
        )
        return exc

    def _report(self, result: StepResult) -> None:
        if self.on_result is not None:
            self.on_result(result)
