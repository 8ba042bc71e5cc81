"""Finding payments on a real node: GET /v1/payments by each filter, paging while payments
arrive, GET /v1/payments/by-receipt/{receipt}, channel scoping, and bad filters."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import make_bill
from nodefixtures import RunningNode, start_node

import outbox
from edge import tokens

NOON = 1_780_315_200.0  # 2026-06-01 12:00 UTC, 15:00 in Damascus
DAY = 86_400.0
ACCOUNTS = ("0100000001", "0100000002", "0100000003")


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> float:
        return self.now


@dataclass
class Counter:
    rn: RunningNode
    clock: Clock
    keys: itertools.count[int]

    async def pay(self, who: str, account: str, amount: int = 100, cashier: str = "huda",
                  cycle: str = "2026-05") -> dict[str, Any]:  # fmt: skip
        body = {"bill_id": f"DAM-{cycle}-{account}", "amount": amount, "method": "cash",
                "cashier": cashier}  # fmt: skip
        headers = self.rn.headers(who, **{"Idempotency-Key": f"k{next(self.keys)}"})
        async with self.rn.session.post(f"{self.rn.url}/v1/payments", json=body,
                                        headers=headers) as resp:  # fmt: skip
            assert resp.status == 201, await resp.text()
            doc: dict[str, Any] = await resp.json()
            return doc

    async def get(self, path: str, who: str = "auditor") -> tuple[int, Any]:
        headers = self.rn.headers(who) if who else {}
        async with self.rn.session.get(self.rn.url + path, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ids(self, query: str, who: str = "auditor") -> list[str]:
        status, doc = await self.get(f"/v1/payments?{query}", who)
        assert status == 200, doc
        return [item["payment_id"] for item in doc["items"]]


@pytest.fixture
async def counter(tmp_path: Path) -> AsyncIterator[Counter]:
    tokens_file = tmp_path / "tokens.toml"
    # start_node adds counter-1, kiosk-1, ops, counter-2 ("cashier2") and audit-1 ("auditor").
    extra = {"payonly": tokens.add_token(tokens_file, "till-9", ["pay"])}
    clock = Clock()
    bills = [make_bill(a, c, amount=10**9) for a in ACCOUNTS for c in ("2026-03", "2026-05")]
    runner, rn = await start_node(tmp_path, bills, clock=clock)
    rn.tokens.update(extra)
    try:
        yield Counter(rn, clock, itertools.count())
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_find_by_each_filter(counter: Counter) -> None:
    c = counter
    taken = []
    for day in range(2):
        c.clock.now = NOON + day * DAY
        for i, account in enumerate(ACCOUNTS):
            taken.append(await c.pay("cashier", account, cashier=f"c{i % 2}", cycle="2026-05"))
            taken.append(await c.pay("cashier2", account, cashier="rami", cycle="2026-03"))
    by_id = {p["payment_id"]: p for p in taken}
    newest_first = [p["payment_id"] for p in reversed(taken)]

    def expect(pred: Any) -> list[str]:
        return [i for i in newest_first if pred(by_id[i])]

    assert await c.ids("limit=500") == newest_first
    assert await c.ids(f"account={ACCOUNTS[1]}") == expect(lambda p: p["account"] == ACCOUNTS[1])
    bill = f"DAM-2026-03-{ACCOUNTS[2]}"
    assert await c.ids(f"bill_id={bill}") == expect(lambda p: p["bill_id"] == bill)
    assert await c.ids("cashier=c1") == [
        i for i in newest_first if by_id[i]["bill_id"].startswith("DAM-2026-05")
        and i in {p["payment_id"] for p in taken[2::6]}  # the second account's, each day
    ]  # fmt: skip
    assert len(await c.ids("cashier=rami")) == 6
    first_day = {p["payment_id"] for p in taken[:6]}
    assert await c.ids("day=2026-06-01") == [i for i in newest_first if i in first_day]
    assert await c.ids("day=2026-06-02") == [i for i in newest_first if i not in first_day]
    assert await c.ids("day=2026-06-03") == []
    receipt = taken[4]["receipt"]
    assert await c.ids(f"receipt={receipt}") == [taken[4]["payment_id"]]
    # Filters combine.
    assert await c.ids(f"day=2026-06-02&account={ACCOUNTS[0]}&cashier=rami") == [
        taken[7]["payment_id"]
    ]

    # States, as the centre settles them (the replayer's own settle, through the writer).
    verdicts = {0: "applied", 1: "credited", 2: "rejected", 3: "duplicate"}
    results = [
        outbox.Result(seq, by_id[newest_first[-1 - n]]["payment_id"], verdict,
                      reason="credited" if verdict == "duplicate" else None)
        for n, verdict in verdicts.items()
        for seq in [n + 1]
    ]  # fmt: skip
    await c.rn.node.db.write(lambda conn: outbox.settle(conn, results))
    ids = [p["payment_id"] for p in taken]
    assert await c.ids("state=synced") == [ids[0]]
    assert await c.ids("state=credited") == [ids[3], ids[1]]  # a duplicate of a credit too
    assert await c.ids("state=rejected") == [ids[2]]
    assert await c.ids("state=pending_sync") == newest_first[:-4]
    # Each item is the document GET /v1/payments/{id} answers.
    status, page = await c.get(f"/v1/payments?receipt={taken[1]['receipt']}")
    one_status, one = await c.get(f"/v1/payments/{ids[1]}", "cashier2")
    assert (status, one_status) == (200, 200)
    assert page == {"items": [one], "next": None}
    assert one["state"] == "credited" and one["receipt"] == taken[1]["receipt"]


async def test_pages_have_no_duplicate_and_no_gap_while_payments_arrive(counter: Counter) -> None:
    c = counter
    for n in range(23):
        await c.pay("cashier", ACCOUNTS[n % 3])
    status, doc = await c.get("/v1/payments?limit=5")
    assert status == 200
    seen = [i["payment_id"] for i in doc["items"]]
    top = doc["items"][0]["seq"]
    pages = 1
    while doc["next"] is not None:
        # Two cashiers keep paying between pages.
        await asyncio.gather(c.pay("cashier", ACCOUNTS[0]), c.pay("cashier2", ACCOUNTS[1]))
        status, doc = await c.get(f"/v1/payments?limit=5&after={doc['next']}")
        assert status == 200
        seen += [i["payment_id"] for i in doc["items"]]
        pages += 1
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    seqs = c.rn.node.db.read(
        lambda conn: dict(conn.execute("SELECT o.id, o.seq FROM outbox_entries o").fetchall())
    )
    assert [seqs[i] for i in seen] == list(range(top, 0, -1))  # newest first, nothing skipped
    status, doc = await c.get("/v1/payments?limit=500")
    assert len(doc["items"]) == 23 + 2 * 4 and doc["next"] is None


async def test_a_token_sees_only_its_own_channels_payments(counter: Counter) -> None:
    c = counter
    mine = await c.pay("cashier", ACCOUNTS[0])
    theirs = await c.pay("cashier2", ACCOUNTS[0])
    assert await c.ids("", "cashier") == [mine["payment_id"]]
    assert await c.ids("", "cashier2") == [theirs["payment_id"]]
    assert await c.ids(f"account={ACCOUNTS[0]}", "cashier") == [mine["payment_id"]]
    assert await c.ids(f"receipt={theirs['receipt']}", "cashier") == []
    assert await c.ids("", "viewer") == []  # kiosk-1 took nothing
    assert await c.ids("", "auditor") == [theirs["payment_id"], mine["payment_id"]]
    status, doc = await c.get(f"/v1/payments/by-receipt/{theirs['receipt']}", "cashier")
    assert (status, doc["code"]) == (404, "unknown_payment")
    status, doc = await c.get(f"/v1/payments/by-receipt/{theirs['receipt']}", "cashier2")
    assert status == 200 and doc["payment_id"] == theirs["payment_id"]
    status, doc = await c.get(f"/v1/payments/by-receipt/{mine['receipt']}", "auditor")
    assert status == 200 and doc["channel"] == "counter-1"
    # A till with only `pay` finds what it took, and nothing else; no token is 401.
    till = await c.pay("payonly", ACCOUNTS[1])
    assert await c.ids("", "payonly") == [till["payment_id"]]
    status, doc = await c.get(f"/v1/payments/by-receipt/{mine['receipt']}", "payonly")
    assert (status, doc["code"]) == (404, "unknown_payment")
    status, doc = await c.get(f"/v1/payments/by-receipt/{till['receipt']}", "payonly")
    assert status == 200 and doc["channel"] == "till-9"
    # `admin` runs the node and implies nothing: it finds no payment at all.
    status, doc = await c.get("/v1/payments", "admin")
    assert (status, doc["code"]) == (403, "forbidden")
    status, doc = await c.get(f"/v1/payments/by-receipt/{mine['receipt']}", "admin")
    assert (status, doc["code"]) == (403, "forbidden")
    status, doc = await c.get("/v1/payments", "")
    assert (status, doc["code"]) == (401, "unauthorized")


async def test_by_receipt_takes_both_forms_and_answers_404_for_an_unknown_one(
    counter: Counter,
) -> None:
    c = counter
    paid = await c.pay("cashier", ACCOUNTS[0])
    status, doc = await c.get(f"/v1/payments/by-receipt/{paid['receipt']}")
    assert status == 200 and doc["payment_id"] == paid["payment_id"]
    gov, code, day, n = paid["receipt"].split("-")
    assert (gov, code) == ("DAM", "DAM1")
    # The same number in the form printed before node codes is another receipt.
    for unknown in (f"DAM-{day}-{n}", f"DAM-DAM1-{day}-999999", f"DAM-DAM2-{day}-{n}",
                    f"ALE-X-{day}-000001"):  # fmt: skip
        status, doc = await c.get(f"/v1/payments/by-receipt/{unknown}")
        assert (status, doc["code"]) == (404, "unknown_payment"), unknown
    # A payment printed before node codes existed keeps its number, and is found by it.
    older = await c.pay("cashier", ACCOUNTS[1])
    old_form = older["receipt"].replace("DAM-DAM1-", "DAM-", 1)
    await c.rn.node.db.write(lambda conn: conn.execute(
        "UPDATE payments SET receipt = ? WHERE receipt = ?", (old_form, older["receipt"])))  # fmt: skip
    status, doc = await c.get(f"/v1/payments/by-receipt/{old_form}")
    assert status == 200 and doc["payment_id"] == older["payment_id"]
    assert await c.ids(f"receipt={old_form}") == [older["payment_id"]]
    assert await c.ids(f"day={day[:4]}-{day[4:6]}-{day[6:]}") == [older["payment_id"],
                                                                  paid["payment_id"]]  # fmt: skip


@pytest.mark.parametrize(
    "query",
    ["receipt=DAM-1-2", "account=12x", "bill_id=nope", "cashier=", "day=2026-13-01",
     "day=yesterday", "state=pending", "limit=0", "limit=501", "limit=ten", "after=-1",
     "after=abc", "colour=red", "state=synced&state=rejected", "cashier=%07bell"],
)  # fmt: skip
async def test_bad_filters_are_400_invalid_query(counter: Counter, query: str) -> None:
    status, doc = await counter.get(f"/v1/payments?{query}")
    assert status == 400, doc
    assert doc["code"] == "invalid_query" and doc["title_ar"]
    assert doc["detail"].split(":")[0] in query


@pytest.mark.parametrize(
    "receipt", ["DAM-20261301", "dam-20261201-000001", "DAM-TOOLONGCODE-20261201-000001",
                "DAM-20261201-1", "%F0%9F%92%B0"],
)  # fmt: skip
async def test_a_malformed_receipt_is_400_invalid_receipt(counter: Counter, receipt: str) -> None:
    status, doc = await counter.get(f"/v1/payments/by-receipt/{receipt}")
    assert (status, doc["code"]) == (400, "invalid_receipt")
