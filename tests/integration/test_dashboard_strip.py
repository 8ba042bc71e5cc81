"""The dashboard's status strip and the header's mode in a real headless Chromium, against real
nodes in each state: visible without scrolling on a desktop and a phone, in Arabic and English;
amber or red for a stale mirror, a dead task, an offline limit near and hit; the link's error
shown by code, bidi-isolated, with the bootstrap's progress drawn when the status carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from browser import Page
from helpers import eventually, make_bill
from nodefixtures import RunningNode, start_node
from test_dashboard import assert_clean, pay

from edge import errors, mirror

ACCOUNTS = [f"01002345{i:02d}" for i in range(10)]
SIZES = {"desktop": (1280, 900, False), "phone": (390, 844, True)}
STRIP = ("strip-power", "strip-link", "strip-pending", "strip-rejected", "strip-mirror")
AMBER, RED, GREEN = "rgb(184, 110, 0)", "rgb(179, 20, 31)", "rgb(35, 122, 59)"
BOXES = """(function () {
  var out = {}, ids = IDS, i;
  for (i = 0; i < ids.length; i++) {
    var r = document.getElementById(ids[i]).getBoundingClientRect();
    out[ids[i]] = {top: r.top, left: r.left, bottom: r.bottom, right: r.right, width: r.width};
  }
  out.viewport = {width: window.innerWidth, height: window.innerHeight,
                  scrollWidth: document.documentElement.scrollWidth};
  return out;
})()""".replace("IDS", repr(list(STRIP)).replace("'", '"'))
HEADER = """(function () {
  var mode = document.getElementById("mode"), why = document.getElementById("mode-reasons");
  return {state: mode.getAttribute("data-state"), level: mode.getAttribute("data-level"),
          text: mode.textContent, color: getComputedStyle(mode).backgroundColor,
          reasons: why.getAttribute("data-reasons") || "", shown: why.hidden ? "" : why.textContent};
})()"""


async def resize(page: Page, size: str) -> None:
    width, height, mobile = SIZES[size]
    await page.send("Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})  # fmt: skip
    # A page wider than the phone widens its layout viewport: then this wait fails too.
    await page.wait_for(f"window.innerWidth === {width} && window.innerHeight === {height}")


async def header_when(page: Page, condition: str) -> dict[str, Any]:
    """The header once `condition` (JavaScript over `h`) holds; the page polls every second."""
    found: dict[str, Any] = await page.wait_for(
        f"(function () {{ var h = {HEADER}; return ({condition}) && h; }})()"
    )
    return found


@contextlib.asynccontextmanager
async def node_with(
    tmp_path: Path, *, as_of: float | None = None, **overrides: Any
) -> AsyncIterator[RunningNode]:
    """A real node (no UPS, no centre unless given) whose mirror was loaded at `as_of`."""
    runner, rn = await start_node(tmp_path, [], **overrides)
    try:
        bills = [make_bill(a, amount=50_000) for a in ACCOUNTS]
        stamp = time.time() if as_of is None else as_of
        await rn.node.db.write(lambda c: mirror.apply_changes(c, bills, 1, now=stamp))
        yield rn
    finally:
        await rn.session.close()
        await runner.cleanup()


def bill(i: int) -> str:
    return f"DAM-2026-05-{ACCOUNTS[i]}"


async def test_the_strip_is_on_screen_without_scrolling_on_desktop_and_phone(
    tmp_path: Path, page: Page
) -> None:
    # A node with trouble to show: payments waiting, a stale mirror, a limit near, so the
    # header's reasons take room too.
    async with node_with(tmp_path, as_of=time.time() - 7200, limits_offline_max_count=4) as rn:
        for i in range(4):
            await pay(rn, bill(i), 10_000, f"k{i}")
        for lang in ("ar", "en"):
            for size in SIZES:
                await resize(page, size)
                await page.goto(f"{rn.url}/?lang={lang}")
                await page.wait_for("document.getElementById('strip-pending-value')"
                                    ".getAttribute('data-value') === '4'")  # fmt: skip
                await header_when(page, "h.reasons.indexOf('why_limit_hit') >= 0")
                boxes = await page.eval(BOXES)
                view = boxes.pop("viewport")
                for name, box in boxes.items():
                    where = f"{name} ({lang}, {size}): {box} in {view}"
                    assert box["width"] > 0, where
                    assert box["top"] >= 0 and box["left"] >= 0, where
                    assert box["bottom"] <= view["height"] and box["right"] <= view["width"], where
                assert view["scrollWidth"] <= view["width"], f"{lang} {size}: sideways scroll"
                assert await page.eval("document.documentElement.dir") == (
                    "rtl" if lang == "ar" else "ltr"
                )
        assert_clean(page, rn.url)


async def test_a_stale_mirror_turns_the_header_amber(tmp_path: Path, page: Page) -> None:
    async with node_with(tmp_path, as_of=time.time() - 7200) as rn:  # stale after 3600 s
        await page.goto(rn.url + "/?lang=en")
        header = await header_when(page, "h.level !== null")
        assert rn.node.mode() == "normal"
        assert header == {"state": "attention", "level": "warn", "text": "Needs attention",
                          "color": AMBER, "reasons": "why_mirror_stale",
                          "shown": "Bills mirror is stale"}  # fmt: skip
        item = "document.getElementById('strip-mirror')"
        assert await page.eval(f"{item}.getAttribute('data-level')") == "warn"
        assert await page.eval("document.getElementById('strip-mirror-value').textContent") == (
            "2 h 0 min"
        )
        await page.eval("document.getElementById('lang').click()")
        header = await page.eval(HEADER)
        assert (header["text"], header["shown"]) == ("يحتاج انتباهاً", "نسخة الفواتير قديمة")
        # Fresh bills from the centre: green and "Normal" again.
        fresh = [make_bill(ACCOUNTS[0], amount=50_000)]
        await rn.node.db.write(lambda c: mirror.apply_changes(c, fresh, 2, now=time.time()))
        header = await header_when(page, "h.level === 'ok'")
        assert (header["state"], header["color"], header["reasons"]) == ("normal", GREEN, "")
        assert_clean(page, rn.url)


async def test_a_dead_background_task_turns_the_header_red(tmp_path: Path, page: Page) -> None:
    async with node_with(tmp_path) as rn:
        await page.goto(rn.url + "/?lang=en")
        header = await header_when(page, "h.level !== null")
        assert (header["state"], header["color"]) == ("normal", GREEN)

        async def dies() -> None:
            await asyncio.sleep(0.1)
            raise RuntimeError("disk went away")

        rn.node.tasks.start("mirror-sweep", dies)  # a real task of the node's supervisor
        header = await header_when(page, "h.level === 'bad'")
        assert header["state"] == "attention" and header["color"] == RED
        assert header["shown"] == "Background task stopped: mirror-sweep"
        assert_clean(page, rn.url)


async def test_an_offline_limit_turns_the_header_amber_when_near_and_red_when_hit(
    tmp_path: Path, page: Page
) -> None:
    async with node_with(tmp_path, limits_offline_max_count=5) as rn:
        for i in range(3):
            await pay(rn, bill(i), 10_000, f"k{i}")
        await page.goto(rn.url + "/?lang=en")
        header = await header_when(page, "h.level !== null")
        assert (header["level"], header["reasons"]) == ("ok", "")  # 3 of 5: not yet near
        await pay(rn, bill(3), 10_000, "k3")  # 4 of 5: 80 %
        header = await header_when(page, "h.level === 'warn'")
        assert header["color"] == AMBER
        assert header["shown"] == "Offline limit near: Undelivered payments"
        await pay(rn, bill(4), 10_000, "k4")  # 5 of 5: new payments refused
        header = await header_when(page, "h.level === 'bad'")
        assert header["color"] == RED and header["reasons"] == "why_limit_hit"
        assert header["shown"] == "Offline limit reached: Undelivered payments"
        async with rn.session.post(
            f"{rn.url}/v1/payments",
            json={"bill_id": bill(5), "amount": 10_000, "method": "cash", "cashier": "huda"},
            headers=rn.headers(**{"Idempotency-Key": "k5"}),
        ) as resp:
            assert resp.status == 503 and (await resp.json())["code"] == "offline_limit"
        assert_clean(page, rn.url)


async def test_the_bootstrap_progress_is_drawn_from_the_status(tmp_path: Path, page: Page) -> None:
    """`mirror.bootstrap` ({bills, of}, or null once loaded) drawn by the page's own renderer,
    fed the node's real status with a bootstrap under way (one step, so no poll interleaves)."""
    async with node_with(tmp_path) as rn:
        await page.goto(rn.url + "/?lang=en")
        await header_when(page, "h.level !== null")
        shown = await page.eval("""(function () {
          var x = new XMLHttpRequest(); x.open("GET", "/v1/status", false); x.send();
          var s = JSON.parse(x.responseText);
          s.mirror.bootstrap = {bills: 250000, of: 1000000};
          window.EDGE.strip.render(s);
          var bar = document.getElementById("strip-bootstrap");
          return {hidden: bar.hidden, text: document.getElementById("strip-bootstrap-text").textContent,
                  width: document.getElementById("strip-bootstrap-fill").style.width,
                  value: document.getElementById("strip-mirror-value").textContent,
                  level: document.getElementById("strip-mirror").getAttribute("data-level"),
                  reasons: document.getElementById("mode-reasons").getAttribute("data-reasons")};
        })()""")
        assert shown == {"hidden": False, "text": "250,000 / 1,000,000 (25%)", "width": "25%",
                         "value": "first load", "level": "warn",
                         "reasons": "why_bootstrap"}  # fmt: skip
        # The real status has none (bootstrap done): the next poll hides the bar again.
        await page.wait_for("document.getElementById('strip-bootstrap').hidden")
        assert_clean(page, rn.url)


async def test_a_transport_error_is_shown_by_code_and_isolated_in_arabic(
    tmp_path: Path, page: Page
) -> None:
    secret = tmp_path / "centre.secret"
    secret.write_text("a-secret-for-a-centre-that-is-not-there\n")
    secret.chmod(0o600)
    # Nothing listens on port 9 of loopback: every exchange fails in transport.
    async with node_with(
        tmp_path / "n",
        centre_url="http://127.0.0.1:9",
        centre_secret_file=secret,
        centre_timeout_s=0.5,
        centre_retry_base_s=0.1,
        centre_retry_cap_s=0.2,
    ) as rn:
        await page.goto(rn.url + "/")
        el = "document.getElementById('link-error')"
        await page.wait_for(f"{el}.getAttribute('data-code') === 'centre_unavailable'")
        parts = await page.eval(f"""(function () {{
          var el = {el}, code = el.querySelector("bdi.code"), detail = el.querySelector("bdi.detail");
          return {{text: el.querySelector(".error-text").textContent, code: code.textContent,
                   codeDir: code.dir, detail: detail.textContent, detailDir: detail.dir}};
        }})()""")
        assert parts["text"].startswith("لم يستجب المركز")
        assert parts["code"] == "centre_unavailable" and parts["codeDir"] == "ltr"
        assert parts["detailDir"] == "ltr" and parts["detail"] == rn.node.link.last_error
        assert await page.eval("document.getElementById('strip-link').getAttribute('data-level')")
        await page.eval("document.getElementById('lang').click()")
        english = await page.eval(f"{el}.querySelector('.error-text').textContent")
        assert english.startswith("The centre did not answer")
        assert_clean(page, rn.url)


async def test_every_strip_item_reads_the_status(tmp_path: Path, page: Page) -> None:
    async with node_with(tmp_path) as rn:
        await pay(rn, bill(0), 10_000, "k0")
        await page.goto(rn.url + "/?lang=en")
        await page.wait_for("document.getElementById('strip-pending-value').textContent === '1'")

        async def shown() -> dict[str, str] | None:
            got: dict[str, str] = await page.eval(
                "[].reduce.call(document.querySelectorAll('.strip-item'), function (o, el) {"
                " o[el.id] = el.querySelector('b').textContent + '|' + el.getAttribute('data-level');"
                " return o; }, {})"
            )
            return got if got["strip-mirror"].startswith(("0 s", "1 s", "2 s")) else None

        got = await eventually(shown, what="the strip")
        assert got["strip-power"] == "Power state unknown|warn"  # ups.source = none
        assert got["strip-link"] == "Not tried yet|warn"  # no centre configured
        assert got["strip-pending"] == "1|ok" and got["strip-rejected"] == "0|ok"
        assert got["strip-mirror"].endswith("|ok")
        assert await page.eval("document.getElementById('strip-oldest').hidden") is False


async def test_the_code_catalogue_is_served_as_a_script(running: RunningNode) -> None:
    async with running.session.get(running.url + "/static/codes.js?v=0.1.0") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"
        assert "max-age" in resp.headers["Cache-Control"]
        body = await resp.text()
    assert body.startswith("window.EDGE_CODES = {") and body.isascii()  # JSON escapes, nothing raw
    served = json.loads(body.removeprefix("window.EDGE_CODES = ").rstrip(";\n"))
    assert served["centre"]["chain_broken"]["ar"].startswith("لدى المركز")
    assert served["problem"]["offline_limit"]["en"] == errors.OfflineLimit.title
