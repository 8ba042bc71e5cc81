"""The dashboard's "reprint a receipt" card in a real headless Chromium against a real node.

A counter's token finds its own payment by receipt number and gets the fixed-width text
receipt; printing shows that text and nothing else; another counter's token finds nothing;
the token is kept nowhere in the page.
"""

from __future__ import annotations

from browser import Page
from nodefixtures import RunningNode
from test_api import BILL, pay, payment

FILL = """(function () {
  document.getElementById("reprint-number").value = NUMBER;
  document.getElementById("reprint-token").value = TOKEN;
  document.getElementById("reprint-paper").value = "58mm";
  document.querySelector("#reprint-form button[type=submit]").click();
  return true;
})()"""
SHOWN = """(function () {
  var out = document.getElementById("reprint-out");
  return !out.hidden && out.textContent;
})()"""
# What is visible when printing: every card's display, and the receipt's.
PRINTED = """(function () {
  var cards = document.querySelectorAll("main > section"), shown = [], i;
  for (i = 0; i < cards.length; i++) {
    if (getComputedStyle(cards[i]).display !== "none") { shown.push(cards[i].id); }
  }
  var form = getComputedStyle(document.getElementById("reprint-form")).display;
  var out = getComputedStyle(document.getElementById("reprint-out")).display;
  return {cards: shown, form: form, out: out,
          header: getComputedStyle(document.querySelector("body > header")).display};
})()"""


def fill(number: str, token: str) -> str:
    return FILL.replace("NUMBER", repr(number)).replace("TOKEN", repr(token))


async def test_a_counter_reprints_its_own_receipt_and_only_that_prints(
    running: RunningNode, page: Page
) -> None:
    status, body, _ = await pay(running, payment(12_345), "reprint-1")
    assert status == 201, body
    await page.goto(running.url + "/?lang=en")
    await page.eval(fill(body["receipt"].lower(), running.tokens["cashier"]))
    shown = await page.wait_for(SHOWN)
    lines = shown.splitlines()
    assert body["receipt"] in lines and BILL in shown and "123.45 SYP" in shown
    assert max(len(line) for line in lines) <= 32  # the 58 mm layout
    token = running.tokens["cashier"]
    kept = await page.eval(
        "JSON.stringify([document.getElementById('reprint-token').value,"
        " Object.keys(sessionStorage).map(function (k) { return sessionStorage[k]; }),"
        " Object.keys(localStorage).map(function (k) { return localStorage[k]; })])"
    )
    assert token not in kept

    await page.eval("window.print = function () { window.__printed = true; }; true")
    await page.eval("document.getElementById('reprint-print').click(); true")
    assert await page.eval("window.__printed === true")
    await page.send("Emulation.setEmulatedMedia", {"media": "print"})
    printed = await page.eval(PRINTED)
    assert (printed["cards"], printed["form"], printed["header"]) == (
        ["reprint-card"],
        "none",
        "none",
    )
    assert printed["out"] != "none"
    await page.eval("window.onafterprint(); true")
    assert (await page.eval(PRINTED))["cards"] != ["reprint-card"]  # the page is whole again
    assert not page.console_errors, page.console_errors


async def test_another_counters_token_finds_nothing(running: RunningNode, page: Page) -> None:
    status, body, _ = await pay(running, payment(10_000), "reprint-2")
    assert status == 201, body
    await page.goto(running.url + "/?lang=en")
    await page.eval(fill(body["receipt"], running.tokens["viewer"]))
    message = await page.wait_for(
        "(function () { var m = document.getElementById('reprint-message').textContent;"
        " return m.indexOf('No payment') === 0 && m; })()"
    )
    assert message == "No payment with this number that this token may see."
    assert await page.eval("document.getElementById('reprint-out').hidden")
