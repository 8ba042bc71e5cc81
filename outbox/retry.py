"""The retry policy: capped exponential backoff with half jitter, built from tenacity's waits."""

from __future__ import annotations

from dataclasses import dataclass, field

from tenacity import RetryCallState, Retrying
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential

# A RetryCallState needs a retrying object; only its attempt number is read by the waits.
_NO_RETRYING = Retrying()


@dataclass(frozen=True)
class RetryPolicy:
    """Delay before attempt n+1 after n failures: uniform in [window/2, window], where the
    window is base*factor^(n-1) capped at cap_s.

    Half of the window is kept as a floor so a fleet of nodes never retries in a hot loop,
    and the other half is jitter so they do not all retry at once when the centre returns.
    `wait` is that rule as a tenacity wait strategy (`wait_exponential` for the floor plus
    `wait_random_exponential` for the jitter, both over half the window): the in-memory
    retries of sync's loops and the durable `next_attempt_at` of outbox rows use this one
    definition. tenacity's `wait_exponential_jitter` is not used: its jitter is a fixed
    number of seconds, not a share of the window, so it has no floor that grows with it.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    _half: wait_exponential = field(init=False, repr=False, compare=False)
    wait: wait_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.factor < 1 or self.cap_s < self.base_s:
            raise ValueError("retry policy needs base_s > 0, factor >= 1, cap_s >= base_s")
        half = {"multiplier": self.base_s / 2, "exp_base": self.factor, "max": self.cap_s / 2}
        floor = wait_exponential(**half)
        object.__setattr__(self, "_half", floor)
        object.__setattr__(self, "wait", floor + wait_random_exponential(**half))

    def ceiling(self, failures: int) -> float:
        """The window after `failures` failures (0 for none): the longest delay it allows."""
        if failures <= 0:
            return 0.0
        return 2 * float(self._half(_attempt(failures)))

    def delay(self, failures: int) -> float:
        """A delay drawn from the window after `failures` failures (0 for none)."""
        if failures <= 0:
            return 0.0
        return float(self.wait(_attempt(failures)))


def _attempt(failures: int) -> RetryCallState:
    state = RetryCallState(_NO_RETRYING, None, (), {})
    state.attempt_number = failures
    return state
