"""The retry policy: capped exponential backoff with full jitter, as a small typed object."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Delay before attempt n+1 after n failures: uniform in [base*factor^(n-1)/2, that], capped.

    Half of the window is kept as a floor so a fleet of nodes never retries in a hot loop,
    and the other half is jitter so they do not all retry at once when the centre returns.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.factor < 1 or self.cap_s < self.base_s:
            raise ValueError("retry policy needs base_s > 0, factor >= 1, cap_s >= base_s")

    def ceiling(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        # Cap the exponent first: factor**failures overflows floats after ~1000 failures.
        exponent = min(failures - 1, 64)
        return float(min(self.cap_s, self.base_s * self.factor**exponent))

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        top = self.ceiling(failures)
        if top == 0.0:
            return 0.0
        pick = (rng or random).random()
        return top / 2 + pick * top / 2
