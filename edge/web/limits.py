"""Rate limits at the node's door (DESIGN 5.7): buckets per token and per client address, and
the backoff of addresses that keep failing to authenticate. Over a limit: 429 `rate_limited`
with an integer Retry-After, before anything is read or written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn

from aiohttp import web
from aiohttp.typedefs import Handler

from edge import errors
from edge.config import Settings
from edge.node import NODE
from edge.ratelimit import REPORT_S, AuthBackoff, Buckets, Rate, Report, retry_after
from sync.loop import Loop

log = logging.getLogger(__name__)
KINDS = ("inquiry", "payment", "address", "auth")
# Never counted per address: a probe answered 429 could make a supervisor restart a node that
# is fine, and these two answer from memory (no database, no data).
UNCOUNTED = frozenset({"/healthz", "/readyz"})
SWEEP_S = 1.0
# Refusals held at once; beyond that they are answered at once (a coroutine and a timer each).
MAX_HELD = 512
MAX_REPORT_LINES = 20  # per minute; more addresses than that are summed into one line
BUCKET_SWEEP_S = 60.0


def address_of(request: web.Request) -> str:
    # The TCP peer, never X-Forwarded-For: the node serves the LAN directly and a header is
    # whatever the client wants it to be.
    return request.remote or "unknown"


class Limiter:
    """Every limit of one node, made once from its settings; `clock` is monotonic seconds."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_limited: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_held: int = MAX_HELD,
    ) -> None:
        s = settings
        self.hold_s = s.limits_hold_s
        self.max_held = max_held
        self.held = 0
        self._sleep = sleep
        self.inquiries = Buckets(Rate(s.limits_inquiries_per_s, s.limits_inquiry_burst))
        self.payments = Buckets(Rate(s.limits_payments_per_s, s.limits_payment_burst))
        self.addresses = Buckets(Rate(s.limits_per_address_per_s, s.limits_per_address_burst))
        self.backoff = AuthBackoff(s.limits_auth_failures, s.limits_auth_block_max_s)
        self.clock = clock
        self.on_limited = on_limited
        self._budget_start = clock()
        self._lines = 0
        self._unlogged: list[Report] = []
        self._buckets_swept = clock()

    def _refuse(self, kind: str, wait_s: float, detail: str) -> NoReturn:
        if self.on_limited is not None:
            self.on_limited(kind)
        seconds = retry_after(wait_s)
        raise errors.RateLimited(
            f"{detail}; retry after {seconds} s", headers={"Retry-After": str(seconds)}
        )

    def check_address(self, address: str) -> None:
        wait = self.addresses.take(address, self.clock())
        if wait:
            self._refuse("address", wait, "too many requests from this address")

    def check_auth(self, address: str) -> None:
        """Refuse any attempt to authenticate from an address that is backing off."""
        wait = self.backoff.blocked(address, self.clock())
        if wait:
            self._refuse("auth", wait, "too many failed authentications from this address")

    def failed_auth(self, address: str) -> None:
        self.backoff.failed(address, self.clock())

    def charge(self, client: str, scope: str) -> None:
        """One request of an authenticated client: payments and the rest have their own
        buckets, so a flood of inquiries on a token cannot starve its payments."""
        if scope == "pay":
            wait = self.payments.take(client, self.clock())
            if wait:
                self._refuse("payment", wait, "too many payments on this token")
        else:
            wait = self.inquiries.take(client, self.clock())
            if wait:
                self._refuse("inquiry", wait, "too many inquiries on this token")

    async def hold(self) -> None:
        """Answer a refusal `hold_s` late (at most `max_held` at once). A client waits for its
        answer before it sends again, so a flood on one connection runs at 1/hold_s requests
        a second, not at the node's speed, and the node's CPU stays with the payments."""
        if self.hold_s <= 0 or self.held >= self.max_held:
            return
        self.held += 1
        try:
            await self._sleep(self.hold_s)
        finally:
            self.held -= 1

    def sweep(self) -> None:
        """Log the closed report windows (within a line budget) and drop idle entries."""
        now = self.clock()
        if now - self._budget_start >= REPORT_S:
            self._flush_unlogged()
            self._budget_start, self._lines = now, 0
        for report in self.backoff.sweep(now):
            if self._lines < MAX_REPORT_LINES:
                self._lines += 1
                log.warning(
                    "%d failed authentications from %s in the last minute"
                    " (%d more attempts refused while it backs off)",
                    report.failures, report.address, report.refused,
                )  # fmt: skip
            else:
                self._unlogged.append(report)
        if now - self._buckets_swept >= BUCKET_SWEEP_S:
            self._buckets_swept = now
            for table in (self.inquiries, self.payments, self.addresses):
                table.sweep(now)

    def _flush_unlogged(self) -> None:
        if self._unlogged:
            log.warning(
                "%d failed authentications from %d more addresses in the last minute"
                " (%d more attempts refused while they back off)",
                sum(r.failures for r in self._unlogged), len(self._unlogged),
                sum(r.refused for r in self._unlogged),
            )  # fmt: skip
            self._unlogged = []


LIMITER = web.AppKey("limiter", Limiter)


@web.middleware
async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The per-address bucket, for every request but the health probes, and the hold of every
    refusal (this one's or the handler's); inside `problems`, which renders the 429."""
    limiter = request.app[LIMITER]
    try:
        if request.path not in UNCOUNTED:
            limiter.check_address(address_of(request))
        return await handler(request)
    except errors.RateLimited:
        await limiter.hold()
        raise


class Sweeper(Loop[None]):
    """Once a second: the failed-authentication log lines and the sweep of idle buckets."""

    def __init__(self, limiter: Limiter) -> None:
        super().__init__("limits-sweep")
        self.limiter = limiter

    async def step(self) -> None:
        self.limiter.sweep()

    def pace(self, result: None) -> float:
        return SWEEP_S


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    node, sweeper = app[NODE], Sweeper(app[LIMITER])
    node.tasks.start("limits-sweep", sweeper.run)
    try:
        yield
    finally:
        sweeper.stop()
        await node.tasks.stop("limits-sweep", cancel=False)
