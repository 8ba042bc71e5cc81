"""Progress of long work (bill imports, seeding, the bootstrap, backups, transfer files): a bar
with rate and ETA on a terminal, plain log lines every few seconds anywhere else.

The one progress abstraction: every long command and the puller's bootstrap use `Progress`.
tqdm draws the bar (and knows terminal widths, rates and ETAs); the log lines are ours.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)
EVERY_S = 5.0  # a log line at most this often without a terminal: a journal, not a screen


def _is_tty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: no bar
        return False


class Progress:
    """`advance(n)` as work is done, `finish()` at the end (or use it as a context manager).

    On a terminal (`out`, stderr by default, is a TTY) a tqdm bar; otherwise one INFO line
    every `every_s` seconds, `label: done/total unit (pct, rate/s, about N s left) after T s`,
    and a last one at `finish()`.
    `done` and `total` are read by others (the node's readiness shows the bootstrap's).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "items",
        out: TextIO | None = None,
        bar: bool | None = None,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self.clock, self.every_s, self.logger = clock, every_s, logger
        self.out = out or sys.stderr
        self._start = self._last = clock()
        self._bar: Any = None
        self._redirect: contextlib.ExitStack | None = None
        self._finished = False
        if _is_tty(self.out) if bar is None else bar:
            # Log lines during the bar are printed above it instead of through it.
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm())
            self._bar = tqdm(
                total=total, desc=label, unit=f" {unit}", unit_scale=True, file=self.out,
                dynamic_ncols=True, mininterval=0.25, leave=True,
            )  # fmt: skip

    @property
    def bar(self) -> bool:
        """True when drawing a bar (a terminal), False when writing log lines."""
        return self._bar is not None

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self.logger.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain progress line: count, share of the total, rate and time left."""
        elapsed = max(1e-9, (self.clock() if now is None else now) - self._start)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%"
            left = max(0, self.total - self.done)
            text += f", {rate:,.0f}/s" + (f", about {left / rate:.0f} s left)" if rate else ")")
        else:
            text += f" {self.unit} ({rate:,.0f}/s)"
        return text + f" after {elapsed:.0f} s"

    def finish(self) -> float:
        """Close the bar, or log the last line; the seconds since the start. Idempotent."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            if self._redirect is not None:
                self._redirect.close()
                self._redirect = None
        elif not self._finished and (self.done or self.total):
            self.logger.info("%s", self.line())
        self._finished = True
        return self.clock() - self._start

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()
