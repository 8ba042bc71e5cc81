"""The dashboard's services card in headless Chromium: today's meter readings and requests,
and the pending ones, equal to /v1/status's `services`, while the centre is down and after
it returns (DESIGN 5.15, 5.16)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from browser import Page
from centrefixtures import ACCOUNTS, eventually, start_link
from nodefixtures import RunningNode

from edge import mirror, tokens

IDS = ("readings-today", "readings-pending", "requests-today", "requests-open")
READ_CARD = """(function () {
  var out = {}, ids = IDS, i;
  for (i = 0; i < ids.length; i++) {
    var el = document.getElementById(ids[i]);
    out[ids[i]] = el.getAttribute("data-value");
  }
  out.heading = document.querySelector("#services-card h2").textContent;
  return out;
})()""".replace("IDS", json.dumps(IDS))


async def post(rn: RunningNode, path: str, who: str, body: Any, key: str) -> None:
    headers = rn.headers(who, **{"Idempotency-Key": key})
    async with rn.session.post(rn.url + path, json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()


async def card_matches_status(page: Page, rn: RunningNode, want: dict[str, int]) -> None:
    last: dict[str, Any] = {}

    async def same() -> bool:
        shown = last["shown"] = await page.eval(READ_CARD)
        async with rn.session.get(rn.url + "/v1/status") as resp:
            services = last["status"] = (await resp.json())["services"]
        from_status = {k.replace("_", "-"): v for k, v in services.items()}
        got = {k: int(shown[k]) if shown[k] else None for k in IDS}
        return got == from_status == {k.replace("_", "-"): v for k, v in want.items()}

    await eventually(same, 10, lambda: f"card {last.get('shown')} status {last.get('status')}")


async def test_the_card_counts_todays_readings_and_requests_and_the_pending_ones(
    tmp_path: Path, page: Page
) -> None:
    (tmp_path / "node").mkdir()
    reader = tokens.add_token(tmp_path / "node" / "tokens.toml", "meter-1", ["read_meter"])
    desk = tokens.add_token(tmp_path / "node" / "tokens.toml", "desk-1", ["request"])
    link, close = await start_link(tmp_path)
    try:
        rn = link.node
        rn.tokens |= {"reader": reader, "desk": desk}

        async def bootstrapped() -> bool:
            return rn.node.db.read(mirror.state).bills == len(ACCOUNTS)

        await eventually(bootstrapped, what="the mirror's bootstrap")
        await page.goto(rn.url + "/")
        await card_matches_status(page, rn, {"readings_today": 0, "readings_pending": 0,
                                             "requests_today": 0, "requests_open": 0})  # fmt: skip
        link.proxy.mode = "refuse"
        today = date.today().isoformat()
        for i, account in enumerate(ACCOUNTS[:2]):
            reading = {"account": account, "meter": f"EM-{account[-6:]}", "reading": 100 + i,
                       "read_at": today, "source": "inspector"}  # fmt: skip
            await post(rn, "/v1/meter-readings", "reader", reading, f"r-{i}")
        complaint = {"kind": "complaint", "account": ACCOUNTS[0], "text": "انقطاع متكرر"}
        await post(rn, "/v1/requests", "desk", complaint, "q-1")
        await card_matches_status(page, rn, {"readings_today": 2, "readings_pending": 2,
                                             "requests_today": 1, "requests_open": 1})  # fmt: skip
        shown = await page.eval(READ_CARD)
        assert shown["heading"] == "قراءات العدادات والطلبات"

        link.proxy.mode = "pass"  # replayed: nothing pending, the request stays open
        await card_matches_status(page, rn, {"readings_today": 2, "readings_pending": 0,
                                             "requests_today": 1, "requests_open": 1})  # fmt: skip
        assert page.failures == [] and page.console_errors == []
    finally:
        await close()
