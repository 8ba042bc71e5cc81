"""edge.ratelimit: token buckets, the failed-authentication backoff, their memory bound; the
limiter's hold of refusals (edge.web.limits)."""

from __future__ import annotations

import asyncio

import pytest

from edge import config, ratelimit
from edge.errors import ConfigError
from edge.ratelimit import AuthBackoff, Buckets, Rate, retry_after
from edge.web.limits import Limiter


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    table = Buckets(Rate(per_s=2.0, burst=3))
    assert [table.take("t", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert table.take("t", 0.0) == pytest.approx(0.5)  # one token comes in 1/2 s
    assert table.take("t", 0.25) == pytest.approx(0.25)  # half of it is there already
    assert table.take("t", 0.5) == 0.0
    assert table.take("t", 0.5) == pytest.approx(0.5)
    # Idle for an hour: full again, never more than the burst.
    assert [table.take("t", 3600.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert table.take("t", 3600.0) > 0


def test_a_refused_request_takes_nothing() -> None:
    table = Buckets(Rate(per_s=1.0, burst=1))
    assert table.take("t", 0.0) == 0.0
    for _ in range(100):
        assert table.take("t", 0.5) == pytest.approx(0.5)
    assert table.take("t", 1.0) == 0.0  # the hundred refusals did not dig a deeper hole


def test_keys_have_their_own_buckets() -> None:
    table = Buckets(Rate(per_s=1.0, burst=1))
    assert table.take("a", 0.0) == 0.0
    assert table.take("a", 0.0) > 0
    assert table.take("b", 0.0) == 0.0


@pytest.mark.parametrize("rate", [Rate(0.0, 10), Rate(5.0, 0), Rate(0.0, 0)])
def test_zero_turns_a_limit_off(rate: Rate) -> None:
    table = Buckets(rate)
    assert all(table.take("t", 0.0) == 0.0 for _ in range(10_000))
    assert len(table) == 0  # an off limit keeps nothing


def test_a_clock_read_out_of_order_refills_nothing() -> None:
    table = Buckets(Rate(per_s=1.0, burst=1))
    assert table.take("t", 10.0) == 0.0
    assert table.take("t", 5.0) > 0
    assert table.take("t", 10.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.0001, 2), (2.5, 3), (299.2, 300)]
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(wait: float, header: int) -> None:
    assert retry_after(wait) == header


def test_many_addresses_keep_memory_bounded() -> None:
    table = Buckets(Rate(per_s=1.0, burst=5), max_keys=1000)
    backoff = AuthBackoff(free=3, cap_s=300.0, max_keys=1000)
    for i in range(50_000):
        address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        table.take(address, i * 0.001)
        backoff.failed(address, i * 0.001)
    assert len(table) == 1000
    assert len(backoff) == 1000


def test_the_least_recently_used_key_is_the_one_dropped() -> None:
    table = Buckets(Rate(per_s=0.001, burst=1), max_keys=2)
    table.take("a", 0.0)
    table.take("b", 0.0)
    table.take("a", 0.0)  # refused, but "a" is now the most recent
    table.take("c", 0.0)  # "b" goes
    assert table.take("a", 0.0) > 0  # still remembered: still empty
    assert table.take("b", 0.0) == 0.0  # forgotten: a fresh, full bucket


def test_sweep_drops_only_buckets_that_have_refilled() -> None:
    table = Buckets(Rate(per_s=1.0, burst=10))
    table.take("idle", 0.0)
    table.take("busy", 0.0)
    table.take("busy", 8.0)
    assert table.sweep(10.0) == 1  # "idle" has refilled (10 tokens at 1/s), "busy" not yet
    assert len(table) == 1


def test_auth_backoff_schedule_doubles_up_to_the_cap() -> None:
    backoff = AuthBackoff(free=3, cap_s=10.0)
    now = 0.0
    assert [backoff.failed("a", now) for _ in range(2)] == [0.0, 0.0]  # free failures
    blocks = []
    for _ in range(7):
        block = backoff.failed("a", now)
        blocks.append(block)
        assert backoff.blocked("a", now) == pytest.approx(block)
        assert backoff.blocked("a", now + block - 0.01) > 0
        now += block
        assert backoff.blocked("a", now) == 0.0  # the block has passed: one more attempt
    assert blocks == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.blocked("b", now) == 0.0  # another address is not touched


def test_auth_backoff_is_forgiven_only_by_time_not_by_a_success() -> None:
    backoff = AuthBackoff(free=2, cap_s=60.0)
    backoff.failed("a", 0.0)
    # (a success from "a" here changes nothing: the backoff is not told of successes)
    assert backoff.failed("a", 1.0) == 1.0
    assert backoff.failed("a", 2.5) == 2.0  # not forgiven 1.5 s after the last failure
    assert backoff.failed("a", 5.0 + 60.0) == 0.0  # 60 s after the block ended: forgiven
    assert backoff.failed("a", 65.5) == 1.0  # and the schedule starts again


def test_auth_backoff_off_records_nothing() -> None:
    backoff = AuthBackoff(free=0, cap_s=300.0)
    assert all(backoff.failed("a", 0.0) == 0.0 for _ in range(1000))
    assert backoff.blocked("a", 0.0) == 0.0
    assert len(backoff) == 0


def test_sweep_reports_each_address_once_per_window_with_its_counts() -> None:
    backoff = AuthBackoff(free=3, cap_s=30.0)
    for t in range(3):
        backoff.failed("a", float(t))  # the third blocks "a" for 1 s
    for _ in range(5):
        backoff.blocked("a", 2.5)  # refused while blocked
    backoff.failed("b", 10.0)
    assert backoff.sweep(59.0) == []  # the window of "a" opened at 0: not a minute yet
    reports = backoff.sweep(60.0)
    assert reports == [ratelimit.Report("a", failures=3, refused=5)]
    # "a" is reported, and forgiven (30 s after its block ended at 3): forgotten.
    assert len(backoff) == 1
    assert backoff.sweep(61.0) == []  # reported once
    assert backoff.sweep(70.0) == [ratelimit.Report("b", failures=1, refused=0)]
    assert len(backoff) == 0


def test_limits_settings_are_validated() -> None:
    config.validate(config.Settings(limits_inquiries_per_s=0, limits_auth_failures=0))
    with pytest.raises(ConfigError, match=r"limits\.payments_per_s"):
        config.validate(config.Settings(limits_payments_per_s=-1))
    with pytest.raises(ConfigError, match=r"limits\.per_address_per_s"):
        config.validate(config.Settings(limits_per_address_per_s=float("nan")))
    with pytest.raises(ConfigError, match=r"limits\.auth_block_max_s"):
        config.validate(config.Settings(limits_auth_block_max_s=0.5))


def test_limits_keys_load_from_toml_and_environment(tmp_path: config.Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("[limits]\ninquiries_per_s = 0.5\ninquiry_burst = 5\n")
    s = config.load(path, env={"EDGE_LIMITS_PER_ADDRESS_BURST": "7"})
    assert (s.limits_inquiries_per_s, s.limits_inquiry_burst) == (0.5, 5)
    assert s.limits_per_address_burst == 7
    path.write_text("[limits]\nper_token_per_s = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key limits\.per_token_per_s"):
        config.load(path, env={})


async def test_the_limiter_holds_refusals_up_to_its_cap() -> None:
    released = asyncio.Event()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await released.wait()

    limiter = Limiter(config.Settings(limits_hold_s=1.5), sleep=sleep, max_held=2)
    held = [asyncio.create_task(limiter.hold()) for _ in range(2)]
    await asyncio.sleep(0)
    assert limiter.held == 2 and slept == [1.5, 1.5]
    await limiter.hold()  # over the cap: answered at once
    assert limiter.held == 2 and len(slept) == 2
    released.set()
    await asyncio.gather(*held)
    assert limiter.held == 0
    off = Limiter(config.Settings(limits_hold_s=0), sleep=sleep)
    await off.hold()
    assert len(slept) == 2
