"""The dashboard's transfer-files card in a real headless Chromium against a real node: the
last export and import and what remains unacknowledged, as /v1/status has them, in Arabic
and English."""

from __future__ import annotations

from browser import Page
from nodefixtures import RunningNode
from test_api import pay, payment

from edge import transfers

CARD = """(function () {
  return ["transfer-export", "transfer-import", "transfer-unacked"].map(function (id) {
    return document.getElementById(id).textContent;
  }).concat([document.getElementById("transfer-unacked").getAttribute("data-value")]);
})()"""


async def test_the_card_shows_the_last_export_import_and_what_is_unacknowledged(
    running: RunningNode, page: Page
) -> None:
    for i in range(2):
        status, body, _ = await pay(running, payment(1_000 + i), f"transfer-{i}")
        assert status == 201, body
    now = running.node.clock()
    exported = transfers.Transfer(now, "export", "outbox", 2, 0, 1, 2, None, "a" * 64)
    imported = transfers.Transfer(now, "import", "bills", 1200, 1150, 0, 0, 77, "b" * 64)
    await running.node.db.write(lambda c: (transfers.record(c, exported),
                                           transfers.record(c, imported)))  # fmt: skip

    await page.goto(running.url + "/?lang=en")
    shown = await page.wait_for(f"(function () {{ var c = {CARD}; return c[3] === '2' && c; }})()")
    assert shown[0].startswith("payments: 2 items — ")
    assert shown[1].startswith("bills: 1,200 items, 1,150 changed — ")
    assert shown[2] == "2"  # neither payment has a verdict yet

    await page.goto(running.url + "/?lang=ar")
    shown = await page.wait_for(f"(function () {{ var c = {CARD}; return c[3] === '2' && c; }})()")
    assert shown[0].startswith("دفعات: 2 عنصر")
    assert shown[1].startswith("فواتير: 1,200 عنصر, 1,150 تغيّر — ")
    title = await page.eval("document.querySelector('#transfers-card h2').textContent")
    assert title == "ملفات النقل (دون اتصال)"
