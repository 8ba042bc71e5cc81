"""Readiness is the truth: during a real bootstrap from the reference centre the node says
so (readyz, status, inquiries, payments), and turns ready once the snapshot is in."""

from __future__ import annotations

from typing import Any

from centrefixtures import CYCLE, GOV, Link, eventually, start_link

ACCOUNTS = [f"02{i:08d}" for i in range(12_000)]  # three snapshot batches of 5,000


async def get(link: Link, path: str, token: bool = True) -> tuple[int, dict[str, str], Any]:
    rn = link.node
    async with rn.session.get(rn.url + path, headers=rn.headers() if token else {}) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def test_not_ready_while_the_first_snapshot_loads_then_ready(tmp_path: Any) -> None:
    # The reply trickles through the fault proxy (8 KiB every 20 ms, a thin link), so the
    # 3 MB snapshot takes seconds: long enough to look at the node in the middle of it.
    link, close = await start_link(tmp_path, accounts=ACCOUNTS, proxy_mode="slow")
    last = f"{GOV}-{CYCLE}-{ACCOUNTS[-1]}"
    try:

        async def partway() -> Any:
            status, headers, body = await get(link, "/readyz", token=False)
            assert status == 503, body
            assert body["status"] == "bootstrapping" and headers["Retry-After"] == "5"
            return body if body["progress"]["bills"] >= 5_000 else None

        body = await eventually(partway, timeout=60, what="a first batch of the snapshot")
        assert body["progress"]["of"] == len(ACCOUNTS)  # the centre's signed count
        assert 5_000 <= body["progress"]["bills"] < len(ACCOUNTS)

        # The last account is not in the mirror yet: never a 404 meanwhile.
        status, headers, problem = await get(link, f"/v1/accounts/{ACCOUNTS[-1]}/bills")
        assert status == 503 and problem["code"] == "mirror_bootstrapping", problem
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["Retry-After"] == "5" and problem["title_ar"] and problem["title"]
        assert problem["progress"]["of"] == len(ACCOUNTS)
        status, _, problem = await get(link, f"/v1/bills/{last}")
        assert status == 503 and problem["code"] == "mirror_bootstrapping"
        rn = link.node
        async with rn.session.post(
            f"{rn.url}/v1/payments",
            json={"bill_id": last, "amount": 1_000, "method": "cash", "cashier": "huda"},
            headers=rn.headers(**{"Idempotency-Key": "boot-1"}),
        ) as resp:
            problem = await resp.json(content_type=None)
            assert resp.status == 503 and problem["code"] == "mirror_bootstrapping"
        assert (
            rn.node.db.read(lambda c: c.execute("SELECT COUNT(*) FROM payments").fetchone()[0]) == 0
        )

        _, _, status_doc = await get(link, "/v1/status", token=False)
        shown = status_doc["mirror"]["bootstrap"]
        assert shown["of"] == len(ACCOUNTS) and shown["bills"] >= 5_000
        assert status_doc["mode"] != "normal"

        link.proxy.mode = "pass"  # the rest of the stream at full speed

        async def ready() -> bool:
            return (await get(link, "/readyz", token=False))[0] == 200

        await eventually(ready, timeout=60, what="readiness once the snapshot is applied")
        _, _, status_doc = await get(link, "/v1/status", token=False)
        assert status_doc["mirror"]["bootstrap"] is None
        assert status_doc["mirror"]["bills"] == len(ACCOUNTS)
        status, _, found = await get(link, f"/v1/accounts/{ACCOUNTS[-1]}/bills")
        assert status == 200 and found["bills"][0]["bill_id"] == last
    finally:
        await close()


async def test_a_node_without_a_centre_is_bootstrapping_until_bills_arrive(tmp_path: Any) -> None:
    """No link (transfer files): not ready, and inquiries 503, until a bills file is in."""
    from nodefixtures import make_bill, start_node

    from edge import mirror

    runner, rn = await start_node(tmp_path, [])
    try:
        async with rn.session.get(rn.url + "/readyz") as resp:
            assert resp.status == 503
            assert await resp.json() == {
                "status": "bootstrapping",
                "progress": {"bills": 0, "of": None},
            }
        async with rn.session.get(
            rn.url + "/v1/accounts/0100234567/bills", headers=rn.headers()
        ) as resp:
            problem = await resp.json(content_type=None)
            assert resp.status == 503 and "edge import bills" in problem["detail"]
        # What `edge import bills` stores: the bills and the snapshot's cursor.
        await rn.node.db.write(lambda c: mirror.apply_changes(c, [make_bill("0100234567")], 7))
        async with rn.session.get(rn.url + "/readyz") as resp:
            assert resp.status == 200
        async with rn.session.get(
            rn.url + "/v1/accounts/0100234567/bills", headers=rn.headers()
        ) as resp:
            assert resp.status == 200
    finally:
        await rn.session.close()
        await runner.cleanup()
