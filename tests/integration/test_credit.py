"""The subscriber's credit end to end (issue 15): a real node, a real centre behind a fault
proxy, and the `edge centre` CLI as subprocesses on the centre's own database.

A bill paid online during an outage and again in cash at the node comes back `credited`;
after the next pull every inquiry shows the credit, the payment links to it, and
`edge centre credits` lists it with the entry that made it. A fresh node's snapshot carries
credit, and the change feed carries a later change of it.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link
from nodefixtures import start_node

import edge
from edge import mirror

pytestmark = pytest.mark.both_stores

ROOT = Path(__file__).resolve().parents[2]
AMOUNT = 100_000  # every bill of the fixture (helpers.make_bill)
OPENAPI = json.loads((Path(edge.__file__).parent / "web" / "openapi.json").read_text("utf-8"))


def conforms(body: Any, schema: str) -> None:
    """`body` is valid against the OpenAPI document's component `schema`."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(root).validate(body)


def centre_config(tmp_path: Path, link: Link) -> Path:
    """A TOML file for the CLI over the running centre's data directory."""
    settings = link.centre.settings
    config = tmp_path / "centre-cli.toml"
    config.write_text(
        f'[centre]\ndata_dir = "{settings.data_dir}"\ngovernorate = "{GOV}"\n'
        f'database = "{settings.database}"\n'
        f'[nodes.dam-1]\ngovernorate = "{GOV}"\nsecret_file = "{tmp_path / "dam-1.secret"}"\n',
        encoding="utf-8",
    )
    return config


def edge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


async def get(link: Link, path: str) -> Any:
    rn = link.node
    async with rn.session.get(f"{rn.url}{path}", headers=rn.headers()) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def bootstrapped(link: Link) -> None:
    async def done() -> bool:
        return link.node.node.db.read(mirror.state).bills == len(ACCOUNTS)

    await eventually(done, what="the mirror's bootstrap")


async def test_paid_online_in_an_outage_and_in_cash_shows_the_credit(tmp_path: Path) -> None:
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        account = ACCOUNTS[3]
        bill_id = f"{GOV}-{CYCLE}-{account}"
        await bootstrapped(link)
        config = centre_config(tmp_path, link)

        # The link goes down; the subscriber pays the whole bill on the ministry's site.
        link.proxy.mode = "refuse"
        paid = edge_cli("centre", "pay", "--config", str(config), bill_id, str(AMOUNT))
        assert paid.returncode == 0, paid.stderr
        assert "credit 0" in paid.stdout
        # ... and again in cash at the counter, which still sees the bill due.
        async with rn.session.post(
            f"{rn.url}/v1/payments",
            json={"bill_id": bill_id, "amount": AMOUNT, "method": "cash", "cashier": "huda"},
            headers=rn.headers(**{"Idempotency-Key": "twice"}),
        ) as resp:
            assert resp.status == 201, await resp.text()
            payment_id = (await resp.json())["payment_id"]
        shown = await get(link, f"/v1/accounts/{account}/bills")
        assert (shown["credit"], shown["bills"][0]["due"]) == (0, 0)

        # The link returns: the cash payment comes back credited, whole.
        link.proxy.mode = "pass"

        async def credited() -> bool:
            doc = await get(link, f"/v1/payments/{payment_id}")
            return bool(doc["state"] == "credited")

        await eventually(credited, what="the centre's verdict")
        doc = await get(link, f"/v1/payments/{payment_id}")
        assert doc["credit"] == {
            "amount": AMOUNT, "account": account, "bill_id": bill_id,
            "href": f"/v1/accounts/{account}/bills",
        }  # fmt: skip
        assert doc["verdict"]["verdict"] == "credited"
        conforms(doc, "Payment")

        # After the next pull the inquiry shows the credit where the link points.
        async def shows_credit() -> bool:
            body = await get(link, doc["credit"]["href"])
            return bool(body["credit"] == AMOUNT)

        await eventually(shows_credit, what="the credit in the inquiry")
        shown = await get(link, f"/v1/accounts/{account}/bills")
        line = shown["bills"][0]
        assert (line["credit"], line["paid"], line["due"], line["status"]) == (
            AMOUNT, AMOUNT, 0, "paid",
        )  # fmt: skip
        assert line["pending_local"] == 0  # the payment is settled: credit, not owed
        conforms(shown, "AccountBills")
        one = await get(link, f"/v1/bills/{bill_id}")
        assert one["credit"] == AMOUNT
        conforms(one, "Bill")
        listed_payments = await get(link, f"/v1/payments?bill_id={bill_id}")
        assert [p["credit"] for p in listed_payments["items"]] == [doc["credit"]]
        other = await get(link, f"/v1/accounts/{ACCOUNTS[4]}/bills")
        assert other["credit"] == 0

        # The centre's list, both formats, names the account, its credit and the entry.
        listed = edge_cli("centre", "credits", "--config", str(config), "--format", "json")
        assert listed.returncode == 0, listed.stderr
        accounts = json.loads(listed.stdout)["accounts"]
        assert [(a["governorate"], a["account"], a["credit"]) for a in accounts] == [
            (GOV, account, AMOUNT)
        ]
        assert [(s["source"], s["bill_id"], s["amount"]) for s in accounts[0]["sources"]] == [
            (payment_id, bill_id, AMOUNT)
        ]
        as_csv = edge_cli("centre", "credits", "--config", str(config), "--governorate", GOV)
        assert as_csv.returncode == 0, as_csv.stderr
        rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
        assert [(r["account"], r["credit"], r["source"], r["amount"]) for r in rows] == [
            (account, str(AMOUNT), payment_id, str(AMOUNT))
        ]
        other_gov = edge_cli("centre", "credits", "--config", str(config), "--governorate", "ALE")
        assert (other_gov.returncode, other_gov.stdout) == (
            0, "governorate,account,credit,source,bill_id,amount,created_at\n",
        )  # fmt: skip
        bad = edge_cli("centre", "credits", "--config", str(config), "--governorate", "dam")
        assert bad.returncode == 2 and "governorate code" in bad.stderr
    finally:
        await close()


async def test_a_fresh_nodes_snapshot_and_the_feed_carry_credit(tmp_path: Path) -> None:
    link, close = await start_link(tmp_path)
    fresh_close = None
    try:
        account = ACCOUNTS[0]
        bill_id = f"{GOV}-{CYCLE}-{account}"
        await bootstrapped(link)
        now = time.time()
        # Overpaid online: 30,000 more than the bill, published on the bill at once.
        online = await link.centre.db.pay_online(bill_id, AMOUNT + 30_000, now)
        assert (online.credit, online.version) == (30_000, 2)

        async def pulled(target: Link, credit: int) -> bool:
            body = await get(target, f"/v1/accounts/{account}/bills")
            return bool(body["credit"] == credit)

        await eventually(lambda: pulled(link, 30_000), what="the change feed's credit")

        # A node started now has an empty mirror: its snapshot must carry the credit.
        runner, fresh = await start_node(
            tmp_path / "fresh", [], centre_url=link.node.node.settings.centre_url,
            centre_secret_file=tmp_path / "dam-1.secret", centre_pull_interval_s=0.2,
            centre_retry_base_s=0.05, centre_retry_cap_s=0.3,
        )  # fmt: skip

        async def fresh_cleanup() -> None:
            await fresh.session.close()
            await runner.cleanup()

        fresh_close = fresh_cleanup
        fresh_link = Link(link.centre, link.proxy, fresh)

        async def fresh_bootstrapped() -> bool:
            return fresh.node.db.read(mirror.state).cursor is not None

        await eventually(fresh_bootstrapped, what="the fresh node's snapshot")
        stored = fresh.node.db.read(lambda c: mirror.bill(c, bill_id))
        assert stored is not None and (stored.credit, stored.version) == (30_000, 2)
        assert (await get(fresh_link, f"/v1/bills/{bill_id}"))["credit"] == 30_000

        # A later change (another overpayment) reaches both through the change feed.
        await link.centre.db.pay_online(bill_id, 5_000, time.time())
        await eventually(lambda: pulled(link, 35_000), what="the first node's feed")
        await eventually(lambda: pulled(fresh_link, 35_000), what="the fresh node's feed")
    finally:
        if fresh_close is not None:
            await fresh_close()
        await close()


async def test_a_lost_reply_still_brings_the_payments_credit(tmp_path: Path) -> None:
    # The centre records the credited payment but its reply is lost: the resend is answered
    # `duplicate` of `credited`, and it must name the same credit for the node to keep.
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        account = ACCOUNTS[5]
        bill_id = f"{GOV}-{CYCLE}-{account}"
        await bootstrapped(link)
        link.proxy.mode = "refuse"
        await link.centre.db.pay_online(bill_id, 60_000, time.time())
        async with rn.session.post(
            f"{rn.url}/v1/payments",
            json={"bill_id": bill_id, "amount": AMOUNT, "method": "cash", "cashier": "huda"},
            headers=rn.headers(**{"Idempotency-Key": "lost"}),
        ) as resp:
            assert resp.status == 201, await resp.text()
            payment_id = (await resp.json())["payment_id"]
        link.proxy.mode = "drop_reply"

        async def recorded() -> bool:
            return any(row[0] == payment_id for row in await link.centre.ledger())

        await eventually(recorded, what="the centre recording the payment")
        assert (await get(link, f"/v1/payments/{payment_id}"))["state"] == "pending_sync"
        link.proxy.mode = "pass"

        async def settled() -> Any:
            doc = await get(link, f"/v1/payments/{payment_id}")
            return doc if doc["state"] != "pending_sync" else None

        doc = await eventually(settled, what="the resend's verdict")
        # 40,000 was still due at the centre: 60,000 of the cash became credit.
        assert (doc["state"], doc["verdict"]["verdict"], doc["verdict"]["reason"]) == (
            "synced", "duplicate", "applied",
        )  # fmt: skip
        assert doc["credit"]["amount"] == 60_000

        async def shows() -> bool:
            body = await get(link, f"/v1/accounts/{account}/bills")
            return bool(body["credit"] == 60_000 and body["bills"][0]["due"] == 0)

        await eventually(shows, what="the credit in the inquiry")
    finally:
        await close()
