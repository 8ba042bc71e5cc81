"""Delivering alert events (edge.alerts) to people: a program run like upsmon's NOTIFYCMD and/or
a webhook, each behind a bounded queue drained by its own loop, after a per-group rate limit.

Not `edge.ops.notify`, which speaks systemd's sd_notify protocol. Nothing here blocks the
node: `Notifier.emit` only queues, a full queue drops its oldest event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace

import aiohttp

import outbox
from edge.alerts import INFO, KINDS, Event
from edge.config import Settings
from edge.errors import EdgeError
from sync import tls
from sync.loop import Loop

log = logging.getLogger(__name__)

QUEUE = 64  # events waiting per sink; an outage's worth of distinct kinds, many times over
# A webhook that fails is retried within its step (tenacity), with this backoff between
# attempts and between events while it keeps failing.
WEBHOOK_RETRY = outbox.RetryPolicy(base_s=1.0, cap_s=60.0)
SENT, FAILED, DROPPED = "sent", "failed", "dropped"
OnResult = Callable[[str, str], None]  # (sink, result)


class NotifyError(EdgeError):
    """A sink could not deliver an event (the message names no secret: no URL path)."""


class Unreachable(NotifyError):
    """A webhook that may answer on the next try (connection refused, timeout, 5xx)."""


def _ignore(sink: str, result: str) -> None:
    pass


class Sink(Loop[bool]):
    """A bounded queue of events and the loop that delivers them one per step."""

    def __init__(
        self, name: str, settings: Settings, on_result: OnResult, *, attempts: int = 1,
        policy: outbox.RetryPolicy | None = None,
    ) -> None:  # fmt: skip
        super().__init__(f"notify-{name}", logger=log, attempts=attempts, policy=policy)
        self.sink, self.settings, self.on_result = name, settings, on_result
        self.queue: collections.deque[Event] = collections.deque()
        self.dropped = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def offer(self, event: Event) -> None:
        if len(self.queue) >= QUEUE:
            self.queue.popleft()
            self.dropped += 1
            self.on_result(self.sink, DROPPED)
            if self.dropped == 1:  # once until a delivery succeeds again
                log.warning("%s: queue full (%d events), dropping the oldest", self.name, QUEUE)
        self.queue.append(event)
        self.idle.clear()
        self.wake()

    async def step(self) -> bool:
        if not self.queue:
            self.idle.set()
            return False
        event = self.queue.popleft()
        # Each event gets its own tries and backoff: one that failed an hour ago does not
        # make the next one wait longer (a dead sink is one log line either way).
        self.reset_backoff()
        try:
            await self.deliver(json.dumps(event.body(self.settings), ensure_ascii=False).encode(),
                               event)  # fmt: skip
        except BaseException:
            self.on_result(self.sink, FAILED)
            raise
        finally:
            if not self.queue:
                self.idle.set()  # a failed event is dropped too: nothing is left to send
        self.on_result(self.sink, SENT)
        self.dropped = 0
        return True

    def pace(self, result: bool) -> float | None:
        if self.queue:
            return 0.0
        self.idle.set()
        return None  # until offer() wakes it

    async def deliver(self, body: bytes, event: Event) -> None:
        raise NotImplementedError

    async def open(self) -> None:
        """Resources the sink needs (in the running loop)."""

    async def close(self) -> None:
        pass


class ExecSink(Sink):
    """`notify.exec`, one run per event: the JSON on stdin, NOTIFYTYPE and friends in its
    environment (nothing in argv, which every user of the machine can read), killed with its
    whole process group after `notify.timeout_s`. Its stderr goes to the node's (the journal)."""

    def __init__(self, settings: Settings, on_result: OnResult) -> None:
        # One try per event: a program that hangs must not hang three times.
        super().__init__("exec", settings, on_result)

    def failed(self, exc: Exception) -> float:
        return 0.0  # the next event is a fresh run; nothing to back off from

    def environment(self, event: Event) -> dict[str, str]:
        s, kind = self.settings, KINDS[event.kind]
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
            "NOTIFYTYPE": kind.notifytype, "EDGE_EVENT": event.kind,
            "EDGE_SEVERITY": kind.severity, "EDGE_NODE": s.node_id,
            "EDGE_GOVERNORATE": s.node_governorate, "EDGE_TEXT_AR": event.text_ar,
            "EDGE_TEXT_EN": event.text_en,
        }  # fmt: skip
        if kind.group in ("power", "low_battery"):
            env["UPSNAME"] = f"{s.ups_name}@{s.ups_host}"
        return env

    async def deliver(self, body: bytes, event: Event) -> None:
        path, timeout = self.settings.notify_exec, self.settings.notify_timeout_s
        try:
            proc = await asyncio.create_subprocess_exec(
                path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                env=self.environment(event), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise NotifyError(f"cannot run notify.exec {path}: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(timeout):
                await proc.communicate(body)
        except TimeoutError:
            raise NotifyError(f"notify.exec {path} ran over {timeout:g} s and was killed") from None
        finally:
            if proc.returncode is None:  # overran, or the node stops: it goes too
                await _kill(proc)
        if proc.returncode != 0:
            raise NotifyError(f"notify.exec {path} exited with status {proc.returncode}")


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the running program and whatever it started (its own session, so its group's
    id is its pid, which cannot be reused while it is unreaped), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


class WebhookSink(Sink):
    """`notify.webhook_url`: the JSON POSTed, a 2xx is success; a redirect is refused (it could
    send the alert elsewhere); connection failures, timeouts and 5xx are retried by tenacity."""

    def __init__(self, settings: Settings, on_result: OnResult) -> None:
        super().__init__("webhook", settings, on_result, attempts=3, policy=WEBHOOK_RETRY)
        self.url = settings.notify_webhook_url
        self.origin = tls.origin(self.url)  # what may be logged: a URL's path can be its secret
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        context = None
        if self.url.startswith("https://"):
            context = tls.client_context(self.settings.notify_ca_file or None, None, None)
        elif tls.insecure(self.url):
            log.warning("notify.webhook_url is plain http to %s: alerts cross the network in"
                        " clear", self.origin)  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=self.settings.notify_timeout_s)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context if context is not None else True),
            timeout=timeout,
            headers={"User-Agent": "edge-notifier"},
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def deliver(self, body: bytes, event: Event) -> None:
        await self.retried(lambda: self._post(body), (Unreachable,))

    async def _post(self, body: bytes) -> None:
        assert self.session is not None, "open() first"
        headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self.session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
        except TimeoutError:
            raise Unreachable(f"webhook {self.origin}: no answer within "
                              f"{self.settings.notify_timeout_s:g} s") from None  # fmt: skip
        except aiohttp.ClientSSLError as exc:
            # No retry cures a certificate the CA did not issue (or https to plain http).
            raise NotifyError(f"webhook {self.origin}: TLS: {exc}") from None
        except aiohttp.ClientError as exc:
            # Some aiohttp errors quote the whole URL: only its origin is kept.
            why = str(exc).replace(self.url, self.origin)
            raise Unreachable(f"webhook {self.origin}: {type(exc).__name__}: {why}") from None
        if 300 <= status < 400:
            raise NotifyError(f"webhook {self.origin} answered {status}: redirects are refused")
        if status >= 500 or status == 429:
            raise Unreachable(f"webhook {self.origin} answered {status}")
        if status >= 400:
            raise NotifyError(f"webhook {self.origin} answered {status}")


class Notifier:
    """`emit(event)`: rate limited per kind's group (`notify.min_interval_s`), then queued to
    every sink. An event held back by the limit is not lost: the latest of its group goes out
    once the interval has passed (`release()`), counting those it stands for."""

    def __init__(
        self, settings: Settings, *, monotonic: Callable[[], float] = time.monotonic,
        on_result: OnResult = _ignore,
    ) -> None:  # fmt: skip
        self.settings, self.monotonic = settings, monotonic
        self.sinks: list[Sink] = []
        if settings.notify_exec:
            self.sinks.append(ExecSink(settings, on_result))
        if settings.notify_webhook_url:
            self.sinks.append(WebhookSink(settings, on_result))
        self._last: dict[str, float] = {}
        self._held: dict[str, Event] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def emit(self, event: Event) -> bool:
        """Queue `event` now (True) or hold it back for its group's interval (False)."""
        group, now = KINDS[event.kind].group, self.monotonic()
        last = self._last.get(group)
        if last is not None and now - last < self.settings.notify_min_interval_s:
            self._held[group] = event  # the latest stands for the group's earlier ones
            self._suppressed[group] += 1
            log.debug("alert %s held back: one per %g s", event.kind,
                      self.settings.notify_min_interval_s)  # fmt: skip
            return False
        self._held.pop(group, None)  # superseded by this newer one
        self._send(group, event, now, self._suppressed.pop(group, 0))
        return True

    def release(self) -> None:
        """Send each held event whose group's interval has passed."""
        now = self.monotonic()
        for group, event in list(self._held.items()):
            if now - self._last[group] >= self.settings.notify_min_interval_s:
                del self._held[group]
                # It was counted as held itself: it stands for the others.
                self._send(group, event, now, self._suppressed.pop(group, 1) - 1)

    def _send(self, group: str, event: Event, now: float, suppressed: int) -> None:
        self._last[group] = now
        event = replace(event, suppressed=suppressed)
        level = logging.INFO if event.severity == INFO else logging.WARNING
        log.log(level, "alert %s (%s): %s", event.kind, event.severity, event.text_en)
        for sink in self.sinks:
            sink.offer(event)

    async def drain(self, seconds: float) -> bool:
        """Wait (bounded) until every sink's queue is empty; False if time ran out."""
        try:
            async with asyncio.timeout(seconds):
                await asyncio.gather(*(sink.idle.wait() for sink in self.sinks))
        except TimeoutError:
            return False
        return True
