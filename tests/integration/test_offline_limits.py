"""Offline limits on a real node against a real centre (behind a fault proxy): each limit
trips with 503 offline_limit naming it, inquiries go on, and it clears once the centre has
the payments (or the link, or the mirror, is back); the group-commit race never passes one."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, Chromium, chromium_or_skip
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link
from helpers import make_bill
from nodefixtures import RunningNode, start_node

import outbox

H = 3600.0


class Clock:
    """The node's wall clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Till:
    rn: RunningNode
    keys: itertools.count[int]

    async def pay(self, account: str, amount: int = 100, key: str | None = None
                  ) -> tuple[int, dict[str, Any], dict[str, str]]:  # fmt: skip
        body = {"bill_id": f"{GOV}-{CYCLE}-{account}", "amount": amount, "method": "cash",
                "cashier": "huda"}  # fmt: skip
        headers = self.rn.headers(**{"Idempotency-Key": key or f"k{next(self.keys)}"})
        async with self.rn.session.post(f"{self.rn.url}/v1/payments", json=body,
                                        headers=headers) as resp:  # fmt: skip
            return resp.status, await resp.json(content_type=None), dict(resp.headers)

    async def inquiry_ok(self, account: str) -> bool:
        async with self.rn.session.get(f"{self.rn.url}/v1/accounts/{account}/bills",
                                       headers=self.rn.headers("viewer")) as resp:  # fmt: skip
            return resp.status == 200 and bool((await resp.json())["bills"])

    async def limits(self) -> dict[str, Any]:
        async with self.rn.session.get(f"{self.rn.url}/v1/status") as resp:
            assert resp.status == 200
            doc: dict[str, Any] = (await resp.json())["offline_limits"]
            return doc

    def pending(self) -> int:
        return self.rn.node.db.read(lambda c: outbox.stats(c).pending)


def refused(status: int, doc: dict[str, Any], headers: dict[str, str], limit: str) -> None:
    assert status == 503, doc
    assert doc["code"] == "offline_limit" and doc["limit"] == limit
    assert f"limits.offline.{limit}" in doc["detail"]
    assert f"limits.offline.{limit}" in doc["detail_ar"] and doc["title_ar"]
    assert int(headers["Retry-After"]) >= 1


@pytest.fixture
async def offline_link(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[
    tuple[Link, Till, Clock]
]:  # fmt: skip
    clock = Clock()
    limits = {"limits_offline_max_payment": 0, "limits_offline_max_total": 0,
              "limits_offline_max_count": 0, "limits_offline_max_age_h": 0.0,
              "limits_offline_mirror_max_age_h": 0.0} | request.param  # fmt: skip
    link, close = await start_link(tmp_path, clock=clock, **limits)
    till = Till(link.node, itertools.count())
    try:
        await eventually(lambda: link.node.node.mirror_state().cursor is not None, 15,
                         "the mirror to bootstrap")  # fmt: skip
        yield link, till, clock
    finally:
        await close()


async def heal(link: Link, till: Till) -> None:
    link.proxy.mode = "pass"
    link.node.node.replication.trigger()
    await eventually(lambda: till.pending() == 0, 20, "the centre to take every payment")


@pytest.mark.parametrize("offline_link", [{"limits_offline_max_count": 3}], indirect=True)
async def test_max_count_trips_and_clears_after_delivery(offline_link: Any) -> None:
    link, till, _ = offline_link
    link.proxy.mode = "refuse"
    first = [await till.pay(ACCOUNTS[i], key=f"first-{i}") for i in range(3)]
    assert [s for s, _, _ in first] == [201, 201, 201]
    status, doc, headers = await till.pay(ACCOUNTS[3])
    refused(status, doc, headers, "max_count")
    assert (doc["value"], doc["used"]) == (3, 3)
    assert (await till.limits())["max_count"] == {"value": 3, "used": 3, "tripped": True}
    assert await till.inquiry_ok(ACCOUNTS[3])  # inquiries are unaffected
    # A retry of a payment already taken still gets its receipt.
    status, again, headers = await till.pay(ACCOUNTS[0], key="first-0")
    assert status == 201 and headers.get("Idempotent-Replayed") == "true"
    assert again["receipt"] == first[0][1]["receipt"]
    await heal(link, till)
    assert len(await link.centre.ledger()) == 3  # replay went on; the centre has them all
    status, doc, _ = await till.pay(ACCOUNTS[3])
    assert status == 201, doc
    assert (await till.limits())["max_count"]["tripped"] is False


@pytest.mark.parametrize("offline_link", [{"limits_offline_max_total": 1000}], indirect=True)
async def test_max_total_trips_and_clears_after_delivery(offline_link: Any) -> None:
    link, till, _ = offline_link
    link.proxy.mode = "refuse"
    assert (await till.pay(ACCOUNTS[0], 600))[0] == 201
    status, doc, headers = await till.pay(ACCOUNTS[1], 401)  # 1001 would pass it
    refused(status, doc, headers, "max_total")
    assert (doc["value"], doc["used"]) == (1000, 600)
    assert (await till.pay(ACCOUNTS[1], 400))[0] == 201  # exactly fills it
    status, doc, headers = await till.pay(ACCOUNTS[2], 1)
    refused(status, doc, headers, "max_total")
    assert await till.inquiry_ok(ACCOUNTS[2])
    await heal(link, till)
    assert (await till.pay(ACCOUNTS[2], 1000))[0] == 201


@pytest.mark.parametrize("offline_link", [{"limits_offline_max_age_h": 1.0}], indirect=True)
async def test_max_age_trips_and_clears_after_delivery(offline_link: Any) -> None:
    link, till, clock = offline_link
    link.proxy.mode = "refuse"
    assert (await till.pay(ACCOUNTS[0]))[0] == 201
    assert (await till.pay(ACCOUNTS[1]))[0] == 201  # the oldest is still young
    clock.offset = 1.5 * H  # an hour and a half of outage
    status, doc, headers = await till.pay(ACCOUNTS[2])
    refused(status, doc, headers, "max_age_h")
    assert doc["used"] >= 1.5
    assert (await till.limits())["max_age_h"]["tripped"] is True
    assert await till.inquiry_ok(ACCOUNTS[2])
    await heal(link, till)  # signed with the skew the centre's Date header shows
    assert (await till.pay(ACCOUNTS[2]))[0] == 201


@pytest.mark.parametrize("offline_link", [{"limits_offline_mirror_max_age_h": 1.0}],
                         indirect=True)  # fmt: skip
async def test_a_stale_mirror_trips_and_clears_at_the_next_pull(offline_link: Any) -> None:
    link, till, clock = offline_link
    assert (await till.pay(ACCOUNTS[0]))[0] == 201
    link.proxy.mode = "refuse"
    clock.offset = 2 * H  # the mirror last heard from the centre two hours ago
    status, doc, headers = await till.pay(ACCOUNTS[1])
    refused(status, doc, headers, "mirror_max_age_h")
    assert doc["used"] >= 2.0
    assert await till.inquiry_ok(ACCOUNTS[1])
    link.proxy.mode = "pass"
    await eventually(lambda: not till.rn.node.db.read(lambda c: _mirror_old(c, clock())), 20,
                     "the puller to hear from the centre")  # fmt: skip
    assert (await till.pay(ACCOUNTS[1]))[0] == 201


def _mirror_old(conn: Any, now: float) -> bool:
    as_of = conn.execute("SELECT as_of FROM mirror_state").fetchone()[0]
    return as_of is None or now - as_of > H


@pytest.mark.parametrize("offline_link", [{"limits_offline_max_payment": 5000}], indirect=True)
async def test_max_payment_bites_only_while_the_link_is_not_up(offline_link: Any) -> None:
    link, till, _ = offline_link
    node = link.node.node
    await eventually(lambda: node.link.state == "up", 15, "the link to come up")
    assert (await till.pay(ACCOUNTS[0], 6000))[0] == 201
    assert (await till.limits())["max_payment"]["tripped"] is False
    link.proxy.mode = "refuse"
    await eventually(lambda: node.link.state == "down", 15, "the link to go down")
    status, doc, headers = await till.pay(ACCOUNTS[1], 6000)
    refused(status, doc, headers, "max_payment")
    assert (doc["value"], doc["used"]) == (5000, 6000)
    assert (await till.pay(ACCOUNTS[1], 5000))[0] == 201  # up to the limit is taken
    assert (await till.limits())["max_payment"]["tripped"] is True
    assert await till.inquiry_ok(ACCOUNTS[1])
    await heal(link, till)
    await eventually(lambda: node.link.state == "up", 15, "the link to come back")
    assert (await till.pay(ACCOUNTS[2], 6000))[0] == 201


# --- the race: many cashiers at once, one commit or many ---------------------------------


@pytest.mark.parametrize(
    ("limits", "check"),
    [
        ({"limits_offline_max_count": 25}, "count"),
        ({"limits_offline_max_total": 25 * 700 + 350}, "total"),
    ],
)
async def test_concurrent_payments_never_pass_a_limit(
    tmp_path: Path, limits: dict[str, int], check: str
) -> None:
    bills = [make_bill(f"07{n:08d}", amount=10**6) for n in range(120)]
    # 120 payments at once from one address: up to 100 connections (aiohttp's pool), over
    # the per-address cap that counters, each on its own address, never meet.
    runner, rn = await start_node(tmp_path, bills, http_max_connections_per_address=128, **limits)
    till = Till(rn, itertools.count())
    try:
        results = await asyncio.gather(*(till.pay(f"07{n:08d}", 700) for n in range(120)))
        taken = [doc for status, doc, _ in results if status == 201]
        others = [doc for status, doc, _ in results if status != 201]
        assert {(d["code"], d["limit"]) for d in others} == {("offline_limit", f"max_{check}")}
        assert len(taken) == 25  # 25 fit either limit; a 26th of 700 fits neither
        pending = rn.node.db.read(lambda c: outbox.stats(c).pending)
        assert pending == 25
        status_doc = await till.limits()
        assert status_doc["max_count"]["used"] == 25
        assert status_doc["max_total"]["used"] == 25 * 700
        async with rn.session.get(f"{rn.url}/metrics") as resp:
            scraped = await resp.text()
        assert 'edge_offline_limit_used{limit="max_count"} 25.0' in scraped
        assert f'edge_offline_limit_used{{limit="max_total"}} {25 * 700}.0' in scraped
        # Full (count), or not (total: 350 piastres are left, less than one more payment).
        tripped = "1.0" if check == "count" else "0.0"
        assert f'edge_offline_limit_tripped{{limit="max_{check}"}} {tripped}' in scraped
    finally:
        await rn.session.close()
        await runner.cleanup()


# --- the dashboard ------------------------------------------------------------------------

READ_LIMITS = """(function () {
  var rows = document.querySelectorAll('#limits-list .limit'), out = {}, i;
  for (i = 0; i < rows.length; i++) {
    out[rows[i].getAttribute('data-limit')] = {tripped: rows[i].getAttribute('data-tripped'),
      used: rows[i].getAttribute('data-used'), value: rows[i].getAttribute('data-value'),
      text: rows[i].textContent};
  }
  return out;
})()"""


async def test_the_dashboard_shows_each_limit_and_how_close_the_node_is(tmp_path: Path) -> None:
    bills = [make_bill(f"07{n:08d}", amount=10**6) for n in range(3)]
    runner, rn = await start_node(tmp_path / "node", bills, limits_offline_max_count=2,
                                  limits_offline_max_total=0)  # fmt: skip
    till = Till(rn, itertools.count())
    chromium = Chromium(chromium_or_skip(), tmp_path / "browser")
    chromium.start()
    try:
        assert (await till.pay("0700000000", 1234))[0] == 201
        assert (await till.pay("0700000001", 1))[0] == 201
        assert (await till.pay("0700000002", 1))[0] == 503
        async with Browser.connect(chromium) as browser:
            page = await browser.new_page()
            await page.goto(rn.url + "/?lang=en")
            await page.wait_for("document.querySelectorAll('#limits-list .limit').length === 5")
            shown = await page.eval(READ_LIMITS)
            assert shown["max_count"]["tripped"] == "true" and shown["max_count"]["used"] == "2"
            assert "2 / 2" in shown["max_count"]["text"]
            assert "Limit reached" in shown["max_count"]["text"]
            assert "off" in shown["max_total"]["text"] and shown["max_total"]["tripped"] == "false"
            # No centre: the link is never up, so the largest-payment limit applies now.
            assert "Applies now" in shown["max_payment"]["text"]
            assert "10,000,000.00" in shown["max_payment"]["text"]
            await page.goto(rn.url + "/?lang=ar")
            await page.wait_for("document.querySelectorAll('#limits-list .limit').length === 5")
            shown = await page.eval(READ_LIMITS)
            assert "بلغ الحد" in shown["max_count"]["text"]
            assert "حدود العمل دون اتصال" in await page.eval(
                "document.getElementById('limits-card').textContent"
            )
    finally:
        chromium.stop()
        await rn.session.close()
        await runner.cleanup()
