"""Late fines end to end (issue 17): a real node and a real centre behind a fault proxy.

The centre publishes a fine rule; the node pulls it, shows an overdue bill's fine in its
inquiries, takes a payment that covers bill and fine (the fine first), and the centre counts
the same fine. A node whose clock runs a day ahead computes another fine: the centre answers
`fine_mismatch` with its own split, and the money is still counted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from centrefixtures import ACCOUNTS, GOV, Link, bill_input, eventually, start_link

from edge import mirror
from sync import fines
from sync.centre import fines as centre_fines

pytestmark = pytest.mark.both_stores

TZ = centre_fines.TIMEZONE
AMOUNT = 100_000  # every bill of the fixture (helpers.make_bill)
GRACE = 15
ROOT = Path(__file__).resolve().parents[2]


async def publish(link: Link, effective: date) -> fines.Rule:
    now = time.time()
    return await link.centre.db.publish_fine_rule(GOV, effective, GRACE, 500, 150, 20_000, now)


async def due_on(link: Link, account: str, due_date: date) -> str:
    """Re-issue `account`'s bill at the centre with `due_date`; its id, once the node has it."""
    now = time.time()
    row = bill_input(account, due_date=due_date.isoformat())
    await link.centre.db.upsert_bills(GOV, [row], now)
    bill_id = row.bill_id(GOV)

    async def pulled() -> bool:
        view = link.node.node.db.read(lambda c: mirror.bill(c, bill_id))
        return view is not None and view.due_date == due_date.isoformat()

    await eventually(pulled, what="the re-issued bill at the node")
    return bill_id


async def has_rule(link: Link, version: int) -> None:
    async def pulled() -> bool:
        return any(r.version == version for r in link.node.node.db.read(mirror.rules))

    await eventually(pulled, what="the fine rule at the node")


async def call(link: Link, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    rn = link.node
    headers = rn.headers(**kwargs.pop("headers", {}))
    async with rn.session.request(method, f"{rn.url}{path}", headers=headers, **kwargs) as resp:
        return resp.status, await resp.json()


async def verdict_of(link: Link, payment_id: str) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        status, body = await call(link, "GET", f"/v1/payments/{payment_id}")
        assert status == 200, body
        return body if body["verdict"] is not None else None

    found: dict[str, Any] = await eventually(settled, what="the centre's verdict")
    return found


async def centre_bill(link: Link, bill_id: str) -> tuple[int, int, int]:
    """(paid, fine_paid, credit) of the bill at the centre."""
    found = await link.centre.db.bill(bill_id)
    assert found is not None
    return int(found["paid"]), int(found["fine_paid"]), int(found["credit"])


async def test_an_overdue_bill_shows_its_fine_and_a_payment_of_bill_and_fine_is_applied(
    tmp_path: Path,
) -> None:
    link, close = await start_link(tmp_path)
    try:
        today = fines.local_day(time.time(), TZ)
        account = ACCOUNTS[0]
        # 40 days late: the grace ended 25 days ago, so one month has started.
        bill_id = await due_on(link, account, today - timedelta(days=40))
        rule = await publish(link, today - timedelta(days=365))
        await has_rule(link, rule.version)
        expected = fines.fine(rule, AMOUNT, (today - timedelta(days=40)).isoformat(), today)
        assert expected == 500 + AMOUNT * 150 // fines.BP == 2_000

        status, inquiry = await call(link, "GET", f"/v1/accounts/{account}/bills")
        assert status == 200
        (shown,) = [b for b in inquiry["bills"] if b["bill_id"] == bill_id]
        assert (shown["fine"], shown["due"]) == (expected, AMOUNT + expected)
        assert inquiry["total_due"] == sum(b["due"] for b in inquiry["bills"])
        status, one = await call(link, "GET", f"/v1/bills/{bill_id}")
        assert (status, one["fine"], one["due"]) == (200, expected, AMOUNT + expected)

        # More than bill + fine is refused; the fine alone is taken as the fine.
        pay = {"bill_id": bill_id, "method": "cash", "cashier": "Rana"}
        status, refused = await call(link, "POST", "/v1/payments",
                                     json={**pay, "amount": AMOUNT + expected + 1},
                                     headers={"Idempotency-Key": "fine-over"})  # fmt: skip
        assert (status, refused["code"]) == (409, "amount_exceeds_due")
        status, taken = await call(link, "POST", "/v1/payments",
                                   json={**pay, "amount": AMOUNT + expected},
                                   headers={"Idempotency-Key": "fine-all"})  # fmt: skip
        assert status == 201, taken
        assert (taken["fine"], taken["due_after"]) == (expected, 0)
        status, after = await call(link, "GET", f"/v1/bills/{bill_id}")
        assert (after["fine"], after["due"], after["status"]) == (0, 0, "paid")

        found = await verdict_of(link, taken["payment_id"])
        assert (found["verdict"]["verdict"], found["verdict"]["reason"]) == ("applied", None)
        assert found["fine"] == {"taken": expected, "centre": expected}
        assert await centre_bill(link, bill_id) == (AMOUNT, expected, 0)

        async def mirrored() -> bool:
            view = link.node.node.db.read(
                lambda c: mirror.bill(c, bill_id, fines.local_day(time.time(), TZ))
            )
            return view is not None and view.fine_paid == expected and view.due == 0

        await eventually(mirrored, what="the centre's fine_paid in the mirror")
    finally:
        await close()


async def test_a_node_clock_a_day_ahead_gets_fine_mismatch_and_the_money_still_counts(
    tmp_path: Path,
) -> None:
    link, close = await start_link(tmp_path, clock=lambda: time.time() + 86_400)
    try:
        today = fines.local_day(time.time(), TZ)
        account = ACCOUNTS[1]
        # Today is the last day of grace at the centre; the node already lives tomorrow.
        due = today - timedelta(days=GRACE)
        bill_id = await due_on(link, account, due)
        rule = await publish(link, today - timedelta(days=365))
        await has_rule(link, rule.version)
        node_fine = fines.fine(rule, AMOUNT, due.isoformat(), today + timedelta(days=1))
        assert fines.fine(rule, AMOUNT, due.isoformat(), today) == 0 < node_fine

        status, shown = await call(link, "GET", f"/v1/bills/{bill_id}")
        assert (status, shown["fine"], shown["due"]) == (200, node_fine, AMOUNT + node_fine)
        status, taken = await call(
            link, "POST", "/v1/payments",
            json={"bill_id": bill_id, "amount": AMOUNT + node_fine, "method": "cash",
                  "cashier": "Rana"},
            headers={"Idempotency-Key": "ahead-1"},
        )  # fmt: skip
        assert (status, taken["fine"]) == (201, node_fine)

        found = await verdict_of(link, taken["payment_id"])
        assert found["verdict"]["verdict"] == "applied"
        assert found["verdict"]["reason"] == fines.MISMATCH
        assert found["state"] == "synced"
        assert found["fine"] == {"taken": node_fine, "centre": 0}  # the centre's own figure
        # The centre's split: no fine yet, the bill paid, the node's fine figure credited.
        assert await centre_bill(link, bill_id) == (AMOUNT, 0, node_fine)
        (row,) = [r for r in await link.centre.ledger() if r[0] == taken["payment_id"]]
        assert row[4] == AMOUNT + node_fine  # every piastre recorded
    finally:
        await close()


async def test_edge_centre_fine_rule_set_publishes_a_version_the_node_pulls(
    tmp_path: Path,
) -> None:
    link, close = await start_link(tmp_path)
    try:
        settings = link.centre.settings
        config = tmp_path / "centre-cli.toml"
        config.write_text(
            f'[centre]\ndata_dir = "{settings.data_dir}"\ngovernorate = "{GOV}"\n'
            f'database = "{settings.database}"\n'
            f'[nodes.dam-1]\ngovernorate = "{GOV}"\nsecret_file = "{tmp_path / "dam-1.secret"}"\n',
            encoding="utf-8",
        )
        args = ["--config", str(config), "--governorate", GOV, "--grace-days", "10",
                "--fixed", "700", "--effective", "2026-02-01"]  # fmt: skip
        done = await asyncio.to_thread(edge_cli, "centre", "fine-rule", "set", *args)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "governorate": GOV, "version": 1, "effective": "2026-02-01", "grace_days": 10,
            "fixed": 700, "percent_bp": 0, "cap": None,
        }  # fmt: skip
        await has_rule(link, 1)
        (rule,) = link.node.node.db.read(mirror.rules)
        assert (rule.grace_days, rule.fixed, rule.cap) == (10, 700, None)
        bad = await asyncio.to_thread(
            edge_cli, "centre", "fine-rule", "set", *args, "--percent-bp", "10001"
        )
        assert bad.returncode == 2 and "percent_bp" in bad.stderr
    finally:
        await close()


def edge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
