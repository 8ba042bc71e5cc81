"""Clearing end to end (issue 16): a real node and centre, the day's close over HTTP and as
`edge report day`, the centre's clearing report and ledger, and `edge reconcile`.

Every total is checked against the test's own sums of what it paid.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, NODE, SECRET, Link, eventually, start_link

from edge import mirror, tokens
from sync.centre.config import NodeSettings

pytestmark = pytest.mark.both_stores

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Damascus")
CEILING = 90_000  # the centre's max_payment for this node: a payment above is rejected
# (channel token, cashier, method, account index, amount, the state it ends in)
PAID = [
    ("cashier", "huda", "cash", 0, 40_000, "delivered"),
    ("cashier", "huda", "card", 1, 25_000, "delivered"),
    ("cashier", "sami", "cash", 2, 60_000, "delivered"),
    ("cashier2", "rana", "transfer", 3, 70_000, "delivered"),
    ("cashier2", "rana", "cash", 4, 15_000, "delivered"),
    ("cashier2", "sami", "cash", 5, 30_000, "delivered"),
    ("cashier", "huda", "cash", 6, 95_000, "rejected"),  # over the centre's ceiling
    ("cashier2", "rana", "card", 7, 50_000, "credited"),  # the bill was paid online first
    ("cashier", "huda", "cash", 8, 20_000, "voided"),  # a supervisor voids it once delivered
    ("cashier2", "sami", "cash", 9, 92_000, "refunded"),  # rejected, the cash given back
]
CHANNELS = {"cashier": "counter-1", "cashier2": "counter-2"}


def bill_of(i: int) -> str:
    return f"{GOV}-{CYCLE}-{ACCOUNTS[i]}"


def edge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


async def edge_async(*args: str) -> tuple[int, str, str]:
    """The CLI without blocking this loop (the centre and the proxy run on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def node_config(tmp_path: Path, link: Link) -> Path:
    rn = link.node
    s = rn.node.settings
    path = tmp_path / "node-cli.toml"
    path.write_text(
        f'[node]\nid = "{s.node_id}"\ndata_dir = "{s.node_data_dir}"\n'
        f'governorate = "{GOV}"\ntimezone = "{s.node_timezone}"\n'
        f'[auth]\ntokens_file = "{s.auth_tokens_file}"\n'
        f'[centre]\nurl = "{s.centre_url}"\nsecret_file = "{s.centre_secret_file}"\n',
        encoding="utf-8",
    )
    return path


def centre_config(tmp_path: Path, link: Link) -> Path:
    path = tmp_path / "centre-cli.toml"
    path.write_text(
        f'[centre]\ndata_dir = "{link.centre.settings.data_dir}"\ngovernorate = "{GOV}"\n'
        f'database = "{link.centre.settings.database}"\n'
        f'[nodes.{NODE}]\ngovernorate = "{GOV}"\nsecret_file = "{tmp_path / "dam-1.secret"}"\n',
        encoding="utf-8",
    )
    return path


async def pay(link: Link, who: str, cashier: str, method: str, i: int, amount: int, _: str) -> str:
    rn = link.node
    async with rn.session.post(
        f"{rn.url}/v1/payments",
        json={"bill_id": bill_of(i), "amount": amount, "method": method, "cashier": cashier},
        headers=rn.headers(who, **{"Idempotency-Key": f"k-{i}-{amount}"}),
    ) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["payment_id"])


async def post(link: Link, path: str, body: Any, token: str) -> int:
    rn = link.node
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": path}
    async with rn.session.post(rn.url + path, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return resp.status


async def settled(link: Link) -> None:
    async def done() -> bool:
        return link.node.node.db.read(lambda c: c.execute(
            "SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'").fetchone()[0]) == 0  # fmt: skip

    await eventually(done, what="every payment settled")


def expected(
    paid: list[tuple[str, str, str, int, int, str]],
) -> dict[tuple[str, str, str], Counter[str]]:
    """The test's own sums per (channel, cashier, method): count and amount by state."""
    out: dict[tuple[str, str, str], Counter[str]] = {}
    for who, cashier, method, _, amount, state in paid:
        c = out.setdefault((CHANNELS[who], cashier, method), Counter())
        for name in ("taken", state):
            c[f"{name}_count"] += 1
            c[f"{name}_amount"] += amount
    return out


async def test_a_day_closes_at_the_node_clears_at_the_centre_and_reconciles(
    tmp_path: Path,
) -> None:
    (tmp_path / "node").mkdir()
    supervisor = tokens.add_token(tmp_path / "node" / "tokens.toml", "super-1", ["supervise"])
    own = NodeSettings(governorate=GOV, secret=SECRET.encode(), max_payment=CEILING)
    link, close = await start_link(tmp_path, centre_overrides={"nodes": {NODE: own}})
    try:
        rn = link.node

        async def bootstrapped() -> bool:
            return rn.node.db.read(mirror.state).bills == len(ACCOUNTS)

        await eventually(bootstrapped, what="the mirror")
        # Bill 7 is paid in full online while the link is down: the counter's payment of it
        # is all credit at the centre.
        link.proxy.mode = "refuse"
        await link.centre.db.pay_online(bill_of(7), 100_000, time.time())
        ids = [await pay(link, *p) for p in PAID]
        link.proxy.mode = "pass"
        await settled(link)
        voided, refunded = ids[8], ids[9]
        await post(link, f"/v1/payments/{voided}/void", {"reason": "خطأ"}, supervisor)
        body = {"action": "refund", "reason": "أعيد المبلغ"}
        await post(link, f"/v1/admin/rejected/{refunded}/resolve", body, rn.tokens["admin"])
        await settled(link)

        day = datetime.now(TZ).date().isoformat()
        async with rn.session.get(
            f"{rn.url}/v1/reports/day?date={day}", headers=rn.headers("auditor")
        ) as resp:
            assert resp.status == 200, await resp.text()
            report = await resp.json()
        want = expected(PAID)
        got = {(r["channel"], r["cashier"], r["method"]): r for r in report["rows"]}
        assert set(got) == set(want)
        for key, sums in want.items():
            for name in ("taken", "pending", "delivered", "credited", "rejected", "voided",
                         "refunded"):  # fmt: skip
                figure = got[key][name]
                assert (figure["count"], figure["amount"]) == (
                    sums[f"{name}_count"],
                    sums[f"{name}_amount"],
                ), (key, name)
        t = report["totals"]
        assert t["taken"]["amount"] == sum(p[4] for p in PAID)
        assert (t["rejected"]["amount"], t["credited"]["amount"]) == (95_000, 50_000)
        assert (t["voided"]["amount"], t["refunded"]["amount"]) == (20_000, 92_000)
        assert report["net"] == sum(p[4] for p in PAID) - 20_000 - 92_000
        stamp = day.replace("-", "")
        assert report["totals"]["first_receipt"] == f"{GOV}-DAM1-{stamp}-000001"
        assert report["totals"]["last_receipt"] == f"{GOV}-DAM1-{stamp}-{len(PAID):06d}"

        # The CLI prints the same numbers, as JSON, as CSV with a BOM, and as the A4 page.
        config = node_config(tmp_path, link)
        done = edge_cli("report", "day", "--config", str(config), "--date", day)
        assert done.returncode == 0, done.stderr
        cli = json.loads(done.stdout)
        assert (cli["rows"], cli["totals"]) == (report["rows"], report["totals"])
        done = edge_cli("report", "day", "--config", str(config), "--date", day, "--format", "csv")
        assert done.stdout.startswith("\ufeff")
        rows = list(csv.DictReader(io.StringIO(done.stdout[1:])))
        assert rows[-1]["channel"] == "TOTAL"
        assert int(rows[-1]["taken_amount"]) == sum(p[4] for p in PAID)
        done = edge_cli("report", "day", "--config", str(config), "--date", day, "--format", "html")
        assert 'dir="rtl"' in done.stdout and "توقيع أمين الصندوق" in done.stdout
        assert f"{sum(p[4] for p in PAID) // 100:,}.00" in done.stdout

        # The centre's clearing report holds the node's delivered money.
        cconfig = centre_config(tmp_path, link)
        done = edge_cli("centre", "report", "clearing", "--config", str(cconfig), "--date", day,
                        "--governorate", GOV, "--format", "json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        clearing = [r for r in json.loads(done.stdout) if r["channel_kind"] == "counter"]

        def centre(figure: str) -> int:
            return sum(r[f"{figure}_amount"] for r in clearing)

        def node(figure: str) -> int:
            return int(t[figure]["amount"])

        # A voided payment was applied at the centre, then reversed; a refunded one rejected.
        assert centre("applied") == node("delivered") + node("voided")
        assert centre("reversed") == node("voided")
        assert centre("credited") == node("credited")
        assert centre("rejected") == node("rejected") + node("refunded")
        assert centre("refunded") == node("refunded")
        assert {r["accepted_day"] for r in clearing} == {day}
        online = [r for r in json.loads(done.stdout) if r["channel_kind"] == "online"]
        assert sum(r["applied_amount"] for r in online) == 100_000

        # The ledger keeps its first six columns and adds clearing's.
        done = edge_cli("centre", "ledger", "--config", str(cconfig))
        table = list(csv.reader(io.StringIO(done.stdout)))
        assert table[0][:6] == ["id", "node", "seq", "bill_id", "amount", "verdict"]
        assert table[0][6:] == ["accepted_at", "recorded_at", "receipt", "method", "channel",
                                "cashier", "kind"]  # fmt: skip
        by_id = {r[0]: dict(zip(table[0], r, strict=True)) for r in table[1:]}
        assert by_id[ids[3]]["cashier"] == "rana" and by_id[ids[3]]["method"] == "transfer"
        assert by_id[ids[3]]["channel"] == "counter-2"

        # Reconciliation: nothing differs; then the centre loses one entry, and exactly that
        # entry is reported, exit 1.
        code, out, err = await edge_async(
            "reconcile", "--config", str(config), "--date", day, "--format", "json"
        )
        assert code == 0, out + err
        clean = json.loads(out)
        # Ten payments, the void and the refund: each as the centre recorded it.
        assert (clean["node_entries"], clean["centre_entries"], clean["differences"]) == (
            12,
            12,
            [],
        )
        lost = ids[2]
        await link.centre.db.query("DELETE FROM entries WHERE id = ?", lost)
        code, out, err = await edge_async(
            "reconcile", "--config", str(config), "--date", day, "--format", "json"
        )
        assert code == 1, out + err
        found: dict[str, Any] = json.loads(out)
        assert [(d["what"], d["id"]) for d in found["differences"]] == [("missing", lost)]
    finally:
        await close()
