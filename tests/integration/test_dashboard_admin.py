"""The dashboard's operator section in a real headless Chromium: "send now" against a real
centre while the replayer's backoff would hold the payments for ten minutes, the pending list
paged by cursor, and its tables scrolling sideways on a phone instead of being cut off.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from browser import Page
from centrefixtures import ACCOUNTS, start_link
from helpers import CYCLE, GOV, eventually, make_bill
from nodefixtures import start_node
from test_dashboard import assert_clean, pay
from test_dashboard_strip import AMBER, HEADER, header_when, resize

import outbox
from edge import mirror

ORPHAN = "0999999999"  # in the node's mirror only: the centre rejects its payment
SLOW = {"centre_retry_base_s": 600.0, "centre_retry_cap_s": 600.0, "centre_pull_interval_s": 600.0}
ROWS = "document.querySelectorAll('#pending-table tr[data-seq]')"
SEQS = f"[].map.call({ROWS}, function (r) {{ return Number(r.getAttribute('data-seq')); }})"
# A table inside its scrolling box at the page's size: clipped at first, then its far column
# brought into view by scrolling the box alone (the page itself never scrolls sideways).
SIDEWAYS = """(function (id) {
  var table = document.getElementById(id), wrap = table.parentNode, heads = table.querySelectorAll("th");
  var far = heads[heads.length - 1], box = wrap.getBoundingClientRect();
  var inside = function () {
    var r = far.getBoundingClientRect();
    return r.left >= box.left - 1 && r.right <= box.right + 1;
  };
  var out = {overflow: getComputedStyle(wrap).overflowX, wider: wrap.scrollWidth > wrap.clientWidth,
             clippedFirst: !inside(), pageWidth: document.documentElement.scrollWidth,
             viewport: window.innerWidth, boxRight: box.right, boxLeft: box.left};
  far.scrollIntoView({block: "nearest", inline: "nearest"});
  out.scrolled = wrap.scrollLeft !== 0;
  out.reachable = inside();
  return out;
})"""


async def sideways(page: Page, table: str) -> dict[str, Any]:
    found: dict[str, Any] = await page.eval(f"{SIDEWAYS}({table!r})")
    return found


def assert_scrolls_sideways(found: dict[str, Any]) -> None:
    assert found["overflow"] == "auto" and found["wider"], found
    assert found["clippedFirst"] and found["scrolled"] and found["reachable"], found
    assert found["pageWidth"] <= found["viewport"], found
    assert found["boxLeft"] >= 0 and found["boxRight"] <= found["viewport"], found


async def admin_login(page: Page, token: str) -> None:
    await page.eval(f"document.getElementById('admin-token').value = {token!r};"
                    "document.querySelector('#admin-form button[type=submit]').click()")  # fmt: skip
    await page.wait_for("!document.getElementById('replay-now').hidden")


async def test_send_now_delivers_what_the_backoff_would_hold(tmp_path: Path, page: Page) -> None:
    link, close = await start_link(tmp_path, proxy_mode="refuse", **SLOW)
    try:
        rn = link.node
        bills = [make_bill(a, CYCLE) for a in ACCOUNTS] + [make_bill(ORPHAN, CYCLE, amount=90_000)]
        # Loaded with a cursor, as a bills file would: a node still bootstrapping takes no money.
        await rn.node.db.write(lambda c: mirror.apply_changes(c, bills, 1))
        for i in range(2):
            await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[i]}", 10_000 + i, f"p{i}")
        await pay(rn, f"{GOV}-{CYCLE}-{ORPHAN}", 40_000, "orphan")

        replayer = rn.node.replication.replayer
        assert replayer is not None

        async def backing_off() -> bool:
            # Failed, and no wake left over from the payments: the next try is minutes away.
            return replayer.failures > 0 and not replayer.woken and rn.node.link.state != "up"

        async def held() -> bool:
            # A payment's wake may still be in flight when the first failure is counted: the
            # backoff holds once no attempt is counted for half a second.
            failures = replayer.failures
            await asyncio.sleep(0.5)
            return await backing_off() and replayer.failures == failures

        await eventually(held, what="the replayer backing off")
        link.proxy.mode = "pass"
        await asyncio.sleep(1.5)  # the centre is back, but the backoff is 600 s
        assert rn.node.db.read(lambda c: outbox.stats(c).pending) == 3

        await page.goto(rn.url + "/?lang=en")
        await admin_login(page, rn.tokens["admin"])
        await page.wait_for(f"{ROWS}.length === 3")
        assert await page.eval("document.getElementById('link-error').getAttribute('data-code')")
        await page.eval("document.getElementById('replay-now').click()")
        await page.wait_for("document.getElementById('strip-pending-value').textContent === '0'")
        message = await page.eval("document.getElementById('replay-message').textContent")
        assert message == "Sending; waiting for the centre: 3"
        # The link is back: its old error is gone; the one rejection makes the header amber.
        await page.wait_for("document.getElementById('link-error').textContent === '—'")
        assert rn.node.link.last_error is None and rn.node.link.last_error_code is None
        assert await page.eval("document.getElementById('strip-link').getAttribute('data-level')")\
            == "ok"  # fmt: skip
        header = await header_when(page, "h.level === 'warn'")
        assert header["state"] == "attention" and header["color"] == AMBER
        assert header["reasons"] == "why_rejected"
        await page.wait_for("document.querySelector('#pending-list p.muted') !== null", 8)
        await page.wait_for("document.querySelector('#rejected-table td.code') !== null")
        reason = await page.eval("[document.querySelector('#rejected-table td.reason').textContent,"
                                 " document.querySelector('#rejected-table td.code').textContent]")  # fmt: skip
        assert reason == ["The centre has no such bill", "unknown_bill"]
        await page.eval("document.getElementById('lang').click()")
        arabic = await page.eval("document.querySelector('#rejected-table td.reason').textContent")
        assert arabic == "الفاتورة غير موجودة لدى المركز"
        # On a phone the rejected table scrolls inside its box, in Arabic (right to left).
        await resize(page, "phone")
        assert_scrolls_sideways(await sideways(page, "rejected-table"))
        header = await page.eval(HEADER)
        assert header["text"] == "يحتاج انتباهاً"
        assert_clean(page, rn.url)
    finally:
        await close()


async def test_the_pending_list_pages_by_cursor_and_scrolls_on_a_phone(
    tmp_path: Path, page: Page
) -> None:
    accounts = [f"01003000{i:02d}" for i in range(25)]
    runner, rn = await start_node(tmp_path, [make_bill(a, CYCLE) for a in accounts])
    try:
        for i, account in enumerate(accounts):  # no centre: every one stays pending
            await pay(rn, f"{GOV}-{CYCLE}-{account}", 1_000 + i, f"k{i}")
        async with rn.session.get(rn.url + "/v1/admin/pending", headers=rn.headers()) as resp:
            assert resp.status == 403  # a cashier's token
        async with rn.session.get(rn.url + "/v1/admin/pending?state=rejected",
                                  headers=rn.headers("admin")) as resp:  # fmt: skip
            assert resp.status == 400 and (await resp.json())["code"] == "invalid_query"
        async with rn.session.get(rn.url + "/v1/admin/pending?limit=2",
                                  headers=rn.headers("admin")) as resp:  # fmt: skip
            page_one = await resp.json()
        assert [p["state"] for p in page_one["items"]] == ["pending_sync"] * 2
        assert page_one["next"] == str(page_one["items"][-1]["seq"])
        await rn.node.audit.flush()  # every channel's payments were listed: recorded
        async with rn.session.get(rn.url + "/v1/audit?token=ops",
                                  headers=rn.headers("auditor")) as resp:  # fmt: skip
            actions = [e["action"] for e in (await resp.json())["entries"]]
        assert actions == ["payment.list"]  # the 200; the 400 before it is not kept

        await page.goto(rn.url + "/?lang=en")
        await admin_login(page, rn.tokens["admin"])
        await page.wait_for(f"{ROWS}.length === 20")
        first = await page.eval(SEQS)
        nav = "[document.getElementById('pending-newer').disabled, document.getElementById('pending-older').disabled, document.getElementById('pending-page').textContent]"  # fmt: skip
        assert await page.eval(nav) == [True, False, "Page 1"]
        await page.eval("document.getElementById('pending-older').click()")
        await page.wait_for(f"{ROWS}.length === 5")
        second = await page.eval(SEQS)
        assert await page.eval(nav) == [False, True, "Page 2"]
        everything = first + second
        assert everything == sorted(everything, reverse=True) and len(set(everything)) == 25
        await page.eval("document.getElementById('pending-newer').click()")
        await page.wait_for(f"{ROWS}.length === 20")
        assert await page.eval(SEQS) == first

        for lang in ("en", "ar"):
            await page.goto(f"{rn.url}/?lang={lang}")  # the tab keeps the token
            await resize(page, "phone")
            await page.wait_for(f"{ROWS}.length === 20")
            assert_scrolls_sideways(await sideways(page, "pending-table"))
        assert_clean(page, rn.url)
    finally:
        await rn.session.close()
        await runner.cleanup()
