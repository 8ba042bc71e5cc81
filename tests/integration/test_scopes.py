"""Scopes without surprises and the token lifecycle, against a real node on loopback.

`admin` runs the node but neither pays nor inquires; a counter reads only its own
channel's payments (another's answers like an unknown id); `audit` reads every payment;
a revoked or expired token is refused like an unknown one; each token's last use is kept.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from centrefixtures import Link
from helpers import eventually, make_bill
from nodefixtures import RunningNode, start_node

from edge import lastused, tokens
from edge.db import DB_NAME

BILL = "DAM-2026-05-0100234567"


async def call(rn: RunningNode, method: str, path: str, who: str, **kw: Any) -> tuple[int, Any]:
    async with rn.session.request(method, rn.url + path, headers=rn.headers(who), **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def pay(rn: RunningNode, who: str, key: str, amount: int = 1_000) -> tuple[int, Any]:
    body = {"bill_id": BILL, "amount": amount, "method": "cash", "cashier": "rami"}
    async with rn.session.post(
        f"{rn.url}/v1/payments", json=body, headers=rn.headers(who, **{"Idempotency-Key": key})
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_admin_only_token_cannot_pay_or_inquire(running: RunningNode) -> None:
    status, body = await pay(running, "admin", "admin-pays")
    assert (status, body["code"]) == (403, "forbidden")
    for path in ("/v1/accounts/0100234567/bills", f"/v1/bills/{BILL}"):
        status, body = await call(running, "GET", path, "admin")
        assert (status, body["code"]) == (403, "forbidden"), path
    assert running.db_counts()[:2] == (0, 0)  # nothing was taken


async def test_admin_only_token_still_replays(link: Link) -> None:
    status, body = await call(link.node, "POST", "/v1/admin/replay", "admin")
    assert status == 202 and body["triggered"] is True
    status, body = await call(link.node, "GET", "/v1/admin/rejected", "admin")
    assert status == 200 and body["total"] == 0


async def test_pay_token_reads_only_its_own_channels_payments(running: RunningNode) -> None:
    status, mine = await pay(running, "cashier", "a-1")
    assert status == 201
    status, theirs = await pay(running, "cashier2", "b-1")
    assert status == 201
    own = f"/v1/payments/{mine['payment_id']}"
    other = f"/v1/payments/{theirs['payment_id']}"
    status, got = await call(running, "GET", own, "cashier")
    assert status == 200 and got["channel"] == "counter-1"
    # Another channel's payment is answered exactly like an id never issued: no oracle.
    status, refused = await call(running, "GET", other, "cashier")
    unknown = mine["payment_id"][:-1] + ("0" if mine["payment_id"][-1] != "0" else "1")
    status2, never = await call(running, "GET", f"/v1/payments/{unknown}", "cashier")
    assert (status, refused["code"]) == (status2, never["code"]) == (404, "unknown_payment")
    assert refused["detail"].replace(theirs["payment_id"], "X") == never["detail"].replace(
        unknown, "X"
    )
    status, got = await call(running, "GET", other, "cashier2")
    assert status == 200 and got["channel"] == "counter-2"
    # An inquire-only kiosk took no payments, so it reads none.
    assert (await call(running, "GET", own, "viewer"))[0] == 404


async def test_audit_token_reads_every_channels_payments(running: RunningNode) -> None:
    ids = []
    for who in ("cashier", "cashier2"):
        status, body = await pay(running, who, f"{who}-k")
        assert status == 201
        ids.append(body["payment_id"])
    for payment_id, channel in zip(ids, ("counter-1", "counter-2"), strict=True):
        status, got = await call(running, "GET", f"/v1/payments/{payment_id}", "auditor")
        assert status == 200 and got["channel"] == channel
    # audit reads; it does not take money or run the node.
    assert (await pay(running, "auditor", "audit-pays"))[0] == 403
    assert (await call(running, "GET", "/v1/admin/rejected", "auditor"))[0] == 403
    # admin does not read payments.
    assert (await call(running, "GET", f"/v1/payments/{ids[0]}", "admin"))[0] == 403


async def test_revoked_token_is_refused_within_two_seconds(running: RunningNode) -> None:
    path = f"/v1/bills/{BILL}"
    assert (await call(running, "GET", path, "cashier"))[0] == 200
    revoked = time.monotonic()
    tokens.revoke_token(running.node.tokens.path, "counter-1")

    async def refused() -> bool:
        return (await call(running, "GET", path, "cashier"))[0] == 401

    await eventually(refused, timeout=2.5, what="the revoked token to get 401")
    assert time.monotonic() - revoked <= 2.5
    status, body = await call(running, "GET", path, "cashier")
    assert (status, body["code"]) == (401, "unauthorized")
    assert (await call(running, "GET", path, "cashier2"))[0] == 200  # the others still work


async def test_expired_token_gets_401_like_an_unknown_one(tmp_path: Path) -> None:
    now = [time.time()]
    tokens_file = tmp_path / "tokens.toml"
    short = tokens.add_token(tokens_file, "temp-1", ["inquire"], expires_at=now[0] + 3600)
    runner, rn = await start_node(tmp_path, [make_bill("0100234567")], clock=lambda: now[0])
    try:
        rn.tokens["temp"] = short
        assert (await call(rn, "GET", f"/v1/bills/{BILL}", "temp"))[0] == 200
        now[0] += 3600  # the node's clock reaches the expiry
        status, body = await call(rn, "GET", f"/v1/bills/{BILL}", "temp")
        assert (status, body["code"]) == (401, "unauthorized")
        rn.tokens["nobody"] = "edge_not-a-token"
        assert (await call(rn, "GET", f"/v1/bills/{BILL}", "nobody"))[1] == body
        assert (await call(rn, "GET", f"/v1/bills/{BILL}", "viewer"))[0] == 200
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_last_use_is_recorded_once_a_minute_per_token(running: RunningNode) -> None:
    db_path = running.data_dir / DB_NAME
    assert "kiosk-1" not in lastused.read_all(db_path)
    before = time.time()
    assert (await call(running, "GET", f"/v1/bills/{BILL}", "viewer"))[0] == 200
    used = await eventually(lambda: lastused.read_all(db_path).get("kiosk-1"), timeout=5)
    assert before - 1 <= used <= time.time()
    # A second use within the minute writes nothing (the node does not commit per request).
    assert (await call(running, "GET", f"/v1/bills/{BILL}", "viewer"))[0] == 200
    await running.node.last_used.drain()
    assert lastused.read_all(db_path)["kiosk-1"] == used
    assert "ops" not in lastused.read_all(db_path)
