"""Token buckets and the failed-authentication backoff: pure logic over a clock the caller reads.

`edge.web.limits` keys them by token and by client address (DESIGN 5.7); nothing here knows HTTP.
Every table is bounded: an attacker on the LAN can use many addresses, and memory must not grow.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# Keys per table. A LAN has tens to hundreds of clients; 10,000 entries of ~200 bytes is a few
# MB. Beyond it the least recently used entry goes, which forgives at most what it owed.
MAX_KEYS = 10_000
BLOCK_BASE_S = 1.0  # the first block after the free failures; each further failure doubles it
REPORT_S = 60.0  # failures from one address are reported once per this window


def retry_after(wait_s: float) -> int:
    """A wait as the Retry-After header's value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


@dataclass(frozen=True)
class Rate:
    """A sustained rate and a burst; either one 0 turns the limit off."""

    per_s: float
    burst: int

    @property
    def on(self) -> bool:
        return self.per_s > 0 and self.burst > 0


class Bucket:
    """One token bucket: starts full, refills at `rate.per_s`, holds at most `rate.burst`."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def take(self, rate: Rate, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is there (none taken)."""
        elapsed = max(0.0, now - self.stamp)  # a clock read out of order refills nothing
        self.tokens = min(float(rate.burst), self.tokens + elapsed * rate.per_s)
        self.stamp = max(self.stamp, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate.per_s


class Buckets:
    """Buckets per key at one rate; the least recently used goes beyond `max_keys`."""

    def __init__(self, rate: Rate, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """One request for `key`: 0.0 when allowed, else the wait before the next is."""
        if not self.rate.on:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(float(self.rate.burst), now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(self.rate, now)

    def sweep(self, now: float) -> int:
        """Drop the buckets that have refilled: idle that long, one is the same as a new one."""
        if not self.rate.on:
            return 0
        refill_s = self.rate.burst / self.rate.per_s
        idle = [key for key, b in self._buckets.items() if now - b.stamp >= refill_s]
        for key in idle:
            del self._buckets[key]
        return len(idle)


@dataclass
class Strikes:
    """One address's failed authentications since it was last forgiven."""

    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0
    # The report window: opened by the first failure (or refusal) not yet logged.
    window_start: float | None = None
    window_failures: int = 0
    window_refused: int = 0

    def note(self, now: float) -> None:
        if self.window_start is None:
            self.window_start = now


@dataclass(frozen=True)
class Report:
    """What one address did in one report window: failed authentications, refused attempts."""

    address: str
    failures: int
    refused: int


class AuthBackoff:
    """Failed authentications per address: `free` of them pass as plain 401s; the `free`-th and
    every later one blocks the address for 1, 2, 4, ... s (at most `cap_s`). While blocked,
    every attempt from it is refused without looking at its token, so guesses learn nothing.
    Only time forgives: `cap_s` without a failure once the last block has ended. A success
    does not, or an attacker holding one valid token could mix it in to reset the count."""

    def __init__(self, free: int, cap_s: float, max_keys: int = MAX_KEYS) -> None:
        self.free = free
        self.cap_s = cap_s
        self.max_keys = max_keys
        self._strikes: OrderedDict[str, Strikes] = OrderedDict()

    @property
    def on(self) -> bool:
        return self.free > 0

    def __len__(self) -> int:
        return len(self._strikes)

    def block_s(self, beyond: int) -> float:
        """The block after the failure `beyond` past the free ones (0 for the `free`-th)."""
        return min(self.cap_s, BLOCK_BASE_S * 2.0 ** min(beyond, 62))

    def blocked(self, address: str, now: float) -> float:
        """Seconds left in the address's block (0.0: not blocked); a refusal is counted."""
        strikes = self._strikes.get(address)
        if strikes is None or now >= strikes.blocked_until:
            return 0.0
        strikes.note(now)
        strikes.window_refused += 1
        return strikes.blocked_until - now

    def failed(self, address: str, now: float) -> float:
        """Record a failed authentication; the block it starts (0.0: none yet)."""
        if not self.on:
            return 0.0
        strikes = self._strikes.get(address)
        if strikes is not None and self._forgiven(strikes, now) and strikes.window_start is None:
            strikes = None
            del self._strikes[address]
        if strikes is None:
            strikes = self._strikes[address] = Strikes()
            if len(self._strikes) > self.max_keys:
                self._strikes.popitem(last=False)
        else:
            self._strikes.move_to_end(address)
        if self._forgiven(strikes, now):
            strikes.failures = 0  # kept only for its open report window
        strikes.failures += 1
        strikes.last_failure = now
        strikes.note(now)
        strikes.window_failures += 1
        beyond = strikes.failures - self.free
        if beyond < 0:
            return 0.0
        block = self.block_s(beyond)
        strikes.blocked_until = now + block
        return block

    def _forgiven(self, strikes: Strikes, now: float) -> bool:
        return now >= max(strikes.last_failure, strikes.blocked_until) + self.cap_s

    def sweep(self, now: float) -> list[Report]:
        """Close the report windows at least REPORT_S old and forget forgiven addresses."""
        reports: list[Report] = []
        gone: list[str] = []
        for address, s in self._strikes.items():
            if s.window_start is not None and now - s.window_start >= REPORT_S:
                reports.append(Report(address, s.window_failures, s.window_refused))
                s.window_start, s.window_failures, s.window_refused = None, 0, 0
            if s.window_start is None and self._forgiven(s, now):
                gone.append(address)
        for address in gone:
            del self._strikes[address]
        return reports
