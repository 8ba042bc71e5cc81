"""Limits on slow and crowded clients: request deadlines, idle keep-alive, connections per address.

aiohttp bounds idle keep-alive but gives a request all the time it likes to arrive: `Guard`
wraps each connection's protocol and cuts one whose head or body is late, `GuardedSite`
refuses connections beyond a per-address cap at accept, and parser errors log one short line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from edge.config import Settings

log = logging.getLogger(__name__)
# The logger aiohttp's protocol reports bad requests on (its `logger` argument), so that the
# filter below applies to this node's connections only, not to every aiohttp server.
PROTOCOL_LOG = logging.getLogger(f"{__name__}.protocol")
REPORT_EVERY_S = 60.0
MAX_DETAIL = 200


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float
    max_connections_per_address: int

    @classmethod
    def of(cls, s: Settings) -> Limits:
        return cls(
            s.http_header_timeout_s,
            s.http_body_timeout_s,
            s.http_keepalive_timeout_s,
            s.http_max_connections_per_address,
        )


class Reporter:
    """One log line per client address and kind per `every_s`, counting the ones held back."""

    def __init__(
        self, every_s: float = REPORT_EVERY_S, clock: Callable[[], float] = time.monotonic
    ):
        self.every_s = every_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def due(self, address: str, kind: str) -> int | None:
        """None: stay quiet; else log now, saying how many were held back since the last line."""
        key, now = (address, kind), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) > 10_000:  # many addresses: forget the old ones, not the memory
            self._last = {k: t for k, t in self._last.items() if now - t < self.every_s}
            self._held = {k: n for k, n in self._held.items() if k in self._last}
        self._last[key] = now
        return self._held.pop(key, 0)


def one_line(text: object, limit: int = MAX_DETAIL) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ParserErrors(logging.Filter):
    """aiohttp logs a request it cannot parse with a traceback quoting the request (~60 KB):
    keep one truncated line per address a minute instead. The client still gets its 400."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        address = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        held = self.reporter.due(address, "parse")
        if held is None:
            return False
        record.msg = "bad HTTP request from %s: %s: %s%s"
        more = f" ({held} more from this address since the last line)" if held else ""
        record.args = (address, type(exc).__name__, one_line(exc.message), more)
        record.exc_info = record.exc_text = None
        record.stack_info = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_parser_filter() -> ParserErrors:
    """A fresh filter (fresh counts) on PROTOCOL_LOG, replacing any earlier one."""
    for old in [f for f in PROTOCOL_LOG.filters if isinstance(f, ParserErrors)]:
        PROTOCOL_LOG.removeFilter(old)
    made = ParserErrors(Reporter())
    PROTOCOL_LOG.addFilter(made)
    return made


class Guard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection and enforces the request deadlines.

    The head deadline runs from the connection's start, or from the first byte of a
    following request; the body deadline from the end of the head. `deadlines` (a
    middleware) tells the guard when a request's head is complete and when it is handled.
    """

    def __init__(self, inner: asyncio.Protocol, site: GuardedSite) -> None:
        self.inner = inner
        self.site = site
        self.address = ""
        self._transport: asyncio.Transport | None = None
        self._head: asyncio.TimerHandle | None = None
        self._body: asyncio.TimerHandle | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport: uvloop's
        # (http.loop = "uvloop") implement its methods without deriving from it.
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.site.admit(self.address):
            transport.abort()  # at accept: nothing is read, nothing is answered
            return
        self._transport = transport
        self._head = self._arm(self.site.limits.header_timeout_s, self._head_late)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        if not self._busy and self._head is None and data:
            self._head = self._arm(self.site.limits.header_timeout_s, self._head_late)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._transport is None else self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._transport is None:
            return  # refused: the site never counted it
        self._transport = None
        self.site.release(self.address)
        self.inner.connection_lost(exc)

    # --- told by the middleware ------------------------------------------------------

    def request_started(self, request: web.BaseRequest) -> None:
        self._busy = True
        if self._head is not None:
            self._head.cancel()
            self._head = None
        if self._body is not None:
            self._body.cancel()
        self._body = None
        if not request.content.is_eof():
            self._body = self._arm(
                self.site.limits.body_timeout_s, lambda: self._body_late(request)
            )

    def request_finished(self, request: web.BaseRequest) -> None:
        self._busy = False
        # An unread body keeps its deadline: aiohttp reads and drops it after the answer.
        if self._body is not None and request.content.is_eof():
            self._body.cancel()
            self._body = None

    # --- deadlines ---------------------------------------------------------------------

    def _arm(self, delay: float, fire: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, fire)

    def _cancel_timers(self) -> None:
        for timer in (self._head, self._body):
            if timer is not None:
                timer.cancel()
        self._head = self._body = None

    def _head_late(self) -> None:
        self._head = None
        self._cut("head", self.site.limits.header_timeout_s)

    def _body_late(self, request: web.BaseRequest) -> None:
        self._body = None
        if not request.content.is_eof():
            self._cut("body", self.site.limits.body_timeout_s)

    def _cut(self, part: str, after_s: float) -> None:
        if self._transport is None:
            return
        held = self.site.reporter.due(self.address, part)
        if held is not None:
            more = f" ({held} more since the last line)" if held else ""
            log.warning("closed a connection from %s: no complete request %s within %.1f s%s",
                        self.address, part, after_s, more)  # fmt: skip
        self._transport.abort()


@web.middleware
async def deadlines(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: the head is complete once a handler runs."""
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    if not isinstance(guard, Guard):
        return await handler(request)  # served by a plain aiohttp site (no deadlines)
    guard.request_started(request)
    try:
        return await handler(request)
    finally:
        guard.request_finished(request)


class GuardedSite(web.TCPSite):
    """A TCP site whose connections run through a `Guard`, capped per client address."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: Limits,
        *,
        ssl_context: SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, **kwargs)
        self.limits = limits
        self.reporter = Reporter()
        self.per_address: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        count = self.per_address.get(address, 0)
        if count >= self.limits.max_connections_per_address:
            held = self.reporter.due(address, "crowd")
            if held is not None:
                more = f" ({held} more refused since the last line)" if held else ""
                log.warning("refused a connection from %s: it has %d open already%s",
                            address, count, more)  # fmt: skip
            return False
        self.per_address[address] = count + 1
        return True

    def release(self, address: str) -> None:
        left = self.per_address.get(address, 1) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would bind too
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Guard(server(), self),
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.limits.header_timeout_s if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
