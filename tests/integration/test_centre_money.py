"""Plausible money at the reference centre (real server, real SQLite): a payment above the
bill's amount or the node's ceiling is `amount_implausible`, credit above the cap is
`credit_over_cap`, and neither moves a bill or records credit; a real node keeps them counted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from centrefixtures import ACCOUNTS, CYCLE, GOV, eventually, start_link
from nodefixtures import make_bill
from test_centre import PAID, PARTLY, UNPAID, Centre, Chain, centre_settings  # noqa: F401

import outbox
from edge import mirror
from edge.web.cashier import MAX_AMOUNT
from sync.centre.app import create_app
from sync.centre.config import CentreSettings

MAX = 2**63 - 1
pytestmark = pytest.mark.both_stores
Start = Callable[..., Any]


@pytest.fixture
async def start(centre_settings: CentreSettings) -> AsyncIterator[Start]:  # noqa: F811
    """Start the centre with changed limits: `max_credit` for [centre], `node` for [nodes.dam-1]."""
    servers: list[TestServer] = []
    session = aiohttp.ClientSession()

    async def run(node: dict[str, Any] | None = None, **centre: Any) -> Centre:
        nodes = dict(centre_settings.nodes)
        nodes["dam-1"] = dataclasses.replace(nodes["dam-1"], **(node or {}))
        settings = dataclasses.replace(centre_settings, nodes=nodes, **centre)
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Centre(server, session, settings)

    yield run
    await session.close()
    for server in servers:
        await server.close()


async def credits(centre: Centre) -> list[tuple[Any, ...]]:
    return await centre.db.query("SELECT account, amount FROM credits ORDER BY id")


def verdicts(reply: Any) -> list[tuple[str, str | None]]:
    return [(r.verdict, r.reason) for r in reply.results]


async def test_more_than_the_bill_is_implausible_and_changes_nothing(start: Start) -> None:
    centre = await start()
    chain = Chain()
    chain.pay(UNPAID, 100_001)  # the bill is 100,000
    chain.pay(UNPAID, MAX)
    chain.pay(PAID, MAX)  # fully paid: once all of it would have become credit
    chain.pay(UNPAID, 100_000)  # exactly the bill: fine
    reply = await centre.send(chain.entries)
    assert verdicts(reply) == [("rejected", "amount_implausible")] * 3 + [("applied", None)]
    assert reply.acked_seq == 4
    assert ((await centre.bill(UNPAID))["paid"], (await centre.bill(PAID))["version"]) == (
        100_000,
        1,
    )
    assert await credits(centre) == []
    assert [r[5] for r in (await centre.ledger())] == ["rejected"] * 3 + ["applied"]
    # A resend stays rejected, with its reason, so the node keeps it for an operator.
    again = await centre.send(chain.entries[:3])
    assert verdicts(again) == [("rejected", "amount_implausible")] * 3


async def test_overpayment_is_credited_by_default_and_within_the_cap(start: Start) -> None:
    default = await start()
    chain = Chain()
    chain.pay(PARTLY, 60_000)  # 50,000 due: 10,000 credit
    chain.pay(PAID, 50_000)  # paid online meanwhile: all of it credit
    assert verdicts(await default.send(chain.entries)) == [("applied", None), ("credited", None)]
    assert await credits(default) == [(PARTLY, 10_000), (PAID, 50_000)]


async def test_credit_beyond_the_cap_is_refused_whole(start: Start) -> None:
    centre = await start(max_credit=10_000)
    chain = Chain()
    chain.pay(PAID, 10_001)  # all would be credit: over the cap
    chain.pay(PARTLY, 60_001)  # 50,000 due, 10,001 credit: over, and nothing applied
    chain.pay(PARTLY, 60_000)  # 10,000 credit: at the cap
    chain.pay(PAID, 10_000)
    reply = await centre.send(chain.entries)
    assert verdicts(reply) == [
        ("rejected", "credit_over_cap"), ("rejected", "credit_over_cap"),
        ("applied", None), ("credited", None),
    ]  # fmt: skip
    assert await credits(centre) == [(PARTLY, 10_000), (PAID, 10_000)]
    assert (await centre.bill(PARTLY))["paid"] == 80_000


async def test_per_node_ceiling_and_credit_override(start: Start) -> None:
    centre = await start(node={"max_payment": 20_000, "max_credit": 0}, max_credit=10**9)
    chain = Chain()
    chain.pay(UNPAID, 20_001)
    chain.pay(UNPAID, 20_000)
    chain.pay(PAID, 1)  # the node's own cap of 0: no credit at all from dam-1
    reply = await centre.send(chain.entries)
    assert verdicts(reply) == [
        ("rejected", "amount_implausible"), ("applied", None), ("rejected", "credit_over_cap"),
    ]  # fmt: skip
    assert await credits(centre) == []


async def test_a_node_keeps_an_implausible_payment_counted_and_listed(tmp_path: Path) -> None:
    # The node's mirror holds a forged, huge bill (as a fake centre could have fed it): the
    # node takes its own maximum on it, the real centre rejects it and records no credit.
    link, close = await start_link(tmp_path, centre_pull_interval_s=60.0)
    try:
        rn = link.node
        bill_id = f"{GOV}-{CYCLE}-{ACCOUNTS[0]}"

        async def bootstrapped() -> bool:
            return rn.node.db.read(mirror.state).bills == len(ACCOUNTS)

        await eventually(bootstrapped, what="the mirror")
        forged = make_bill(ACCOUNTS[0], CYCLE, amount=MAX_AMOUNT, version=99)
        now = time.time()
        await rn.node.db.write(lambda c: mirror.apply_changes(c, [forged], None, now=now))
        async with rn.session.post(
            f"{rn.url}/v1/payments",
            json={"bill_id": bill_id, "amount": MAX_AMOUNT, "method": "cash", "cashier": "huda"},
            headers=rn.headers(**{"Idempotency-Key": "huge"}),
        ) as resp:
            assert resp.status == 201, await resp.text()

        async def settled() -> bool:
            return rn.node.db.read(outbox.stats).rejected == 1

        await eventually(settled, what="the centre's verdict")
        async with rn.session.get(f"{rn.url}/v1/admin/rejected", headers=rn.headers("admin")) as r:
            listed = (await r.json())["entries"]
        assert [(p["amount"], p["reason"]) for p in listed] == [(MAX_AMOUNT, "amount_implausible")]
        async with rn.session.get(f"{rn.url}/v1/bills/{bill_id}", headers=rn.headers()) as r:
            shown = await r.json()
        assert shown["due"] == 0  # money taken stays counted at the node
        assert await link.centre.bill(bill_id) == (0, 1)
        assert await link.centre.db.query("SELECT COUNT(*) FROM credits") == [(0,)]
    finally:
        await close()
