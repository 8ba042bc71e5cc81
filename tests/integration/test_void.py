"""Voiding a payment (POST /v1/payments/{id}/void) on a real node, and with a real centre.

Before delivery the centre gets the payment and its void in chain order and counts each
once; after delivery it reverses the payment, and the node's inquiry shows the money due
again at once, before the centre's reversed bill arrives. Refusals write nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link
from nodefixtures import RunningNode, make_bill, start_node

import outbox
from edge import mirror, tokens

pytestmark = pytest.mark.both_stores

BILL = f"{GOV}-{CYCLE}-{ACCOUNTS[0]}"  # 100,000 piastres at the centre, nothing paid


def supervisor(tmp_path: Path) -> str:
    """A `supervise` token in the tokens file start_node will add its own tokens to."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return tokens.add_token(tmp_path / "tokens.toml", "super-1", ["supervise"])


async def call(
    rn: RunningNode, method: str, path: str, who: str, body: Any = None, key: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    headers = rn.headers(who, **({"Idempotency-Key": key} if key else {}))
    async with rn.session.request(method, rn.url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def pay(rn: RunningNode, amount: int, key: str, bill_id: str = BILL) -> str:
    body = {"bill_id": bill_id, "amount": amount, "method": "cash", "cashier": "huda"}
    status, doc, _ = await call(rn, "POST", "/v1/payments", "cashier", body, key)
    assert status == 201, doc
    return str(doc["payment_id"])


async def void(rn: RunningNode, pid: str, key: str, who: str = "supervisor") -> tuple[int, Any]:
    status, doc, _ = await call(
        rn, "POST", f"/v1/payments/{pid}/void", who, {"reason": "مبلغ خاطئ"}, key
    )
    return status, doc


async def shown(rn: RunningNode, bill_id: str = BILL) -> tuple[int, int, int]:
    """(due, pending_local, version) as an inquiry shows the bill."""
    status, doc, _ = await call(rn, "GET", f"/v1/bills/{bill_id}", "cashier")
    assert status == 200, doc
    return doc["due"], doc["pending_local"], doc["version"]


def counts(rn: RunningNode) -> tuple[int, ...]:
    actions = rn.node.db.read(
        lambda c: c.execute("SELECT COUNT(*) FROM payment_actions").fetchone()
    )
    return (*rn.db_counts(), int(actions[0]))


async def linked(tmp_path: Path, **over: Any) -> tuple[Link, Any]:
    token = supervisor(tmp_path / "node")
    link, close = await start_link(tmp_path, **over)
    link.node.tokens["supervisor"] = token

    async def bootstrapped() -> bool:
        return link.node.node.db.read(mirror.state).bills == len(ACCOUNTS)

    await eventually(bootstrapped, what="the mirror's bootstrap")
    return link, close


async def mirror_at(rn: RunningNode, version: int) -> None:
    async def there() -> bool:
        return (await shown(rn))[2] >= version

    await eventually(there, what=f"the mirror holding {BILL} at version {version}")


def states(rn: RunningNode) -> list[str]:
    return [e.state for e in rn.node.db.read(lambda c: list(outbox.iter_entries(c)))]


async def test_a_void_before_delivery_is_delivered_then_reversed_each_once(tmp_path: Path) -> None:
    link, close = await linked(tmp_path)
    rn = link.node
    try:
        link.proxy.mode = "refuse"  # the centre out of reach: both stay pending
        pid = await pay(rn, 30_000, "p1")
        assert await shown(rn) == (70_000, 30_000, 1)
        status, doc = await void(rn, pid, "v1")
        assert status == 200, doc
        assert doc["state"] == "voided" and doc["void"]["by"] == "super-1"
        assert doc["void"]["reason"] == "مبلغ خاطئ" and doc["void"]["state"] == "pending_sync"
        assert await shown(rn) == (100_000, 0, 1)  # the money is the bill's again at once
        # The centre records the batch, its answer is lost, the node sends it again.
        link.proxy.mode = "drop_reply"
        await eventually(lambda: link.proxy.replies_dropped >= 1, what="a lost reply")
        link.proxy.mode = "pass"
        await eventually(lambda: states(rn) == ["delivered", "delivered"], what="delivery")
        rows = await link.centre.ledger()
        assert [(r[0], r[4], r[5]) for r in rows] == [
            (pid, 30_000, "applied"), (doc["void"]["entry_id"], 30_000, "reversed"),
        ]  # fmt: skip
        assert await link.centre.bill(BILL) == (0, 3)  # paid, then reversed: back as before
        await mirror_at(rn, 3)
        assert await shown(rn) == (100_000, 0, 3)
        status, after, _ = await call(rn, "GET", f"/v1/payments/{pid}", "supervisor")
        assert after["state"] == "voided" and after["void"]["state"] == "synced"
        assert after["verdict"]["verdict"] in ("applied", "duplicate")
        assert len(await link.centre.ledger()) == 2
    finally:
        await close()


async def test_a_void_after_delivery_gives_the_money_back_at_once(tmp_path: Path) -> None:
    link, close = await linked(tmp_path)
    rn = link.node
    try:
        pid = await pay(rn, 30_000, "p1")
        await mirror_at(rn, 2)
        assert await shown(rn) == (70_000, 0, 2)  # the centre's bill holds it now
        link.proxy.mode = "drop_reply"  # the void reaches the centre, its answer does not
        status, doc = await void(rn, pid, "v1")
        assert status == 200, doc
        # The mirror's paid still holds the payment: the overlay gives it back.
        assert await shown(rn) == (100_000, -30_000, 2)
        await eventually(lambda: link.proxy.replies_dropped >= 1, what="a lost reply")
        assert await link.centre.bill(BILL) == (0, 3)
        assert await shown(rn) == (100_000, -30_000, 2)  # until the node hears of it
        link.proxy.mode = "pass"
        await eventually(lambda: states(rn) == ["delivered", "delivered"], what="delivery")
        await mirror_at(rn, 3)
        assert await shown(rn) == (100_000, 0, 3)
        rows = await link.centre.ledger()
        assert [(r[4], r[5]) for r in rows] == [(30_000, "applied"), (30_000, "reversed")]
        assert await link.centre.bill(BILL) == (0, 3)  # the resent void changed nothing
    finally:
        await close()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_refused_voids_write_nothing(tmp_path: Path) -> None:
    token = supervisor(tmp_path)
    clock = Clock()
    runner, rn = await start_node(tmp_path, [make_bill(amount=100_000)], clock=clock)
    rn.tokens["supervisor"] = token
    bill_id = make_bill()["bill_id"]
    try:
        pid = await pay(rn, 10_000, "p1", bill_id)
        before = counts(rn)
        # A counter's token cannot void, not even its own payment; an admin's cannot either.
        for who in ("cashier", "admin", "auditor"):
            assert (await void(rn, pid, "v0", who))[0] == 403
        status, doc, _ = await call(rn, "POST", f"/v1/payments/{pid}/void", "supervisor",
                                    {"reason": "x"})  # fmt: skip
        assert (status, doc["code"]) == (400, "idempotency_key_required")
        for body in ({}, {"reason": ""}, {"reason": "a\u202eb"}, {"reason": "x", "by": "me"}):
            status, doc, _ = await call(
                rn, "POST", f"/v1/payments/{pid}/void", "supervisor", body, "v0"
            )
            assert status in (400, 422), (body, doc)
        assert counts(rn) == before
        status, first = await void(rn, pid, "v1")
        assert status == 200, first
        after_void = counts(rn)
        assert after_void[0] == before[0] + 1 and after_void[4] == before[4] + 1
        status, _, headers = await call(rn, "POST", f"/v1/payments/{pid}/void", "supervisor",
                                        {"reason": "مبلغ خاطئ"}, "v1")  # fmt: skip
        assert status == 200 and headers.get("Idempotent-Replayed") == "true"
        assert counts(rn) == after_void
        # A second void, and a void of the void itself.
        assert (await void(rn, pid, "v2"))[1]["code"] == "already_voided"
        status, doc = await void(rn, first["void"]["entry_id"], "v3")
        assert (status, doc["code"]) == (409, "already_voided")
        # The window: 24 h by default, on the node's clock.
        late = await pay(rn, 10_000, "p2", bill_id)
        clock.now += 24 * 3600 + 1
        status, doc = await void(rn, late, "v4")
        assert (status, doc["code"]) == (409, "void_window_passed"), doc
        # A payment the centre rejected is resolved, not voided.
        entry = rn.node.db.read(lambda c: outbox.get(c, late))
        assert entry is not None
        result = outbox.Result(entry.seq, late, "rejected", "unknown_bill")
        await rn.node.db.write(lambda c: outbox.settle(c, [result]))
        clock.now -= 24 * 3600
        status, doc = await void(rn, late, "v5")
        assert (status, doc["code"]) == (409, "payment_rejected"), doc
        unknown = late[:-4] + "ZZZZ"
        assert (await void(rn, unknown, "v6"))[0] == 404
        assert counts(rn)[0] == after_void[0] + 1  # only the second payment since
        assert counts(rn)[4] == after_void[4]
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_every_void_and_resolution_is_in_the_audit_trail(tmp_path: Path) -> None:
    token = supervisor(tmp_path)
    runner, rn = await start_node(tmp_path, [make_bill(amount=100_000)])
    rn.tokens["supervisor"] = token
    bill_id, account = make_bill()["bill_id"], make_bill()["account"]
    try:
        voided = await pay(rn, 10_000, "p1", bill_id)
        assert (await void(rn, voided, "v1"))[0] == 200
        assert (await void(rn, voided, "v2"))[0] == 409
        rejected = await pay(rn, 10_000, "p2", bill_id)
        entry = rn.node.db.read(lambda c: outbox.get(c, rejected))
        assert entry is not None
        result = outbox.Result(entry.seq, rejected, "rejected", "unknown_bill")
        await rn.node.db.write(lambda c: outbox.settle(c, [result]))
        path = f"/v1/admin/rejected/{rejected}/resolve"
        status, _, _ = await call(
            rn, "POST", path, "admin", {"action": "refund", "reason": "r"}, "r1"
        )
        assert status == 200
        status, _, _ = await call(
            rn, "POST", path, "admin", {"action": "refund", "reason": "r"}, "r2"
        )
        assert status == 409

        async def trail() -> list[tuple[Any, ...]]:
            status, doc, _ = await call(rn, "GET", "/v1/audit?since=2000-01-01", "auditor")
            assert status == 200, doc
            rows = [
                (e["action"], e["token"], e["object"], e["account"], e["status"])
                for e in doc["entries"]
                if e["action"].startswith(("payment.void", "admin.rej"))
            ]
            return rows if len(rows) == 4 else []

        assert await eventually(trail, what="the corrections in the audit trail") == [
            ("payment.void", "super-1", voided, account, 200),
            ("payment.void", "super-1", voided, None, 409),
            ("admin.rejected.refund", "ops", rejected, account, 200),
            ("admin.rejected.refund", "ops", rejected, None, 409),
        ]
    finally:
        await rn.session.close()
        await runner.cleanup()
