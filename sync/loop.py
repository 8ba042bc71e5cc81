"""One shape for every background loop: a step, then a wait that `wake()` or `stop()` cuts short.

Failures are counted and logged once per change; retries within a step go through tenacity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

import outbox

log = logging.getLogger(__name__)
R = TypeVar("R")
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
ATTEMPTS_PER_STEP = 3


class Stopped(Exception):
    """The loop was stopped during a retry wait: the step ends without another attempt."""


class _stop_when_set(stop_base):
    # tenacity's own stop_when_event_set is typed for threading.Event.
    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


class Loop(Generic[R]):
    """A background loop: subclasses give `step()` and `pace()`; `run()` repeats them.

    `step()` does one unit of work and returns its result, or raises. `pace(result)` is the
    wait before the next step (None: until woken). A step that raises is counted in
    `failures`, and `failed(exc)` gives the wait (the policy's backoff unless overridden).
    CancelledError propagates; no other exception ends `run()`.
    """

    #: Failures logged with their message only; any other type gets its traceback, once.
    expected: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        name: str,
        *,
        policy: outbox.RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        attempts: int = ATTEMPTS_PER_STEP,
        logger: logging.Logger | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("a step needs at least one attempt")
        self.name = name
        self.policy = policy or outbox.RetryPolicy()
        self.attempts = attempts
        self.log = logger or log
        self.failures = 0  # consecutive failed steps or attempts: the backoff's exponent
        # The last failure is one that contact with the centre does not cure (a refusal).
        self.holding = False
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._failing: tuple[str, str] | None = None  # the failure last logged
        self._streak = 0  # failures since the last success, for the recovery line
        self._counted: BaseException | None = None
        self._counted_delay = 0.0

    # --- what a subclass gives -----------------------------------------------------------

    async def step(self) -> R:
        raise NotImplementedError

    def pace(self, result: R) -> float | None:
        raise NotImplementedError

    def failed(self, exc: Exception) -> float:
        """The wait after a failure (`failures` already counts it): the policy's backoff."""
        return self.policy.delay(self.failures)

    def severity(self, exc: Exception) -> int:
        return logging.WARNING

    # --- control ---------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def woken(self) -> bool:
        """A wake is pending: the current or next wait ends at once."""
        return self._wake.is_set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """End the loop: a wait ends now, no retry starts; a request in flight may finish."""
        self._stop.set()
        self._wake.set()

    def reset_backoff(self) -> None:
        self.failures = 0
        self.holding = False

    def resume(self) -> None:
        """The centre answered (this loop or another): end a backoff now, unless holding."""
        if self.failures and not self.holding:
            self.failures = 0
            self.wake()

    async def run(self) -> None:
        self.log.info("%s loop started", self.name)
        while not self._stop.is_set():
            # Cleared before the step, so a wake during it (a payment) cuts the next wait.
            self._wake.clear()
            self._counted = None
            try:
                result = await self.step()
                self.succeeded()
                delay = self.pace(result)
            except Stopped:
                break
            except Exception as exc:  # a loop never dies silently
                delay = self.failure(exc)
            await self.pause(delay)
        self.log.info("%s loop stopped", self.name)

    async def pause(self, seconds: float | None) -> bool:
        """Wait `seconds` (None: until woken); `wake()` and `stop()` end it. True if woken."""
        if self._stop.is_set():
            return False
        if seconds is not None and seconds <= 0:
            await asyncio.sleep(0)  # back-to-back steps still let the event loop run
        else:
            tasks: set[asyncio.Future[object]] = {asyncio.ensure_future(self._wake.wait())}
            if seconds is not None:
                tasks.add(asyncio.ensure_future(self._sleep(seconds)))
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        woken = self._wake.is_set() and not self._stop.is_set()
        if woken:
            self._wake.clear()
        return woken

    # --- failures ----------------------------------------------------------------------------

    def failure(self, exc: Exception) -> float:
        """Count and log `exc`; return the wait after it. Seen again in the same attempt (by
        tenacity, then by `run()`), it is not counted again."""
        if exc is self._counted:
            return self._counted_delay
        self.failures += 1
        self._streak += 1
        delay = self.failed(exc)
        self._counted, self._counted_delay = exc, delay
        key = (type(exc).__name__, str(exc))
        # Once per change: an outage of hours is one line, not one per attempt.
        level = logging.DEBUG if key == self._failing else self.severity(exc)
        traceback = level > logging.DEBUG and not isinstance(exc, self.expected)
        self.log.log(level, "%s failed (attempt %d), next try in %.2f s: %s", self.name,
                     self._streak, delay, exc, exc_info=exc if traceback else None)  # fmt: skip
        self._failing = key
        return delay

    def succeeded(self) -> None:
        if self._failing is not None:
            self.log.info("%s recovered after %d failed attempts", self.name, self._streak)
        self._failing, self._streak, self._counted = None, 0, None
        self.reset_backoff()

    # --- retries inside a step -------------------------------------------------------------

    def retrying(self, transient: tuple[type[BaseException], ...]) -> AsyncRetrying:
        """tenacity's retry of one exchange: `transient` errors only, at most `attempts` tries,
        none after `stop()`; each wait is the loop's backoff, so it grows across steps."""
        return AsyncRetrying(
            before=self._attempt_starts,
            retry=retry_if_exception_type(transient),
            stop=stop_after_attempt(self.attempts) | _stop_when_set(self._stop),
            wait=self._retry_wait,
            before_sleep=self._before_sleep,
            sleep=self._retry_sleep,
            reraise=True,
        )

    async def retried(
        self, call: Callable[[], Awaitable[T]], transient: tuple[type[BaseException], ...]
    ) -> T:
        """`call()` under `retrying(transient)`; a fresh call (fresh request) each attempt."""
        async for attempt in self.retrying(transient):
            with attempt:
                return await call()
        raise AssertionError("tenacity ends with a result or an exception")  # pragma: no cover

    def _attempt_starts(self, state: RetryCallState) -> None:
        self._counted = None

    def _retry_wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Exception):
            return self.failure(exc)
        return self.policy.delay(self.failures)  # pragma: no cover (retry only on exceptions)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.log.debug("%s: attempt %d of %d in this step failed; retrying in %.2f s",
                       self.name, state.attempt_number, self.attempts, state.upcoming_sleep)  # fmt: skip

    async def _retry_sleep(self, seconds: float) -> None:
        await self.pause(seconds)
        if self._stop.is_set():
            raise Stopped(f"{self.name} stopped during a retry wait")
