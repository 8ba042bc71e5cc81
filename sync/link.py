"""The link to the centre as the node sees it: up, degraded or down, and the clock skew.

Every exchange with the centre reports here. Skew comes from the centre's `Date` header
(whole seconds, so skews under ~1 s read as 0); the signer adds it to the local clock so
a node whose clock lies after a power cut is still accepted by the centre. Loops that back
off subscribe to `on_ok`, so any answer from the centre ends every loop's backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

DOWN_AFTER = 3  # consecutive failures before "degraded" becomes "down"


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass
class Link:
    clock: Callable[[], float] = time.time
    state: str = "unknown"
    last_ok_at: float | None = None
    last_error: str | None = None
    last_error_code: str | None = None  # sync.reasons' key: the dashboard's text for it
    last_error_at: float | None = None
    consecutive_failures: int = 0
    config_fault: bool = False
    clock_skew_s: float | None = None
    _listeners: list[Callable[[str], None]] = field(default_factory=list)
    _ok_listeners: list[Callable[[], None]] = field(default_factory=list)

    def ok(self, server_date: str | None = None) -> None:
        now = self.clock()
        centre_time = parse_http_date(server_date)
        if centre_time is not None:
            # Positive skew: the centre is ahead of us. Date has whole seconds (truncated), so
            # half a second is added back; anything within ±1 s is measurement noise.
            self.clock_skew_s = round(centre_time + 0.5 - now, 1)
        self.last_ok_at = now
        # The centre answers again: an old error would read as today's trouble.
        self.last_error = self.last_error_code = self.last_error_at = None
        self.consecutive_failures = 0
        self.config_fault = False
        self._set("up")
        for listener in self._ok_listeners:
            listener()

    def failed(
        self,
        error: str,
        *,
        code: str | None = None,
        config_fault: bool = False,
        server_date: str | None = None,
        answered: bool = False,
    ) -> None:
        """Record a failed exchange; `answered`: something answered at the centre's URL that
        could not be trusted (a bad answer signature, a foreign bill): degraded, never down."""
        now = self.clock()
        centre_time = parse_http_date(server_date)
        if centre_time is not None:
            self.clock_skew_s = round(centre_time + 0.5 - now, 1)
        self.last_error, self.last_error_code, self.last_error_at = error, code, now
        self.consecutive_failures += 1
        self.config_fault = config_fault
        # A centre that answers but refuses us (signature, chain) is reachable: degraded.
        down = not config_fault and not answered and self.consecutive_failures >= DOWN_AFTER
        self._set("down" if down else "degraded")

    def corrected_time(self) -> float:
        """Local time moved by the measured skew: what the centre believes 'now' is."""
        return self.clock() + (self.clock_skew_s or 0.0)

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def on_ok(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every successful exchange (not only on a change to "up"):
        the centre answering one loop is news to the others. It must not raise or block."""
        self._ok_listeners.append(listener)

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            for listener in self._listeners:
                listener(state)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_ok_at": self.last_ok_at,
            "last_error": self.last_error,
            "last_error_code": self.last_error_code,
            "last_error_at": self.last_error_at,
            "consecutive_failures": self.consecutive_failures,
            "config_fault": self.config_fault,
            "clock_skew_s": self.clock_skew_s,
        }
