"""Fault matrix row 7, clock jumps: the node's wall clock moved back and forward while it works.

The clock is injected (`create_app(settings, clock=...)` through nodefixtures.start_node, and
the Replayer's `clock`), so a test moves it by hours or days without touching the host. The
centre keeps true time, as the ministry's would. What must hold (DESIGN 3, invariant 8):

- ordering uses the outbox seq, never wall time: seq strictly increases and the centre
  records entries in seq order while created_at goes backwards and forwards;
- receipts `{GOV}-{NODE}-{YYYYMMDD}-{n:06d}` stay unique when the local day goes back then forward:
  n continues per day and never repeats;
- retry timing: record_failure / next_attempt_at use the injected clock, and a clock thrown
  back a day neither makes the replayer wait a day nor loop hot: every delay it picks is
  inside the policy's bounds and the gaps it actually waits match them;
- a node whose clock is hours off gets through to a real centre (real signature check)
  after one 401 stale_timestamp round-trip, the skew measured from the centre's Date
  header, and /v1/status shows that skew.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from centrefixtures import ACCOUNTS, CYCLE, GOV, NODE, SECRET, Centre, eventually, start_link
from hypothesis import given, settings
from hypothesis import strategies as st
from loophost import hosted_node
from nodefixtures import RunningNode, make_bill, start_node

import outbox
from sync.replayer import StepResult

TZ = ZoneInfo("Asia/Damascus")
DAY, HOUR = 86_400.0, 3_600.0
RECEIPT = re.compile(r"^DAM-DAM1-(\d{8})-(\d{6})$")
# 2026-06-01 12:00 in Damascus: far enough from midnight that hour-sized jumps keep the day.
NOON = datetime(2026, 6, 1, 12, 0, tzinfo=TZ).timestamp()


class FakeClock:
    """The host's time moved by `offset` (so time still flows), or frozen at `frozen`."""

    def __init__(self, offset: float = 0.0, frozen: float | None = None) -> None:
        self.offset = offset
        self.frozen = frozen

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.time() + self.offset


@dataclass
class Pair:
    centre: Centre
    node: RunningNode
    clock: FakeClock


@pytest.fixture
async def pair_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Pair]]]:
    """Start a real centre (true time) and a node on a fake clock (centrefixtures.start_link)."""
    closers: list[Callable[[], Awaitable[None]]] = []

    async def start(clock: FakeClock, **overrides: Any) -> Pair:
        link, close = await start_link(tmp_path, clock=clock, **overrides)
        closers.append(close)
        return Pair(link.centre, link.node, clock)

    yield start
    for close in reversed(closers):
        await close()


async def pay(rn: RunningNode, bill_id: str, amount: int, key: str) -> dict[str, Any]:
    async with rn.session.post(
        f"{rn.url}/v1/payments",
        json={"bill_id": bill_id, "amount": amount, "method": "cash", "cashier": "nour"},
        headers=rn.headers(**{"Idempotency-Key": key}),
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 201, body
        return body  # type: ignore[no-any-return]


def pending(rn: RunningNode) -> int:
    return rn.node.db.read(lambda c: outbox.stats(c).pending)


async def mirror_ready(rn: RunningNode) -> None:
    async def check() -> bool:
        return rn.node.db.read(
            lambda c: c.execute("SELECT COUNT(*) FROM bills").fetchone()[0]
        ) == len(ACCOUNTS)

    await eventually(check, what="the mirror to bootstrap")


async def delivered(rn: RunningNode, timeout: float = 15.0) -> None:
    async def check() -> bool:
        return pending(rn) == 0

    await eventually(check, timeout=timeout, what="every entry to be delivered")


def watch(rn: RunningNode) -> list[tuple[float, float, StepResult]]:
    """Record (monotonic time, node clock, result) of every replay step from now on."""
    replayer = rn.node.replication.replayer
    seen: list[tuple[float, float, StepResult]] = []
    previous = replayer.on_result

    def record(result: StepResult) -> None:
        seen.append((time.monotonic(), rn.node.clock(), result))
        if previous is not None:
            previous(result)

    replayer.on_result = record
    return seen


# --- ordering ----------------------------------------------------------------------------


async def test_seq_orders_the_outbox_and_the_centre_while_created_at_jumps(
    pair_factory: Callable[..., Awaitable[Pair]],
) -> None:
    clock = FakeClock()
    pair = await pair_factory(clock)
    rn = pair.node
    await mirror_ready(rn)
    # Back an hour, back a day, forward two days, back ten minutes, home: a payment each.
    jumps = [0.0, -HOUR, -DAY, 2 * DAY, -600.0, 0.0]
    taken = []
    for i, offset in enumerate(jumps):
        clock.offset = offset
        for j in range(2):
            taken.append(await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[i]}", 1_000 + j, f"o-{i}-{j}"))
        if i % 2:
            await delivered(rn)  # some batches go out while the clock is off, some after
    await delivered(rn)

    rows = rn.node.db.read(
        lambda c: c.execute(
            "SELECT seq, id, created_at FROM outbox_entries ORDER BY rowid"
        ).fetchall()
    )
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(taken) + 1))  # strictly increasing, no gaps
    created = [r[2] for r in rows]
    assert any(b < a - 3_000 for a, b in itertools.pairwise(created))  # went back
    assert [r[1] for r in rows] == [t["payment_id"] for t in taken]
    assert len({r[1] for r in rows}) == len(rows)

    # The centre received them in seq order (insertion order of its ledger) and chained them.
    # Insertion order: SQLite's rowid, PostgreSQL's identity column n.
    order = "rowid" if pair.centre.db.kind == "sqlite" else "n"
    centre_rows = await pair.centre.db.query(
        f"SELECT seq, id FROM entries WHERE node = ? ORDER BY {order}", NODE
    )
    assert [(r[0], r[1]) for r in centre_rows] == [(r[0], r[1]) for r in rows]
    assert [r[5] for r in await pair.centre.ledger()] == ["applied"] * len(taken)


# --- receipts ----------------------------------------------------------------------------


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).strftime("%Y%m%d")


async def test_receipts_continue_per_day_when_the_day_goes_back_then_forward(
    tmp_path: Path,
) -> None:
    clock = FakeClock(frozen=NOON)
    runner, rn = await start_node(tmp_path, [make_bill("0100234567", amount=10**9)], clock=clock)
    try:
        got = []
        # June 1, June 2, back to June 1 (the RTC reset), forward to June 2, then June 3.
        for i, day in enumerate([0, 0, 1, 1, 0, 0, 1, 2, 0]):
            clock.frozen = NOON + day * DAY + i  # a second apart, so ids differ in time too
            body = await pay(rn, "DAM-2026-05-0100234567", 100, f"r-{i}")
            got.append(body["receipt"])
    finally:
        await rn.session.close()
        await runner.cleanup()
    assert got == [
        "DAM-DAM1-20260601-000001", "DAM-DAM1-20260601-000002", "DAM-DAM1-20260602-000001",
        "DAM-DAM1-20260602-000002", "DAM-DAM1-20260601-000003", "DAM-DAM1-20260601-000004",
        "DAM-DAM1-20260602-000003", "DAM-DAM1-20260603-000001", "DAM-DAM1-20260601-000005",
    ]  # fmt: skip
    assert len(set(got)) == len(got)


def test_receipts_stay_unique_under_any_sequence_of_clock_jumps(tmp_path: Path) -> None:
    """Property: any walk of the clock (±3 days, any second) gives well-formed, unique,
    per-day consecutive receipts. The node lives across examples, so the model does too."""
    clock = FakeClock(frozen=NOON)
    seen: set[str] = set()
    per_day: Counter[str] = Counter()
    keys = iter(range(10**9))
    with hosted_node(tmp_path, [make_bill("0100234567", amount=10**12)], clock=clock) as (host, rn):

        @settings(max_examples=40, deadline=None, derandomize=True, database=None)
        @given(walk=st.lists(st.floats(-3 * DAY, 3 * DAY), min_size=1, max_size=8))
        def check(walk: list[float]) -> None:
            for offset in walk:
                clock.frozen = NOON + offset
                body = host.run(pay(rn, "DAM-2026-05-0100234567", 1, f"w-{next(keys)}"))
                match = RECEIPT.match(body["receipt"])
                assert match is not None, body["receipt"]
                day, n = match.group(1), int(match.group(2))
                assert day == day_of(clock.frozen)
                per_day[day] += 1
                assert n == per_day[day], (body["receipt"], per_day[day])
                assert body["receipt"] not in seen
                seen.add(body["receipt"])

        check()
        stored = host.call(
            rn.node.db.read,
            lambda c: dict(c.execute("SELECT day, last FROM receipt_counters").fetchall()),
        )
    assert stored == dict(per_day)
    assert len(per_day) >= 5  # the walks did cross several days, backwards and forwards
    print(f"\nreceipts: {len(seen)} payments on a walking clock, {len(per_day)} days, unique")


# --- retry timing ------------------------------------------------------------------------


@pytest.fixture
async def failing_centre() -> AsyncIterator[str]:
    """A 'centre' that answers every request 500 (with a Date header, as aiohttp does)."""

    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text="down")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_backoff_uses_the_injected_clock_and_its_bounds_across_day_jumps(
    tmp_path: Path, failing_centre: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    clock = FakeClock(offset=-DAY)  # the node starts a day behind
    base, cap = 0.05, 0.4
    runner, rn = await start_node(
        tmp_path, [make_bill(ACCOUNTS[0], amount=10**9)], clock=clock,
        centre_url=failing_centre, centre_secret_file=secret_file, centre_retry_base_s=base,
        centre_retry_cap_s=cap, centre_pull_interval_s=60.0, centre_timeout_s=5.0,
        power_final_replay_s=0.2,
    )  # fmt: skip
    try:
        steps = watch(rn)
        policy = outbox.RetryPolicy(base_s=base, cap_s=cap)
        due: list[tuple[float, float, float]] = []  # (node clock, retry_in_s, next_attempt_at)

        async def sample(until: float) -> None:
            n = 0
            while time.monotonic() < until:
                if len(steps) > n:
                    n = len(steps)
                    _, at, result = steps[-1]
                    nxt = rn.node.db.read(outbox.next_attempt_at)
                    assert nxt is not None
                    due.append((at, result.retry_in_s, nxt))
                await asyncio.sleep(0.005)

        await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[0]}", 500, "retry-1")
        start = time.monotonic()
        await sample(start + 1.0)
        clock.offset = 0.0  # forward a day
        await sample(start + 2.0)
        clock.offset = -DAY  # and back a day again
        await sample(start + 3.0)
        running = list(steps)  # not the bounded final replay the shutdown makes
    finally:
        await rn.session.close()
        await runner.cleanup()

    errors = [s for s in running if s[2].error is not None]
    assert all("500" in (s[2].error or "") for s in errors)
    # Not a hot loop, not stalled: over 3 s with delays in [0.025, 0.4] s there are at least
    # 3 s / 0.4 s attempts and at most 3 s / (cap/2) once the cap is reached, plus ramp-up.
    assert 3 / cap - 2 <= len(errors) <= 3 / (cap / 2) + 8, len(errors)
    for failures, (_, _, result) in enumerate(errors, start=1):
        top = policy.ceiling(failures)
        assert top / 2 <= result.retry_in_s <= top, (failures, result.retry_in_s)
    # The gap actually waited before the next attempt is the delay chosen, never a day.
    for (t0, _, r0), (t1, _, _) in itertools.pairwise(errors):
        assert r0.retry_in_s - 0.01 <= t1 - t0 <= r0.retry_in_s + 0.25, (t1 - t0, r0.retry_in_s)
    # next_attempt_at is the injected clock plus that delay: a day behind while the clock is.
    assert due, "no failure was sampled"
    # The replayer reads its clock before it records the failure and `at` is read after, so
    # the gap is that write's time: under a loaded CI machine 0.1 s was seen; a day is not.
    for at, delay, nxt in due:
        assert -0.01 <= at - (nxt - delay) < 1.0, (at, delay, nxt)
    behind = [nxt for at, _, nxt in due if at < time.time() - DAY / 2]
    level = [nxt for at, _, nxt in due if at > time.time() - DAY / 2]
    assert behind and level  # both clock settings were seen by the replayer
    assert max(behind) < time.time() - DAY + 60
    gaps = [t1 - t0 for (t0, _, _), (t1, _, _) in itertools.pairwise(errors)]
    print(f"\nbackoff: {len(errors)} attempts in 3 s across two day jumps; delays"
          f" {min(r.retry_in_s for _, _, r in errors):.3f}-{max(r.retry_in_s for _, _, r in errors):.3f} s,"
          f" gaps {min(gaps):.3f}-{max(gaps):.3f} s")  # fmt: skip


# --- skew ----------------------------------------------------------------------------------


async def status_skew(rn: RunningNode) -> float | None:
    async with rn.session.get(f"{rn.url}/v1/status") as resp:
        doc = await resp.json()
    assert resp.status == 200
    skew: float | None = doc["link"]["clock_skew_s"]
    return skew


def stale_refusals(caplog: pytest.LogCaptureFixture) -> int:
    """How many requests the centre refused as stale (its own log line for each)."""
    return sum(
        r.name == "sync.centre.app" and "stale_timestamp" in r.getMessage() for r in caplog.records
    )


async def test_clock_jumping_three_hours_ahead_costs_one_401_round_trip(
    pair_factory: Callable[..., Awaitable[Pair]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sync.centre.app")
    clock = FakeClock()
    # The puller pulls once at start and then sleeps: the replayer meets the 401 first.
    pair = await pair_factory(clock, centre_pull_interval_s=60.0)
    rn = pair.node
    await mirror_ready(rn)
    await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[0]}", 1_000, "before-jump")
    await delivered(rn)
    assert abs(await status_skew(rn) or 0.0) <= 2.0
    steps = watch(rn)

    clock.offset = 3 * HOUR  # the RTC is suddenly three hours fast
    started = time.monotonic()
    body = await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[1]}", 2_000, "after-jump")
    await delivered(rn)
    took = time.monotonic() - started

    results = [s[2] for s in steps]
    assert [r.error is not None for r in results] == [True, False], results
    assert results[0].error is not None and results[0].error.startswith("401 stale_timestamp")
    assert results[0].retry_in_s == 1.0  # corrected at once, retried soon: not a config fault
    assert results[1].verdicts == {"applied": 1}
    assert took < 5.0
    assert stale_refusals(caplog) == 1
    skew = await status_skew(rn)
    assert skew is not None and abs(skew + 3 * HOUR) <= 2.0, skew
    assert rn.node.link.state == "up"
    rows = await pair.centre.ledger()
    assert rows[-1][0] == body["payment_id"] and rows[-1][5] == "applied"
    print(f"\n+3 h jump: 1 stale 401, delivered {took:.2f} s after the payment, skew {skew} s")


@pytest.mark.parametrize("offset", [3 * HOUR, -5 * HOUR])
async def test_node_starting_hours_off_gets_through_after_one_401_per_loop(
    pair_factory: Callable[..., Awaitable[Pair]],
    caplog: pytest.LogCaptureFixture,
    offset: float,
) -> None:
    caplog.set_level(logging.WARNING, logger="sync.centre.app")
    pair = await pair_factory(FakeClock(offset))
    rn = pair.node
    await mirror_ready(rn)  # the puller got through: its first request was stale
    body = await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[2]}", 3_000, "off")
    await delivered(rn)
    # One stale refusal at most for each loop that signs (puller, replayer): after the first,
    # both sign with the corrected time.
    assert 1 <= stale_refusals(caplog) <= 2
    skew = await status_skew(rn)
    assert skew is not None and abs(skew + offset) <= 2.0, skew
    rows = await pair.centre.ledger()
    assert [(r[0], r[5]) for r in rows] == [(body["payment_id"], "applied")]
    print(f"\nstarted {offset:+.0f} s off: {stale_refusals(caplog)} stale 401(s), skew {skew} s")
