"""The retry policy: capped exponential backoff with a floor of half the window and jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=60)
@given(
    base=st.floats(min_value=0.01, max_value=10),
    factor=st.floats(min_value=1, max_value=4),
    extra_cap=st.floats(min_value=0, max_value=1000),
    failures=st.integers(min_value=1, max_value=5000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_lies_between_half_the_window_and_the_window(
    base: float, factor: float, extra_cap: float, failures: int, seed: int
):
    policy = RetryPolicy(base_s=base, factor=factor, cap_s=base + extra_cap)
    top = policy.ceiling(failures)
    assert base <= top <= policy.cap_s
    assert top / 2 <= policy.delay(failures, random.Random(seed)) <= top


def test_delay_is_jittered_and_replayable_from_a_seed():
    policy = RetryPolicy(base_s=1.0, factor=2.0, cap_s=300.0)
    delays = [policy.delay(5, random.Random(seed)) for seed in range(50)]
    assert len(set(delays)) > 40
    assert delays == [policy.delay(5, random.Random(seed)) for seed in range(50)]


@pytest.mark.parametrize(
    ("base_s", "factor", "cap_s"),
    [(0.0, 2.0, 10.0), (-1.0, 2.0, 10.0), (1.0, 0.5, 10.0), (5.0, 2.0, 1.0)],
)
def test_a_policy_that_could_hot_loop_or_shrink_is_refused(
    base_s: float, factor: float, cap_s: float
):
    with pytest.raises(ValueError):
        RetryPolicy(base_s=base_s, factor=factor, cap_s=cap_s)
