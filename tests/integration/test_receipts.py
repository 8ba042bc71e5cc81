"""Receipts with real nodes and a real centre: node codes unique in the governorate, the
printable receipt in headless Chromium, its QR decoded back (zbarimg) and checked at the
centre by `edge centre verify-receipt` as a subprocess.

Screenshots go to $EDGE_SCREENSHOT_DIR when set (`docs/` refreshes docs/receipt-80mm.png).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from browser import Page
from centrefixtures import ACCOUNTS, CYCLE, GOV, NODE, SECRET, Link, eventually, start_link
from helpers import unavailable
from nodefixtures import RunningNode, start_node

import outbox
from sync import receiptcode
from sync.centre.config import NodeSettings

pytestmark = pytest.mark.both_stores

NODE2, SECRET2 = "dam-2", "another-shared-secret-for-dam-2-tests-987654"
MM80_PX = 302  # 80 mm at 96 CSS px per inch


def _secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@dataclasses.dataclass
class Pair:
    link: Link
    second: RunningNode


async def start_pair(tmp_path: Path, code2: str) -> tuple[Pair, Any]:
    """dam-1 (code DAM1) through the link's proxy, and dam-2 (code `code2`) straight to the
    same centre, in the same governorate."""
    secret2 = _secret_file(tmp_path / "dam-2.secret", SECRET2)
    nodes = {NODE: NodeSettings(governorate=GOV, secret=SECRET.encode()),
             NODE2: NodeSettings(governorate=GOV, secret=SECRET2.encode())}  # fmt: skip
    lk, close_link = await start_link(tmp_path, centre_overrides={"nodes": nodes})
    runner, second = await start_node(
        tmp_path / "node2", [], node_id=NODE2, node_receipt_code=code2,
        centre_url=f"http://127.0.0.1:{lk.centre.port}", centre_secret_file=secret2,
        centre_retry_base_s=0.05, centre_retry_cap_s=0.3, centre_pull_interval_s=0.2,
        centre_config_fault_retry_s=0.3, centre_timeout_s=5.0, power_final_replay_s=2.0,
    )  # fmt: skip

    async def close() -> None:
        await second.session.close()
        await runner.cleanup()
        await close_link()

    return Pair(lk, second), close


async def mirrored(rn: RunningNode) -> None:
    async def full() -> bool:
        count = rn.node.db.read(lambda c: c.execute("SELECT COUNT(*) FROM bills").fetchone()[0])
        return bool(count == len(ACCOUNTS))

    await eventually(full, what=f"{rn.node.settings.node_id}'s mirror to bootstrap")


async def pay(rn: RunningNode, account: str, amount: int, key: str) -> dict[str, Any]:
    body = {"bill_id": f"{GOV}-{CYCLE}-{account}", "amount": amount, "method": "cash",
            "cashier": "رنا"}  # fmt: skip
    headers = rn.headers(**{"Idempotency-Key": key})
    async with rn.session.post(f"{rn.url}/v1/payments", json=body, headers=headers) as resp:
        got = await resp.json(content_type=None)
        assert resp.status == 201, got
        return got  # type: ignore[no-any-return]


def pending(rn: RunningNode) -> int:
    return rn.node.db.read(lambda c: outbox.stats(c).pending)


async def centre_receipts(link: Link) -> dict[str, tuple[str, str]]:
    """payment id -> (node, receipt) for every entry the centre recorded."""
    rows = await link.centre.db.query("SELECT id, node, payload, verdict FROM entries")
    assert all(row[3] == "applied" for row in rows), rows
    return {row[0]: (row[1], msgpack.unpackb(row[2])["receipt"]) for row in rows}


async def test_two_nodes_with_distinct_codes_never_collide(tmp_path: Path) -> None:
    """60 payments spread at random over two nodes of DAM on the same day: every receipt is
    distinct at the centre, each carries its node's code, and both codes are registered."""
    pair, close = await start_pair(tmp_path, "DAM2")
    try:
        one, two = pair.link.node, pair.second
        await mirrored(one)
        await mirrored(two)
        rng = random.Random(15)
        taken: dict[str, str] = {}
        for i in range(60):
            rn = rng.choice((one, two))
            body = await pay(rn, rng.choice(ACCOUNTS), 100 + i, f"k{i}")
            taken[body["payment_id"]] = body["receipt"]
        await eventually(lambda: pending(one) == 0 and pending(two) == 0, what="both replayed")
        at_centre = await centre_receipts(pair.link)
        assert {pid: receipt for pid, (_, receipt) in at_centre.items()} == taken
        numbers = [receipt for _, receipt in at_centre.values()]
        assert len(set(numbers)) == len(numbers) == 60
        for node, receipt in at_centre.values():
            assert receiptcode.code_of(receipt) == {NODE: "DAM1", NODE2: "DAM2"}[node]
        held = await pair.link.centre.db.query("SELECT governorate, code, node FROM receipt_codes")
        assert sorted(held) == [(GOV, "DAM1", NODE), (GOV, "DAM2", NODE2)]
    finally:
        await close()


async def test_a_duplicate_code_is_refused_at_the_centre_with_a_clear_reason(
    tmp_path: Path,
) -> None:
    """dam-2 set to dam-1's code: its batches are refused whole (signed 409
    receipt_code_taken, a configuration fault), it keeps its payment, and dam-1 goes on.
    `duplicate_receipt_codes` at the centre then lets the receipt already printed through."""
    pair, close = await start_pair(tmp_path, "DAM1")
    try:
        one, two = pair.link.node, pair.second
        await mirrored(one)
        await mirrored(two)
        await pay(one, ACCOUNTS[0], 1_000, "a")
        await eventually(lambda: pending(one) == 0, what="dam-1 to claim DAM1")
        mine = await pay(two, ACCOUNTS[1], 2_000, "b")
        assert receiptcode.code_of(mine["receipt"]) == "DAM1"
        link2 = two.node.link

        def refused() -> bool:
            return bool(link2.config_fault and "receipt_code_taken" in (link2.last_error or ""))

        await eventually(refused, what=lambda: f"dam-2 refused; link: {link2.last_error}")
        assert "belongs to node dam-1" in (link2.last_error or "")
        assert pending(two) == 1  # kept, never dropped
        async with two.session.get(
            f"{two.url}/v1/payments/{mine['payment_id']}", headers=two.headers()
        ) as resp:
            assert (await resp.json())["state"] == "pending_sync"
        assert set(n for n, _ in (await centre_receipts(pair.link)).values()) == {NODE}
        await pay(one, ACCOUNTS[2], 3_000, "c")
        await eventually(lambda: pending(one) == 0, what="dam-1 to carry on")

        # The operator's way out for what dam-2 already printed under the duplicate code.
        centre = pair.link.centre
        await centre.stop()
        nodes = dict(centre.settings.nodes)
        nodes[NODE2] = dataclasses.replace(
            nodes[NODE2], duplicate_receipt_codes=frozenset({"DAM1"})
        )
        centre.settings = dataclasses.replace(centre.settings, nodes=nodes)
        await centre.start()
        await eventually(lambda: pending(two) == 0, what="dam-2's payment let through")
        recorded = await centre_receipts(pair.link)
        assert recorded[mine["payment_id"]] == (NODE2, mine["receipt"])
    finally:
        await close()


# --- the printed receipt -----------------------------------------------------------------


def zbarimg() -> str:
    found = shutil.which("zbarimg")
    if found:
        return found
    unavailable("zbarimg is not installed (apt-get install zbar-tools)")


async def decode_qr(png: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        zbarimg(), "--quiet", "--raw", "-Sqrcode.enable", str(png),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"zbarimg found no QR code in {png}: {err.decode()}"
    return out.decode().strip()


def centre_config(tmp_path: Path, link: Link) -> Path:
    secret = _secret_file(tmp_path / "verify-dam-1.secret", SECRET)
    path = tmp_path / "centre.toml"
    path.write_text(
        f'[centre]\ndata_dir = "{link.centre.settings.data_dir}"\ngovernorate = "{GOV}"\n'
        f'database = "{link.centre.settings.database}"\n'
        f'[nodes.{NODE}]\ngovernorate = "{GOV}"\nsecret_file = "{secret}"\n'
    )
    return path


async def verify(config: Path, text: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "centre", "verify-receipt", "--config", str(config),
        text, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_receipt_printed_in_chromium_decodes_and_verifies_at_the_centre(
    tmp_path: Path, page: Page
) -> None:
    """The 80 mm receipt rendered by Chromium, its QR read back from the screenshot:
    genuine-but-unknown (exit 3) while the payment waits, genuine (0) once replayed, and
    forged (1) with one digit of the amount changed."""
    lk, close = await start_link(tmp_path, proxy_mode="pass")
    try:
        rn = lk.node
        await mirrored(rn)
        lk.proxy.mode = "refuse"  # the payment stays at the node for now
        taken = await pay(rn, ACCOUNTS[3], 99_600, "print-me")
        await page.send("Network.setExtraHTTPHeaders", {"headers": rn.headers()})
        await page.goto(f"{rn.url}/v1/payments/{taken['payment_id']}/receipt?paper=80mm")
        assert await page.eval("document.documentElement.dir") == "rtl"
        assert taken["receipt"] in await page.eval("document.body.innerText")
        assert "996.00 SYP" in await page.eval("document.body.innerText")
        out = Path(os.environ.get("EDGE_SCREENSHOT_DIR") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        png = out / "receipt-80mm.png"
        await page.screenshot(png, width=MM80_PX)
        assert page.failures == [] and page.console_errors == []
        assert [r for r in page.requests if "/receipt" not in r] == []  # nothing else fetched

        text = await decode_qr(png)
        code = receiptcode.parse(text)
        assert (code.payment_id, code.bill_id, code.amount) == (
            taken["payment_id"], taken["bill_id"], 99_600,
        )  # fmt: skip
        config = centre_config(tmp_path, lk)
        status, said = await verify(config, text)
        assert (status, said.split(":")[0]) == (3, "genuine-but-unknown"), said

        lk.proxy.mode = "pass"
        await eventually(lambda: pending(rn) == 0, what="the payment to be replayed")
        status, said = await verify(config, text)
        assert (status, said.split(":")[0]) == (0, "genuine"), said

        forged = text.replace("|99600|", "|99609|")
        status, said = await verify(config, forged)
        assert (status, said.split(":")[0]) == (1, "forged"), said
        assert "MAC" in said
        status, said = await verify(config, "not a receipt")
        assert status == 1, said
    finally:
        await close()


async def test_text_receipt_over_http_fits_58mm_and_bad_queries_are_400(tmp_path: Path) -> None:
    lk, close = await start_link(tmp_path)
    try:
        rn = lk.node
        await mirrored(rn)
        taken = await pay(rn, ACCOUNTS[4], 98_765, "t")
        url = f"{rn.url}/v1/payments/{taken['payment_id']}/receipt"
        async with rn.session.get(url, params={"format": "text", "paper": "58mm"},
                                  headers=rn.headers()) as resp:  # fmt: skip
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            body = await resp.text()
        assert all(len(line) <= 32 for line in body.splitlines())
        assert taken["receipt"] in body.splitlines() and "987.65 SYP" in body
        for query in ({"format": "pdf"}, {"paper": "A5"}, {"colour": "red"}):
            async with rn.session.get(url, params=query, headers=rn.headers()) as resp:
                assert resp.status == 400
                assert (await resp.json(content_type=None))["code"] == "invalid_query"
        async with rn.session.get(url) as resp:
            assert resp.status == 401  # the same scope as reading the payment
        async with rn.session.get(url, headers=rn.headers("viewer")) as resp:
            # Another channel's receipt is as unknown as its payment (edge.access).
            assert (await resp.json(content_type=None))["code"] == "unknown_payment"
        async with rn.session.get(
            f"{rn.url}/v1/payments/dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C/receipt", headers=rn.headers()
        ) as resp:
            assert (await resp.json(content_type=None))["code"] == "unknown_payment"
    finally:
        await close()
