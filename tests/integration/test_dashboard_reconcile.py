"""The dashboard's reconciliation line in a real headless Chromium (issue 16): "not run yet"
until an admin presses the button, then the day, the result and its counts, in Arabic and
English, the same as /v1/status says."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from browser import Page
from centrefixtures import Link
from test_dashboard import assert_clean

LINE = """(function () {
  var b = document.getElementById("reconcile-badge");
  return {state: b.getAttribute("data-state"), badge: b.textContent,
          day: document.getElementById("reconcile-day").textContent,
          counts: document.getElementById("reconcile-counts").textContent,
          button: !document.getElementById("reconcile-now").hidden};
})()"""


async def test_the_last_reconciliation_is_on_the_dashboard(link: Link, page: Page) -> None:
    rn = link.node
    await page.goto(rn.url + "/")
    line = await page.wait_for(f"(function () {{ var l = {LINE}; return l.state && l; }})()")
    assert (line["state"], line["badge"], line["button"]) == ("none", "لم تُجرَ بعد", False)

    await page.eval(f"document.getElementById('admin-token').value = {rn.tokens['admin']!r};"
                    "document.querySelector('#admin-form button[type=submit]').click()")  # fmt: skip
    await page.wait_for("!document.getElementById('reconcile-now').hidden")
    await page.eval("document.getElementById('reconcile-now').click()")
    line = await page.wait_for(
        f"(function () {{ var l = {LINE}; return l.state === 'ok' && l; }})()"
    )
    yesterday = (datetime.now(ZoneInfo("Asia/Damascus")).date() - timedelta(days=1)).isoformat()
    assert (line["badge"], line["day"]) == ("مطابقة", yesterday)
    assert line["counts"] == "مفقود 0 · زائد 0 · مبلغ 0 · حكم 0 · منتظر 0"
    async with rn.session.get(rn.url + "/v1/status") as resp:
        status = await resp.json()
    assert (status["reconcile"]["day"], status["reconcile"]["ok"]) == (yesterday, True)

    await page.eval("document.getElementById('lang').click()")
    line = await page.eval(LINE)
    assert (line["badge"], line["counts"]) == (
        "matches", "missing 0 · extra 0 · amount 0 · verdict 0 · pending 0",
    )  # fmt: skip
    assert_clean(page, rn.url)
