"""Rate limits and the failed-authentication backoff (DESIGN 5.7) on a real node on loopback.

The limiter's monotonic clock is injected (`start_node(monotonic=...)`), so "after waiting" is a
step of that clock, not a sleep. A second client address is 127.0.0.2: the connection still
goes to the node on 127.0.0.1, from another source address of the loopback interface.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import eventually, make_bill
from nodefixtures import DEFAULT_LIMITS, RunningNode, start_node
from prometheus_client.parser import text_string_to_metric_families

from edge.web.limits import LIMITER

BILL = "DAM-2026-05-0100234567"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "title_ar"}
START = 1000.0  # where every test's limiter clock starts
# Every limit off unless a test turns it on: each test looks at one limit. Refusals are answered
# at once here; the hold has its own test.
OFF = {
    "limits_inquiries_per_s": 0, "limits_payments_per_s": 0, "limits_per_address_per_s": 0,
    "limits_auth_failures": 0, "limits_hold_s": 0,
}  # fmt: skip


@dataclass
class Mono:
    """A monotonic clock that moves only when the test says so."""

    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Limited:
    rn: RunningNode
    clock: Mono
    other: aiohttp.ClientSession  # the same node, from 127.0.0.2

    async def get(
        self, path: str, who: str | None = "cashier", *, token: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> tuple[int, Any, Any]:  # fmt: skip
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif who is not None:
            headers = self.rn.headers(who)
        async with (session or self.rn.session).get(self.rn.url + path, headers=headers) as resp:
            body = await resp.read()
            return resp.status, body, resp.headers

    async def pay(self, key: str, amount: int = 1_000) -> tuple[int, Any, Any]:
        body = {"bill_id": BILL, "amount": amount, "method": "cash", "cashier": "rami"}
        headers = self.rn.headers("cashier", **{"Idempotency-Key": key})
        async with self.rn.session.post(f"{self.rn.url}/v1/payments", json=body,
                                        headers=headers) as resp:  # fmt: skip
            return resp.status, await resp.read(), resp.headers

    async def rate_limited(self) -> dict[str, float]:
        async with self.other.get(self.rn.url + "/metrics") as resp:
            text = await resp.text()
        return {
            s.labels["kind"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "edge_http_rate_limited"
            for s in family.samples
            if s.name == "edge_http_rate_limited_total"
        }


Start = Callable[..., Any]


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Start]:
    made: list[tuple[Any, Limited]] = []

    async def start(**limits: Any) -> Limited:
        clock = Mono()
        bills = [make_bill("0100234567", amount=10**9), make_bill("0100999999")]
        runner, rn = await start_node(tmp_path / str(len(made)), bills, monotonic=clock,
                                      **(OFF | limits))  # fmt: skip
        other = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
        lim = Limited(rn, clock, other)
        made.append((runner, lim))
        return lim

    yield start
    for runner, lim in made:
        await lim.other.close()
        await lim.rn.session.close()
        await runner.cleanup()


def assert_rate_limited(status: int, body: bytes, headers: Any, retry_after: int) -> None:
    assert status == 429, body
    assert headers["Content-Type"].startswith("application/problem+json")
    doc = json.loads(body)
    assert set(doc) == PROBLEM_KEYS
    assert (doc["status"], doc["code"]) == (429, "rate_limited")
    assert doc["title"] and doc["title_ar"] and doc["title"] != doc["title_ar"]
    assert re.fullmatch(r"[1-9][0-9]*", headers["Retry-After"])
    assert int(headers["Retry-After"]) == retry_after
    assert f"retry after {retry_after} s" in doc["detail"]


async def test_over_the_inquiry_limit_gives_429_then_passes_after_waiting(limited: Start) -> None:
    lim = await limited(limits_inquiries_per_s=0.5, limits_inquiry_burst=3)
    paths = ["/v1/accounts/0100234567/bills", f"/v1/bills/{BILL}", "/v1/accounts/0100999999/bills"]
    for path in paths:
        assert (await lim.get(path))[0] == 200
    assert_rate_limited(*await lim.get(paths[0]), retry_after=2)  # one token per 2 s
    lim.clock.now += 1.2
    assert_rate_limited(*await lim.get(f"/v1/bills/{BILL}"), retry_after=1)  # 0.8 s, rounded up
    lim.clock.now += 0.8
    assert (await lim.get(paths[0]))[0] == 200
    assert (await lim.get(paths[0]))[0] == 429
    assert (await lim.rate_limited())["inquiry"] == 3


async def test_payments_pass_while_the_same_tokens_inquiries_are_refused(limited: Start) -> None:
    lim = await limited(limits_inquiries_per_s=0.01, limits_inquiry_burst=2,
                        limits_payments_per_s=1, limits_payment_burst=5)  # fmt: skip
    for _ in range(2):
        assert (await lim.get("/v1/accounts/0100234567/bills"))[0] == 200
    for _ in range(3):
        assert (await lim.get("/v1/accounts/0100234567/bills"))[0] == 429
    status, body, headers = await lim.pay("flooded-1")
    assert status == 201, body
    # Reading the payment back is an inquiry: still refused; paying again is not.
    payment = headers["Location"]
    assert (await lim.get(payment))[0] == 429
    assert (await lim.pay("flooded-2"))[0] == 201
    # Another token is a bucket of its own.
    assert (await lim.get("/v1/accounts/0100234567/bills", "viewer"))[0] == 200
    assert (await lim.get(payment, "auditor"))[0] == 200


async def test_over_the_payment_limit_writes_nothing_and_the_key_stays_free(
    limited: Start,
) -> None:
    lim = await limited(limits_payments_per_s=0.25, limits_payment_burst=2)
    assert (await lim.pay("p-1"))[0] == 201
    assert (await lim.pay("p-2"))[0] == 201
    before = lim.rn.db_counts()
    assert_rate_limited(*await lim.pay("p-3"), retry_after=4)
    assert lim.rn.db_counts() == before
    # Inquiries of the same token are not charged for payments.
    assert (await lim.get("/v1/accounts/0100234567/bills"))[0] == 200
    lim.clock.now += 4
    status, body, headers = await lim.pay("p-3")  # the refused key was never stored
    assert status == 201 and "Idempotent-Replayed" not in headers, body
    assert (await lim.rate_limited())["payment"] == 1


async def test_per_address_limit_counts_every_request_but_the_probes(limited: Start) -> None:
    lim = await limited(limits_per_address_per_s=1, limits_per_address_burst=5)
    assert (await lim.get("/v1/status", None))[0] == 200
    assert (await lim.get("/v1/accounts/0100234567/bills"))[0] == 200
    assert (await lim.get("/no/such/page", None))[0] == 404
    assert (await lim.get("/static/dashboard.css", None))[0] == 200
    assert (await lim.get("/", None))[0] == 200
    for path, who in (("/v1/status", None), ("/metrics", None), ("/static/icon.svg", None),
                      ("/v1/accounts/0100234567/bills", "viewer"), ("/no/such/page", None)):  # fmt: skip
        assert_rate_limited(*await lim.get(path, who), retry_after=1)
    before = lim.rn.db_counts()
    assert_rate_limited(*await lim.pay("a-1"), retry_after=1)
    assert lim.rn.db_counts() == before
    for probe in ("/healthz", "/readyz"):
        assert (await lim.get(probe, None))[0] == 200
    # Another address has its own bucket.
    status, _, _ = await lim.get("/v1/accounts/0100234567/bills", session=lim.other)
    assert status == 200
    lim.clock.now += 1
    assert (await lim.get("/v1/status", None))[0] == 200
    assert (await lim.rate_limited())["address"] == 6


async def test_bad_tokens_from_one_address_back_off_and_are_logged_once_a_minute(
    limited: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.web.limits")
    lim = await limited(limits_auth_failures=3, limits_auth_block_max_s=300)
    assert lim.clock.now == START
    bad = "edge_" + "x" * 43
    path = "/v1/accounts/0100234567/bills"
    for _ in range(2):
        assert (await lim.get(path, token=bad))[0] == 401
    assert (await lim.get(path, None))[0] == 401  # no token at all counts too
    # The third failure blocked the address for 1 s: a valid token waits as well, unread.
    assert_rate_limited(*await lim.get(path, token=bad), retry_after=1)
    assert_rate_limited(*await lim.get(path), retry_after=1)
    assert_rate_limited(*await lim.pay("blocked-1"), retry_after=1)
    # Views that need no token stay open; another address is not touched.
    assert (await lim.get("/v1/status", None))[0] == 200
    assert (await lim.get(path, session=lim.other))[0] == 200
    waits = []
    for _ in range(4):
        lim.clock.now += float(waits[-1] if waits else 1)
        assert (await lim.get(path, token=bad))[0] == 401  # one more guess after each block
        status, body, headers = await lim.get(path, token=bad)
        assert status == 429, body
        waits.append(int(headers["Retry-After"]))
    assert waits == [2, 4, 8, 16]
    # A success does not forgive: the next failure after the block doubles it again.
    lim.clock.now += 16
    assert (await lim.get(path))[0] == 200
    assert (await lim.get(path, token=bad))[0] == 401
    assert_rate_limited(*await lim.get(path), retry_after=32)
    assert (await lim.rate_limited())["auth"] == 8

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "failed authentications from" in r.getMessage()]

    assert lines() == []  # nothing before the minute is up
    lim.clock.now = START + 60  # the minute opened with the first failure
    await eventually(lambda: len(lines()) == 1, what="the minute's log line")
    (record,) = lines()
    message = record.getMessage()
    assert message.startswith("8 failed authentications from 127.0.0.1 in the last minute")
    assert "(8 more attempts refused" in message
    assert bad not in message and lim.rn.tokens["cashier"] not in message
    assert record.levelno == logging.WARNING
    # A later failure opens the next minute: its line comes when that minute is up.
    lim.clock.now = START + 100
    assert (await lim.get(path, token=bad))[0] == 401
    assert (await lim.get(path, token=bad))[0] == 429
    lim.clock.now = START + 160
    await eventually(lambda: len(lines()) == 2, what="the next minute's log line")
    assert (
        lines()[1]
        .getMessage()
        .startswith(
            "1 failed authentications from 127.0.0.1 in the last minute (1 more attempts refused"
        )
    )


async def test_refusals_are_held_before_their_429_and_others_are_not(limited: Start) -> None:
    lim = await limited(limits_inquiries_per_s=0.01, limits_inquiry_burst=1, limits_hold_s=2.0)
    limiter = lim.rn.app[LIMITER]
    path = "/v1/accounts/0100234567/bills"
    assert (await lim.get(path))[0] == 200
    refused = [asyncio.create_task(lim.get(path)) for _ in range(3)]
    await eventually(lambda: limiter.held == 3, what="three refusals held")
    # Meanwhile the node answers everyone else at once: a payment on the same token too.
    assert not any(task.done() for task in refused)
    status, body, _ = await lim.pay("while-held")
    assert status == 201, body
    assert not any(task.done() for task in refused)
    t0 = time.monotonic()
    for status, body, headers in await asyncio.gather(*refused):
        assert_rate_limited(status, body, headers, retry_after=100)
    assert limiter.held == 0
    assert time.monotonic() - t0 <= 2.5  # they were held, not lost


async def test_defaults_serve_a_busy_counter(tmp_path: Path) -> None:
    """The shipped limits: a counter's day in a burst (20 customers: inquiry, payment, check)
    passes without one 429, and the 61st inquiry in a second does not."""
    runner, rn = await start_node(
        tmp_path, [make_bill("0100234567", amount=10**9)], monotonic=Mono(), **DEFAULT_LIMITS
    )
    try:
        statuses = []
        for i in range(20):
            async with rn.session.get(f"{rn.url}/v1/accounts/0100234567/bills",
                                      headers=rn.headers()) as resp:  # fmt: skip
                statuses.append(resp.status)
            body = {"bill_id": BILL, "amount": 100, "method": "cash", "cashier": "rami"}
            async with rn.session.post(f"{rn.url}/v1/payments", json=body,
                                       headers=rn.headers(**{"Idempotency-Key": f"d-{i}"})) as resp:  # fmt: skip
                statuses.append(resp.status)
                location = resp.headers["Location"]
            async with rn.session.get(rn.url + location, headers=rn.headers()) as resp:
                statuses.append(resp.status)
        assert set(statuses) == {200, 201}
        for _ in range(20):
            async with rn.session.get(f"{rn.url}/v1/bills/{BILL}", headers=rn.headers()) as resp:
                statuses.append(resp.status)
        async with rn.session.get(f"{rn.url}/v1/bills/{BILL}", headers=rn.headers()) as resp:
            assert resp.status == 429
    finally:
        await rn.session.close()
        await runner.cleanup()
