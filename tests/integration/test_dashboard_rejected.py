"""The dashboard's rejected-payments alert and resolve buttons in a real headless Chromium.

A node with a live link (mode `normal`) holds two payments the real centre rejected: the header
is not "Normal"/green but an alert, in Arabic and in English; an admin resolves them from the
table (one refunded, one retargeted to the right bill) and the alert clears.
"""

from __future__ import annotations

import time

from browser import Page
from centrefixtures import ACCOUNTS, Link
from helpers import CYCLE, GOV, eventually, make_bill
from test_dashboard import assert_clean, pay

import outbox
from edge import mirror

ORPHAN = "0999999999"  # in the node's mirror only: the centre rejects its payment


HEADER = """(function () {
  var mode = document.getElementById("mode"), alert = document.getElementById("rejected-alert");
  return {mode: mode.getAttribute("data-state"), text: mode.textContent,
          color: getComputedStyle(mode).backgroundColor, alert: alert.hidden ? null : alert.textContent};
})()"""


async def test_unresolved_rejections_are_an_alert_until_an_admin_resolves_them(
    link: Link, page: Page
) -> None:
    rn = link.node

    async def bootstrapped() -> bool:
        return rn.node.db.read(mirror.state).bills == len(ACCOUNTS)

    await eventually(bootstrapped, what="the mirror to bootstrap")
    orphan = make_bill(ORPHAN, CYCLE, amount=90_000)
    await rn.node.db.write(lambda c: mirror.apply_changes(c, [orphan], None, now=time.time()))
    await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[0]}", 10_000, "fine")
    await pay(rn, orphan["bill_id"], 40_000, "orphan")
    await pay(rn, orphan["bill_id"], 25_000, "orphan-2")

    async def rejected() -> bool:
        return rn.node.db.read(outbox.stats).rejected == 2 and rn.node.link.state == "up"

    await eventually(rejected, what="the centre's rejection, the link up")
    assert rn.node.mode() == "normal"
    await page.goto(rn.url + "/")
    header = await page.wait_for(f"(function () {{ var h = {HEADER}; return h.alert && h; }})()")
    assert header["mode"] == "attention" and header["text"] == "يحتاج انتباهاً"
    assert header["alert"] == "دفعات مرفوضة بلا معالجة: 2"
    assert header["color"] != "rgb(35, 122, 59)"  # not the green of "Normal"
    await page.eval("document.getElementById('lang').click()")
    header = await page.eval(HEADER)
    assert (header["text"], header["alert"]) == (
        "Needs attention", "Rejected payments unresolved: 2",
    )  # fmt: skip

    # The operator's table gets the buttons: refund the older one, move the newer one to the
    # right bill (rows are newest first).
    await page.eval(f"document.getElementById('admin-token').value = {rn.tokens['admin']!r};"
                    "document.querySelector('#admin-form button[type=submit]').click()")  # fmt: skip
    await page.wait_for(
        "document.querySelectorAll('#rejected-table button[data-action=refund]').length === 2"
    )
    await page.eval("document.querySelectorAll('#rejected-table button[data-action=refund]')[1]"
                    ".click()")  # fmt: skip
    assert await page.eval("document.getElementById('resolve-form').hidden") is False
    assert await page.eval("document.getElementById('resolve-bill').hidden") is True
    await page.eval("document.getElementById('resolve-reason').value = 'cash given back';"
                    "document.querySelector('#resolve-form button[type=submit]').click()")  # fmt: skip
    await page.wait_for(
        "document.querySelector('#rejected-table td[data-resolved=refund]') !== null"
    )
    assert (
        await page.eval(
            "document.querySelector('#rejected-table td[data-resolved=refund]').textContent"
        )
        == "refunded (ops)"
    )
    await page.eval(
        "document.querySelector('#rejected-table button[data-action=retarget]').click()"
    )
    assert await page.eval("document.getElementById('resolve-bill').hidden") is False
    right = f"{GOV}-{CYCLE}-{ACCOUNTS[1]}"
    await page.eval(f"document.getElementById('resolve-bill').value = {right!r};"
                    "document.getElementById('resolve-reason').value = 'wrong account typed';"
                    "document.querySelector('#resolve-form button[type=submit]').click()")  # fmt: skip
    await page.wait_for(
        "document.querySelector('#rejected-table td[data-resolved=retarget]') !== null"
    )
    header = await page.wait_for(
        f"(function () {{ var h = {HEADER}; return h.mode === 'normal' && h; }})()"
    )
    assert (header["text"], header["alert"], header["color"]) == (
        "Normal",
        None,
        "rgb(35, 122, 59)",
    )
    _, doc = await get(link, "/v1/admin/rejected")
    assert doc["unresolved"] == 0
    assert [e["resolution"]["action"] for e in doc["entries"]] == ["retarget", "refund"]
    async with rn.session.get(f"{rn.url}/v1/bills/{orphan['bill_id']}", headers=rn.headers()) as r:
        assert (await r.json())["due"] == 90_000  # both resolved: the wrong bill is freed
    async with rn.session.get(f"{rn.url}/v1/bills/{right}", headers=rn.headers()) as r:
        assert (await r.json())["due"] == 100_000 - 25_000  # the money moved here
    assert_clean(page, rn.url)


async def get(link: Link, path: str) -> tuple[int, dict[str, object]]:
    rn = link.node
    async with rn.session.get(rn.url + path, headers=rn.headers("admin")) as resp:
        return resp.status, await resp.json()
