"""The dashboard in a real headless Chromium, against real nodes (with a centre and a real
upsd where it matters), and the JSON views it draws from.

Screenshots go to $EDGE_SCREENSHOT_DIR when set (`docs/` refreshes the README's), else to tmp.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from browser import Page
from centrefixtures import ACCOUNTS, Link, start_link
from helpers import CYCLE, GOV, NAME, eventually, make_bill
from nodefixtures import RunningNode, start_node
from upsd import UPS, Upsd

import outbox
from edge import mirror
from edge.power.policy import Reading

ORPHAN = "0999999999"  # in the node's mirror only: the centre rejects its payment (unknown_bill)
UPS_FAST = {"ups_source": "nut", "ups_name": UPS, "ups_poll_s": 1.0, "ups_poll_battery_s": 0.5,
            "ups_timeout_s": 1.0, "power_dead_time_s": 30.0}  # fmt: skip
NUMBERS = ("power-charge", "power-runtime", "power-load", "power-voltage", "outbox-pending",
           "outbox-rejected", "outbox-delivered", "mirror-bills", "link-skew")  # fmt: skip
READ_PAGE = """(function () {
  var by = function (id) { return document.getElementById(id); }, out = {}, i;
  var ids = IDS;
  for (i = 0; i < ids.length; i++) { out[ids[i]] = by(ids[i]).getAttribute("data-value"); }
  out.texts = {pending: by("outbox-pending").textContent, bills: by("mirror-bills").textContent,
               charge: by("power-charge").textContent};
  out.power = by("power-badge").getAttribute("data-state");
  out.link = by("link-badge").getAttribute("data-state");
  out.mode = by("mode").getAttribute("data-state");
  out.mirror = by("mirror-badge").getAttribute("data-state");
  out.dir = document.documentElement.dir; out.lang = document.documentElement.lang;
  out.title = document.title;
  return out;
})()""".replace("IDS", json.dumps(NUMBERS))


async def get_json(rn: RunningNode, path: str, who: str | None = None) -> tuple[int, Any]:
    headers = rn.headers(who) if who else {}
    async with rn.session.get(rn.url + path, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def pay(rn: RunningNode, bill_id: str, amount: int, key: str) -> None:
    body = {"bill_id": bill_id, "amount": amount, "method": "cash", "cashier": "huda"}
    async with rn.session.post(f"{rn.url}/v1/payments", json=body,
                               headers=rn.headers(**{"Idempotency-Key": key})) as resp:  # fmt: skip
        assert resp.status == 201, await resp.text()


def pending(rn: RunningNode) -> int:
    return rn.node.db.read(lambda c: outbox.stats(c).pending)


async def busy_node(link: Link, *, delivered: int, waiting: int) -> None:
    """Payments delivered, one rejected by the centre, then `waiting` held by a dead link."""
    rn = link.node

    async def bootstrapped() -> bool:
        return rn.node.db.read(mirror.state).bills == len(ACCOUNTS)

    await eventually(bootstrapped, what="the mirror to bootstrap")
    orphan = make_bill(ORPHAN, CYCLE, amount=90_000)
    await rn.node.db.write(lambda c: mirror.apply_changes(c, [orphan], None))
    for i in range(delivered):
        await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[i % len(ACCOUNTS)]}", 25_000 + 500 * i, f"d{i}")
    await pay(rn, orphan["bill_id"], 40_000, "orphan")

    async def settled() -> bool:
        return pending(rn) == 0

    await eventually(settled, what="every payment to be settled")
    link.proxy.mode = "refuse"
    for i in range(waiting):
        await pay(rn, f"{GOV}-{CYCLE}-{ACCOUNTS[-1 - i]}", 12_000, f"w{i}")

    async def down() -> bool:
        return rn.node.link.state == "down"

    await eventually(down, what="the link to be down")


async def page_matches_status(page: Page, rn: RunningNode, **expect: str) -> dict[str, Any]:
    """The page's figures equal /v1/status's (retried: the page polls every second)."""
    last: dict[str, Any] = {}

    async def same_as_status() -> dict[str, Any] | None:
        shown = last["shown"] = await page.eval(READ_PAGE)
        _, status = last["status"] = await get_json(rn, "/v1/status")
        p, o, m, lk = status["power"], status["outbox"], status["mirror"], status["link"]
        want = {"power-charge": p["battery_charge"], "power-runtime": p["runtime_s"],
                "power-load": p["load_pct"], "power-voltage": p["input_voltage"],
                "outbox-pending": o["pending"], "outbox-rejected": o["rejected"],
                "outbox-delivered": o["delivered"], "mirror-bills": m["bills"],
                "link-skew": lk["clock_skew_s"]}  # fmt: skip
        got = {k: None if shown[k] in (None, "") else float(shown[k]) for k in NUMBERS}
        same = got == {k: None if v is None else float(v) for k, v in want.items()}
        states = {"power": p["state"], "link": lk["state"], "mode": status["mode"],
                  "mirror": "stale" if m["stale"] else "fresh"}  # fmt: skip
        same = same and all(shown[k] == v for k, v in states.items())
        same = same and all(shown[k] == v for k, v in expect.items())
        if same:
            assert shown["texts"]["pending"] == f"{o['pending']:,}"
            assert shown["texts"]["bills"] == f"{m['bills']:,}"
            return shown  # type: ignore[no-any-return]
        return None

    return await eventually(  # type: ignore[no-any-return]
        same_as_status, 5, lambda: f"page {last['shown']} != status {last['status'][1]}", every=0.2
    )


def assert_clean(page: Page, origin: str) -> None:
    assert page.failures == [], page.failures
    assert page.console_errors == [], page.console_errors
    foreign = [u for u in page.requests if not u.startswith(origin + "/")]
    assert foreign == [], f"requests that left the node: {foreign}"


async def test_arabic_page_matches_status_and_shows_rejected_only_to_admin(
    link: Link, page: Page
) -> None:
    rn = link.node
    await busy_node(link, delivered=4, waiting=2)
    await page.goto(rn.url + "/")
    shown = await page_matches_status(page, rn, dir="rtl", lang="ar")
    assert shown["title"] == "لوحة تشغيل عقدة المحافظة"
    assert shown["link"] == "down" and shown["outbox-pending"] == "2"
    assert await page.eval("document.getElementById('link-since').textContent") != "—"
    assert (
        await page.wait_for("document.getElementById('outbox-today').getAttribute('data-value')")
        == "4"
    )
    # Without an admin token the rejected payment is counted but never listed or fetched.
    body = await page.eval("document.body.textContent")
    assert ORPHAN not in body and "unknown_bill" not in body
    assert not any("/v1/admin/" in u for u in page.requests)
    await page.eval(f"document.getElementById('admin-token').value = {rn.tokens['admin']!r};"
                    "document.querySelector('#admin-form button[type=submit]').click()")  # fmt: skip
    await page.wait_for("document.querySelector('#rejected-table td.reason') !== null")
    cells = await page.eval(
        "[].map.call(document.querySelectorAll('#rejected-table td'), function (td) {"
        " return td.textContent; })"
    )
    assert "unknown_bill" in cells and f"{GOV}-{CYCLE}-{ORPHAN}" in cells and "400.00" in cells
    assert await page.eval("sessionStorage.getItem('edge.admin_token')") == rn.tokens["admin"]
    assert_clean(page, rn.url)


async def test_english_switch_is_left_to_right_and_remembered(
    running: RunningNode, page: Page
) -> None:
    await page.goto(running.url + "/?lang=en")
    shown = await page_matches_status(page, running, dir="ltr", lang="en")
    assert shown["title"] == "Governorate node: operator dashboard"
    assert await page.eval("document.getElementById('insecure').hidden") is True
    assert await page.eval("document.getElementById('plain-http').hidden") is True  # loopback
    assert await page.eval("document.getElementById('lang').textContent") == "العربية"
    await page.eval("document.getElementById('lang').click()")
    assert await page.eval("document.documentElement.dir + ' ' + document.title") == (
        "rtl لوحة تشغيل عقدة المحافظة"
    )
    await page.eval("document.getElementById('lang').click()")
    await page.goto(running.url + "/")  # no ?lang: the choice was kept
    await page_matches_status(page, running, dir="ltr", lang="en")
    assert_clean(page, running.url)


async def test_plain_http_to_another_machine_is_a_warning_on_the_page(
    tmp_path: Path, page: Page
) -> None:
    secret = tmp_path / "centre.secret"
    secret.write_text("a-secret-for-a-centre-that-is-not-there\n")
    secret.chmod(0o600)
    # 0.0.0.0 is not a loopback name, yet Linux delivers a connection to it on this machine
    # (refused: nothing listens on port 9): no traffic leaves; the warning is about the URL.
    runner, rn = await start_node(tmp_path / "node", [], centre_url="http://0.0.0.0:9",
                                  centre_secret_file=secret, centre_timeout_s=0.5)  # fmt: skip
    try:
        banner = "document.getElementById('insecure')"
        await page.goto(rn.url + "/")
        await page.wait_for(f"!{banner}.hidden")
        assert "غير مشفّر" in await page.eval(f"{banner}.textContent")
        assert "http://" in await page.eval("document.getElementById('link-security').textContent")
        await page.goto(rn.url + "/?lang=en")
        await page.wait_for(f"document.documentElement.lang === 'en' && !{banner}.hidden")
        assert "not encrypted" in await page.eval(f"{banner}.textContent")
        assert_clean(page, rn.url)
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_plain_http_to_the_lan_is_a_warning_on_the_page(tmp_path: Path, page: Page) -> None:
    # http.host 0.0.0.0 (every address) without TLS; the socket itself is on 127.0.0.1.
    runner, rn = await start_node(tmp_path / "node", [], http_host="0.0.0.0")
    try:
        banner = "document.getElementById('plain-http')"
        await page.goto(rn.url + "/")
        await page.wait_for(f"!{banner}.hidden")
        assert "دون تشفير" in await page.eval(f"{banner}.textContent")
        assert await page.eval("document.getElementById('insecure').hidden") is True
        await page.goto(rn.url + "/?lang=en")
        await page.wait_for(f"document.documentElement.lang === 'en' && !{banner}.hidden")
        assert "unencrypted" in await page.eval(f"{banner}.textContent")
        assert_clean(page, rn.url)
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_badge_turns_to_battery_within_5_s_of_the_ups(
    upsd: Upsd, tmp_path: Path, page: Page
) -> None:
    runner, rn = await start_node(tmp_path, [make_bill("0100234567")], ups_port=upsd.port,
                                  **UPS_FAST)  # fmt: skip
    try:
        await page.goto(rn.url + "/")
        await page_matches_status(page, rn, power="mains")
        upsd.set_status("OB DISCHRG")
        started = time.monotonic()
        await page.wait_for("document.getElementById('power-badge').getAttribute('data-state')"
                            " === 'battery'", timeout=5)  # fmt: skip
        took = time.monotonic() - started
        flags = await page.eval("[].map.call(document.querySelectorAll('#ups-flags .flag'),"
                                " function (f) { return f.getAttribute('data-flag'); })")  # fmt: skip
        assert flags == ["OB", "DISCHRG"]
        # The chart is redrawn with the outage shaded once the state changed.
        await page.wait_for(
            "document.querySelector('#chart rect.period-battery') !== null", timeout=5
        )
        await page_matches_status(page, rn, power="battery")
        assert took < 5
        assert_clean(page, rn.url)
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_power_history_has_readings_outages_and_marks(upsd: Upsd, tmp_path: Path) -> None:
    runner, rn = await start_node(tmp_path, [], ups_port=upsd.port, **UPS_FAST)
    try:
        rn.node.history.every_s = 0.2

        async def on_mains() -> bool:
            return rn.node.power.state == "mains"

        await eventually(on_mains, what="mains")
        upsd.set("battery.charge", "80")
        upsd.set_status("OB")

        async def on_battery() -> bool:
            return rn.node.power.state == "battery"

        await eventually(on_battery, what="battery")

        async def stored_on_battery() -> bool:
            found = rn.node.db.read(
                lambda c: c.execute("SELECT COUNT(*) FROM power_readings WHERE flags = 'OB'")
            )
            return int(found.fetchone()[0]) >= 2

        await eventually(stored_on_battery, what="readings stored while on battery")
        status, doc = await get_json(rn, "/v1/power/history?hours=2")
        assert status == 200 and doc["hours"] == 2 and doc["state"] == "battery"
        assert [p["state"] for p in doc["periods"]] == ["unknown", "mains", "battery"]
        assert doc["periods"][-1]["to"] is None
        charges = [r["charge"] for r in doc["readings"]]
        assert charges[0] == 100 and charges[-1] == 80 and len(charges) >= 3
        assert doc["marks"]["runtime_low_s"] == 180
        for bad in ("0", "169", "x", "-1", "1.5"):
            status, problem = await get_json(rn, f"/v1/power/history?hours={bad}")
            assert status == 400 and problem["code"] == "invalid_query"
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_assets_are_the_shipped_files_only(running: RunningNode) -> None:
    async with running.session.get(running.url + "/static/dashboard.js?v=0.1.0") as resp:
        assert resp.status == 200 and "javascript" in resp.content_type
        assert "max-age" in resp.headers["Cache-Control"]
    for name in ("nope.js", "..%2Fdata%2Fedge.db", "index.html", "icon.svg%00.db"):
        status, problem = await get_json(running, f"/static/{name}")
        assert status == 404 and problem["code"] == "not_found", name
    async with running.session.get(running.url + "/") as resp:
        html = await resp.text()
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert 'lang="ar" dir="rtl"' in html and "{{version}}" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page must not load from outside"


async def test_readings_are_stored_at_most_once_a_minute(running: RunningNode) -> None:
    node = running.node
    raw = {"battery.charge.low": "25", "battery.runtime.low": "120"}
    first = Reading(status="OL", charge=99.0, runtime_s=3500.0, raw=raw)
    await node.history.note(first)
    await node.history.note(Reading(status="OL", charge=98.0))
    await node.history.note(Reading(error="DATA-STALE"))
    rows = node.db.read(lambda c: c.execute("SELECT flags, charge FROM power_readings").fetchall())
    assert rows == [("OL", 99.0)]
    assert node.history.marks() == {"charge_low": 25.0, "runtime_low_s": 180.0,
                                         "ups_runtime_low_s": 120.0}  # fmt: skip
    node.history.every_s = 0.0  # the next one is due: a UPS with no data is stored as a gap
    await node.history.note(Reading(error="DATA-STALE"))
    rows = node.db.read(lambda c: c.execute("SELECT flags, charge FROM power_readings").fetchall())
    assert rows == [("OL", 99.0), (None, None)]


async def test_rejected_list_needs_admin_and_open_views_carry_no_personal_data(
    link: Link,
) -> None:
    rn = link.node
    await busy_node(link, delivered=2, waiting=1)
    assert (await get_json(rn, "/v1/admin/rejected"))[0] == 401
    status, problem = await get_json(rn, "/v1/admin/rejected", "cashier")
    assert status == 403 and problem["code"] == "forbidden"
    status, doc = await get_json(rn, "/v1/admin/rejected", "admin")
    assert status == 200 and doc["total"] == 1
    [entry] = doc["entries"]
    assert entry["reason"] == "unknown_bill" and entry["amount"] == 40_000
    assert entry["bill_id"] == f"{GOV}-{CYCLE}-{ORPHAN}" and entry["channel"] == "counter-1"
    status, overview = await get_json(rn, "/v1/overview")
    assert status == 200 and overview["outbox"]["delivered_today"] == 2
    assert overview["link"]["state"] == "down" and overview["link"]["since"]
    assert [p["state"] for p in overview["link"]["periods"]][-2:] == ["degraded", "down"]
    for path in ("/v1/status", "/v1/overview", "/v1/power/history", "/metrics", "/"):
        async with rn.session.get(rn.url + path) as resp:
            text = await resp.text()
        assert ORPHAN not in text and ACCOUNTS[0] not in text and NAME not in text, path


def ups_on_battery(upsd: Upsd) -> None:
    """The dummy UPS mid-outage, with the low mark its driver reports (not settable by SET)."""
    dev = upsd.etc / "dummy.dev"
    tmp = dev.with_suffix(".tmp")
    tmp.write_text("ups.status: OB DISCHRG\nbattery.charge: 64\nbattery.charge.low: 20\n"
                   "battery.runtime: 1900\ninput.voltage: 0\nups.load: 41\n")  # fmt: skip
    tmp.chmod(0o600)
    tmp.replace(dev)  # a missing file kills the driver: replace, never rewrite in place
    later = time.time() + 2  # dummy-ups re-reads when the mtime moves in whole seconds
    os.utime(dev, (later, later))


async def seed_a_day(rn: RunningNode) -> None:
    """A rationed day before this run: two outages, the first down to low battery."""
    now = time.time()
    start = now - 24 * 3600
    outages = [(start + 4 * 3600, 3.2 * 3600), (start + 15 * 3600, 1.4 * 3600)]
    charge, state, readings = 100.0, "mains", []
    events = [(start - 3600, "unknown", "mains", "OL", 100.0, 3000.0, "seeded: mains")]
    for minute in range(int((now - 120 - start) // 60)):
        at = start + minute * 60
        out = any(a <= at < a + d for a, d in outages)
        charge = max(5.0, charge - 0.43) if out else min(100.0, charge + 0.35)
        new = ("low" if charge <= 20 else "battery") if out else "mains"
        flags = "OB DISCHRG" + (" LB" if new == "low" else "") if out else "OL CHRG"
        if new != state:
            events.append((at, state, new, flags, charge, charge * 30, f"seeded: {new}"))
            state = new
        readings.append((at, flags, round(charge, 1), round(charge * 30), 38.0, 0 if out else 221))

    def write(conn: Any) -> None:
        conn.executemany("INSERT INTO power_events (at, from_state, to_state, flags, charge,"
                         " runtime_s, reason) VALUES (?, ?, ?, ?, ?, ?, ?)", events)  # fmt: skip
        conn.executemany("INSERT INTO power_readings (at, flags, charge, runtime_s, load_pct,"
                         " input_voltage) VALUES (?, ?, ?, ?, ?, ?)", readings)  # fmt: skip

    await rn.node.db.write(write)


async def test_screenshots_of_a_busy_node_on_battery(
    fresh_upsd: Upsd, tmp_path: Path, page: Page
) -> None:
    upsd = fresh_upsd  # ups_on_battery rewrites its device file
    out = Path(os.environ.get("EDGE_SCREENSHOT_DIR") or tmp_path)
    link, close = await start_link(tmp_path, ups_port=upsd.port, **UPS_FAST)
    try:
        rn = link.node
        await seed_a_day(rn)
        await busy_node(link, delivered=9, waiting=3)
        ups_on_battery(upsd)

        async def on_battery() -> bool:
            return rn.node.power.state == "battery" and rn.node.power.load_pct == 41

        await eventually(on_battery, what="the UPS on battery")
        for lang in ("ar", "en"):
            await page.goto(f"{rn.url}/?lang={lang}")
            await page_matches_status(page, rn, power="battery", lang=lang)
            if lang == "ar":  # the operator's list too; the tab keeps the token for "en"
                await page.eval(f"document.getElementById('admin-token').value = "
                                f"{rn.tokens['admin']!r}; document.getElementById('admin-form')"
                                ".querySelector('button').click()")  # fmt: skip
            await page.wait_for("document.querySelector('#rejected-table td.reason') !== null")
            await page.wait_for("document.querySelectorAll('#chart rect.period-low').length")
            await page.wait_for("document.getElementById('power-charge-low').textContent === '20'")
            await page.wait_for("document.querySelector('#pending-table tr[data-seq]') !== null")
            await page.screenshot(out / f"dashboard-{lang}.png")
            assert (out / f"dashboard-{lang}.png").stat().st_size > 20_000
            # A phone's first screen: the strip with the link down and the payments waiting.
            await page.eval("window.scrollTo(0, 0)")
            await page.screenshot(out / f"dashboard-{lang}-phone.png", 390, height=844,
                                  mobile=True)  # fmt: skip
            assert (out / f"dashboard-{lang}-phone.png").stat().st_size > 10_000
            await page.send("Emulation.clearDeviceMetricsOverride")
        assert_clean(page, rn.url)
    finally:
        await close()
