"""Resolving rejected payments (POST /v1/admin/rejected/{id}/resolve), node and real centre.

Two payments are taken on a bill the centre does not know (a mirror row it never sent), so
the centre rejects both: one is refunded (the cash went back), the other retargeted to the
right bill. The node's overlay frees the wrong bill at once, and the centre's ledger and
the node agree on every entry.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, eventually
from nodefixtures import make_bill
from test_void import call, linked, pay, shown

import outbox
from edge import mirror

pytestmark = pytest.mark.both_stores

WRONG = f"{GOV}-{CYCLE}-0999999999"  # in the node's mirror only: the centre rejects it
RIGHT = f"{GOV}-{CYCLE}-{ACCOUNTS[1]}"


async def resolve(rn: Any, pid: str, key: str, who: str = "admin", **body: Any) -> Any:
    body.setdefault("reason", "أعيد المبلغ")
    return await call(rn, "POST", f"/v1/admin/rejected/{pid}/resolve", who, body, key)


async def test_refund_and_retarget_agree_with_the_centre(tmp_path: Path) -> None:
    link, close = await linked(tmp_path)
    rn = link.node
    try:
        wrong = make_bill("0999999999", amount=100_000, version=1)
        await rn.node.db.write(lambda c: mirror.apply_changes(c, [wrong], None, now=time.time()))
        refunded = await pay(rn, 20_000, "p1", WRONG)
        moved = await pay(rn, 30_000, "p2", WRONG)

        async def rejected() -> bool:
            return rn.node.db.read(outbox.stats).rejected == 2

        await eventually(rejected, what="the centre's rejections")
        assert (await shown(rn, WRONG))[:2] == (50_000, 50_000)  # money taken stays counted
        status, listed, _ = await call(rn, "GET", "/v1/admin/rejected", "admin")
        assert (listed["total"], listed["unresolved"]) == (2, 2)
        assert await unresolved_gauge(rn) == 2.0

        # Scopes: a counter or a supervisor cannot resolve.
        for who in ("cashier", "supervisor", "auditor"):
            assert (await resolve(rn, refunded, "r0", who, action="refund"))[0] == 403
        status, doc, _ = await resolve(rn, refunded, "r1", action="refund")
        assert status == 200, doc
        assert doc["payment"]["state"] == "refunded" and doc["new_payment"] is None
        assert doc["payment"]["resolution"]["action"] == "refund"
        assert (await shown(rn, WRONG))[:2] == (70_000, 30_000)  # freed at once
        again = await resolve(rn, refunded, "r1", action="refund")
        assert again[0] == 200 and again[2].get("Idempotent-Replayed") == "true"
        status, doc, _ = await resolve(rn, refunded, "r2", action="retarget", bill_id=RIGHT)
        assert (status, doc["code"]) == (409, "already_resolved")

        status, doc, _ = await resolve(rn, moved, "r3", action="retarget", bill_id=RIGHT)
        assert status == 200, doc
        new = doc["new_payment"]
        assert doc["payment"]["state"] == "retargeted"
        assert (new["bill_id"], new["amount"], new["channel"]) == (RIGHT, 30_000, "counter-1")
        assert (await shown(rn, WRONG))[:2] == (100_000, 0)
        assert (await shown(rn, RIGHT))[:2] == (70_000, 30_000)
        status, listed, _ = await call(rn, "GET", "/v1/admin/rejected", "admin")
        assert (listed["total"], listed["unresolved"]) == (2, 0)
        assert await unresolved_gauge(rn) == 0.0
        # A payment that was not rejected is not resolved.
        status, doc, _ = await resolve(rn, new["payment_id"], "r4", action="refund")
        assert (status, doc["code"]) == (409, "not_rejected")

        async def delivered() -> bool:
            return rn.node.db.read(outbox.stats).pending == 0

        await eventually(delivered, what="the resolutions' delivery")
        rows = await link.centre.ledger()
        assert [(r[0], r[3], r[4], r[5]) for r in rows] == [
            (refunded, WRONG, 20_000, "rejected"),
            (moved, WRONG, 30_000, "rejected"),
            (doc_entry(rn, refunded), WRONG, 20_000, "refunded"),
            (new["payment_id"], RIGHT, 30_000, "applied"),
        ]
        assert await link.centre.bill(RIGHT) == (30_000, 2)

        async def pulled() -> bool:
            return (await shown(rn, RIGHT))[2] == 2

        await eventually(pulled, what="the retargeted bill's new version at the node")
        assert (await shown(rn, RIGHT))[:2] == (70_000, 0)
        status, now_new, _ = await call(rn, "GET", f"/v1/payments/{new['payment_id']}", "auditor")
        assert now_new["state"] == "synced"
    finally:
        await close()


async def unresolved_gauge(rn: Any) -> float:
    async with rn.session.get(rn.url + "/metrics") as resp:  # no token: an operational view
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("edge_outbox_unresolved ")]
    return float(line.split()[1])


def doc_entry(rn: Any, pid: str) -> str:
    found = rn.node.db.read(
        lambda c: c.execute(
            "SELECT o.id FROM payment_actions a JOIN outbox_entries o ON o.seq = a.seq"
            " JOIN outbox_entries t ON t.seq = a.target WHERE t.id = ?",
            (pid,),
        ).fetchone()
    )
    return str(found[0])


async def test_resolve_refuses_bad_bodies_and_writes_nothing(tmp_path: Path) -> None:
    link, close = await linked(tmp_path)
    rn = link.node
    try:
        pid = await pay(rn, 20_000, "p1", f"{GOV}-{CYCLE}-{ACCOUNTS[0]}")

        async def delivered() -> bool:
            return rn.node.db.read(outbox.stats).pending == 0

        await eventually(delivered, what="delivery")
        before = rn.db_counts()
        for body in ({"action": "burn"}, {"action": {}}, {"action": ["refund"]},
                     {"action": "retarget"}, {"action": "refund", "reason": 5},
                     {"action": "retarget", "bill_id": "nope"},
                     {"action": "refund", "bill_id": RIGHT}, {"action": "refund", "reason": ""},
                     {"action": "refund", "extra": 1}):  # fmt: skip
            status, doc, _ = await resolve(rn, pid, "k", **body)
            assert status in (400, 422), (body, doc)
        status, doc, _ = await resolve(rn, pid, "k", action="refund")
        assert (status, doc["code"]) == (409, "not_rejected")
        assert rn.db_counts() == before
    finally:
        await close()
