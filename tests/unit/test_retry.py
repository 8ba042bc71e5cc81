"""The retry policy: capped exponential backoff with a floor of half the window and jitter."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from outbox import RetryPolicy


def test_the_ceiling_grows_by_the_factor_until_the_cap():
    policy = RetryPolicy(base_s=1.0, factor=2.0, cap_s=60.0)
    assert [policy.ceiling(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_no_failure_means_no_delay():
    assert RetryPolicy().delay(0) == 0.0
    assert RetryPolicy().delay(-3) == 0.0


def test_a_huge_failure_count_stays_at_the_cap():
    policy = RetryPolicy(base_s=0.5, factor=3.0, cap_s=900.0)
    assert policy.ceiling(100_000) == 900.0
    assert 450.0 <= policy.delay(100_000) <= 900.0


def test_factor_one_is_a_constant_window():
    policy = RetryPolicy(base_s=5.0, factor=1.0, cap_s=5.0)
    assert {policy.ceiling(n) for n in range(1, 50)} == {5.0}
    assert all(2.5 <= policy.delay(n) <= 5.0 for n in range(1, 50))


@settings(max_examples=60)
@given(
    base=st.floats(min_value=0.01, max_value=10),
    factor=st.floats(min_value=1, max_value=4),
    extra_cap=st.floats(min_value=0, max_value=1000),
    failures=st.integers(min_value=1, max_value=5000),
)
def test_delay_lies_between_half_the_window_and_the_window(
    base: float, factor: float, extra_cap: float, failures: int
):
    policy = RetryPolicy(base_s=base, factor=factor, cap_s=base + extra_cap)
    top = policy.ceiling(failures)
    assert base <= top <= policy.cap_s
    assert top / 2 <= policy.delay(failures) <= top


def test_delay_is_jittered_over_the_upper_half_of_the_window():
    policy = RetryPolicy(base_s=1.0, factor=2.0, cap_s=300.0)
    delays = [policy.delay(5) for _ in range(400)]  # window 16 s
    assert all(8.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 390
    # Uniform on [8, 16]: both ends are reached and the mean sits in the middle.
    assert min(delays) < 9.0 and max(delays) > 15.0
    assert 11.0 < statistics.mean(delays) < 13.0


def test_delay_is_replayable_from_the_random_seed():
    state = random.getstate()
    try:
        random.seed(7)
        first = [RetryPolicy().delay(n) for n in range(1, 20)]
        random.seed(7)
        again = [RetryPolicy().delay(n) for n in range(1, 20)]
    finally:
        random.setstate(state)
    assert first == again


def test_the_same_policy_drives_tenacity_retries():
    """`wait` is a tenacity wait strategy: attempt n sleeps within the window after n failures."""
    policy = RetryPolicy(base_s=0.5, factor=2.0, cap_s=3.0)
    slept: list[float] = []

    def always_fails() -> None:
        raise ConnectionError("down")

    retrying = Retrying(
        wait=policy.wait,
        stop=stop_after_attempt(7),
        retry=retry_if_exception_type(ConnectionError),
        sleep=slept.append,
    )
    with pytest.raises(RetryError):
        retrying(always_fails)
    assert len(slept) == 6
    for failures, delay in enumerate(slept, start=1):
        top = policy.ceiling(failures)
        assert top / 2 <= delay <= top, (failures, delay)
    assert slept[-1] >= 1.5  # the cap's floor is reached, never passed
    assert max(slept) <= 3.0


@pytest.mark.parametrize(
    ("base_s", "factor", "cap_s"),
    [(0.0, 2.0, 10.0), (-1.0, 2.0, 10.0), (1.0, 0.5, 10.0), (5.0, 2.0, 1.0)],
)
def test_a_policy_that_could_hot_loop_or_shrink_is_refused(
    base_s: float, factor: float, cap_s: float
):
    with pytest.raises(ValueError):
        RetryPolicy(base_s=base_s, factor=factor, cap_s=cap_s)
