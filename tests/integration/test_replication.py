"""Node and reference centre on loopback: bootstrap, replay exactly once through faults, mirror."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, bill_input, eventually, start_link

import outbox

pytestmark = pytest.mark.both_stores

BILL = f"{GOV}-{CYCLE}-{ACCOUNTS[0]}"


async def pay(link: Link, bill_id: str, amount: int, key: str) -> dict[str, Any]:
    rn = link.node
    async with rn.session.post(
        f"{rn.url}/v1/payments",
        json={"bill_id": bill_id, "amount": amount, "method": "cash", "cashier": "huda"},
        headers=rn.headers(**{"Idempotency-Key": key}),
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 201, body
        return body  # type: ignore[no-any-return]


async def bill_view(link: Link, bill_id: str) -> dict[str, Any]:
    rn = link.node
    async with rn.session.get(f"{rn.url}/v1/bills/{bill_id}", headers=rn.headers()) as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


def pending(link: Link) -> int:
    return link.node.node.db.read(lambda c: outbox.stats(c).pending)


async def bootstrapped(link: Link) -> None:
    async def check() -> bool:
        return link.node.node.db.read(
            lambda c: c.execute("SELECT COUNT(*) FROM bills").fetchone()[0]
        ) == len(ACCOUNTS)

    await eventually(check, what="the mirror to bootstrap from the snapshot")


async def all_delivered(link: Link) -> None:
    async def check() -> bool:
        return pending(link) == 0

    await eventually(check, what="every entry to be delivered")


async def test_new_node_bootstraps_mirror_and_replays(link: Link) -> None:
    await bootstrapped(link)
    body = await pay(link, BILL, 30_000, "k1")
    await all_delivered(link)
    assert await link.centre.bill(BILL) == (30_000, 2)
    rows = await link.centre.ledger()
    assert [(r[0], r[3], r[4], r[5]) for r in rows] == [
        (body["payment_id"], BILL, 30_000, "applied")
    ]
    async with link.node.session.get(
        f"{link.node.url}/v1/payments/{body['payment_id']}", headers=link.node.headers()
    ) as resp:
        doc = await resp.json()
    assert doc["state"] == "synced" and doc["verdict"]["version"] == 2
    assert link.node.node.link.state == "up"


async def test_payments_while_centre_down_arrive_once_when_it_returns(link: Link) -> None:
    await bootstrapped(link)
    link.proxy.mode = "refuse"
    taken = [
        await pay(link, f"{GOV}-{CYCLE}-{a}", 1_000 + i, f"down-{i}")
        for i, a in enumerate(ACCOUNTS)
    ]

    async def link_down() -> bool:
        return link.node.node.link.state in ("degraded", "down")

    await eventually(link_down, what="the node to notice the link is down")
    assert pending(link) == len(taken)
    # Inquiries keep answering from the mirror, with the local payments already subtracted.
    view = await bill_view(link, f"{GOV}-{CYCLE}-{ACCOUNTS[3]}")
    assert view["pending_local"] == 1_003 and view["due"] == 100_000 - 1_003
    link.proxy.mode = "pass"
    await all_delivered(link)
    rows = await link.centre.ledger()
    assert sorted(r[0] for r in rows) == sorted(t["payment_id"] for t in taken)
    assert [r[2] for r in rows] == list(range(1, len(taken) + 1))


async def test_centre_500s_then_recovers(link: Link) -> None:
    await bootstrapped(link)
    link.proxy.mode = "http500"
    for i in range(5):
        await pay(link, BILL, 100, f"e-{i}")

    async def failed_a_few_times() -> bool:
        return (
            link.node.node.db.read(
                lambda c: c.execute("SELECT MAX(attempts) FROM outbox_entries").fetchone()[0]
            )
            >= 2
        )

    await eventually(failed_a_few_times, what="replay attempts against a failing centre")
    assert "500" in (link.node.node.link.last_error or "")
    link.proxy.mode = "pass"
    await all_delivered(link)
    assert len(await link.centre.ledger()) == 5
    assert (await link.centre.bill(BILL))[0] == 500


async def test_lost_reply_after_centre_committed_is_counted_once(link: Link) -> None:
    await bootstrapped(link)
    link.proxy.mode = "drop_reply"
    body = await pay(link, BILL, 7_000, "lost")

    async def centre_has_it() -> bool:
        return len(await link.centre.ledger()) == 1

    await eventually(centre_has_it, what="the centre to record the entry")
    assert link.proxy.replies_dropped >= 1
    assert pending(link) == 1  # the node never heard the verdict
    link.proxy.mode = "pass"
    await all_delivered(link)
    rows = await link.centre.ledger()
    assert [(r[0], r[5]) for r in rows] == [(body["payment_id"], "applied")]
    assert await link.centre.bill(BILL) == (7_000, 2)  # applied once, not twice
    found = link.node.node.db.read(lambda c: outbox.get(c, body["payment_id"]))
    assert found is not None and found.verdict == "duplicate" and found.reason == "applied"


async def test_bad_signature_is_refused_and_nothing_is_dropped(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-shared-secret-0123456789-0123456789\n")
    wrong.chmod(0o600)
    lk, close = await start_link(tmp_path, centre_secret_file=wrong)
    try:
        # The mirror cannot bootstrap either; load it locally (with a cursor, as a bills file
        # would) so a payment can be taken: a node still bootstrapping takes none.
        from nodefixtures import make_bill

        from edge import mirror

        await lk.node.node.db.write(lambda c: mirror.apply_changes(c, [make_bill(ACCOUNTS[0])], 1))
        await pay(lk, BILL, 1_000, "sig")

        async def refused() -> bool:
            return lk.node.node.link.config_fault and "401 unauthorized" in (
                lk.node.node.link.last_error or ""
            )

        await eventually(refused, what="the centre's 401 to reach the link state")
        assert lk.node.node.link.state == "degraded"
        assert await lk.centre.ledger() == []
        assert pending(lk) == 1
    finally:
        await close()


async def test_tampered_chain_is_refused_and_entry_stays_pending(link: Link) -> None:
    await bootstrapped(link)
    link.proxy.mode = "refuse"
    await pay(link, BILL, 2_000, "t1")
    await pay(link, BILL, 3_000, "t2")
    # Someone edits the second payment's stored payload on the node's disk.
    await link.node.node.db.write(
        lambda c: c.execute("UPDATE outbox_entries SET payload = x'80' WHERE seq = 2")
    )
    link.proxy.mode = "pass"

    async def refused() -> bool:
        return "chain_broken" in (link.node.node.link.last_error or "")

    await eventually(refused, what="the centre to refuse the edited chain")
    assert await link.centre.ledger() == []  # the whole batch is refused, nothing recorded
    assert pending(link) == 2


async def test_mirror_follows_new_cycle_and_online_payment_without_double_subtracting(
    link: Link,
) -> None:
    await bootstrapped(link)
    body = await pay(link, BILL, 40_000, "ov")
    await all_delivered(link)

    async def reflected() -> bool:
        v = await bill_view(link, BILL)
        return v["version"] == 2 and v["paid"] == 40_000

    await eventually(reflected, what="the mirror to pick up the centre's version of the paid bill")
    view = await bill_view(link, BILL)
    assert (view["pending_local"], view["due"]) == (0, 60_000)  # subtracted once, not twice
    # An online payment at the centre and a new cycle move the change feed.
    now = time.time()
    await link.centre.db.pay_online(BILL, 10_000, now)
    await link.centre.db.upsert_bills(GOV, [bill_input(ACCOUNTS[0], cycle="2026-07")], now)

    async def followed() -> bool:
        v = await bill_view(link, BILL)
        return (
            v["paid"] == 50_000
            and link.node.node.db.read(
                lambda c: c.execute(
                    "SELECT COUNT(*) FROM bills WHERE cycle = '2026-07'"
                ).fetchone()[0]
            )
            == 1
        )

    await eventually(followed, what="the mirror to follow the online payment and the new cycle")
    assert (await bill_view(link, BILL))["due"] == 50_000
    assert body["payment_id"]


async def test_older_version_never_undoes_local_payment(link: Link) -> None:
    await bootstrapped(link)
    link.proxy.mode = "refuse"
    await pay(link, BILL, 25_000, "old")
    view = await bill_view(link, BILL)
    assert view["due"] == 75_000
    # The centre re-sends version 1 (what the mirror already has): nothing changes.
    from nodefixtures import make_bill

    from edge import mirror

    await link.node.node.db.write(
        lambda c: mirror.apply_changes(c, [make_bill(ACCOUNTS[0], amount=100_000)], None)
    )
    assert (await bill_view(link, BILL))["due"] == 75_000


async def test_replay_now_trigger_and_backoff_is_bounded(link: Link) -> None:
    await bootstrapped(link)
    link.proxy.mode = "refuse"
    await pay(link, BILL, 500, "b1")
    start = link.proxy.connections
    t0 = time.monotonic()
    await eventually(lambda: _after(1.5, t0), timeout=3)
    attempts = link.proxy.connections - start
    # base 0.05 s doubling to a 0.3 s cap with half jitter: at most ~15 tries in 1.5 s (the
    # puller adds its own, also backed off). A hot loop would make thousands.
    assert 2 <= attempts <= 40, attempts
    link.proxy.mode = "pass"
    async with link.node.session.post(
        f"{link.node.url}/v1/admin/replay", headers=link.node.headers("admin")
    ) as resp:
        assert resp.status == 202
    await all_delivered(link)
    verdicts = Counter(r[5] for r in await link.centre.ledger())
    assert verdicts == Counter({"applied": 1})


async def _after(seconds: float, t0: float) -> bool:
    return time.monotonic() - t0 >= seconds


async def test_snapshot_slower_than_the_request_timeout_still_bootstraps(tmp_path: Path) -> None:
    # 3,000 bills trickle in for ~2.3 s over a "thin link", against a 1.5 s request timeout:
    # only a stalled read may time out, never a long but moving snapshot.
    accounts = [f"0300{i:06d}" for i in range(3_000)]
    started = time.monotonic()
    lk, close = await start_link(
        tmp_path,
        accounts=accounts,
        proxy_mode="slow",
        centre_timeout_s=1.0,
        centre_pull_interval_s=30.0,
    )
    try:

        async def full() -> bool:
            return lk.node.node.db.read(
                lambda c: c.execute("SELECT cursor, bills FROM mirror_state").fetchone()
            ) == (3_000, 3_000)

        await eventually(full, timeout=30, what="the slow snapshot to complete")
        assert time.monotonic() - started > 1.5  # it really took longer than the timeout
    finally:
        await close()
