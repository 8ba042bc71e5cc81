"""A real headless Chromium driven over the DevTools protocol with aiohttp's websocket client.

Enough for the dashboard's tests: open a page, evaluate JavaScript, click, take screenshots,
and record every request, failed load, console error and uncaught exception on the way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import eventually, unavailable, wait_until

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1", "--remote-debugging-port=0")  # fmt: skip
START_S = 20.0
CALL_S = 15.0


def chromium_or_skip() -> str:
    """The browser's path; skips without one, except in CI, where its absence is a failure."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    unavailable("chromium is not installed (apt-get install chromium): browser tests skipped")


class CdpError(AssertionError):
    """The browser answered a command with an error, or JavaScript threw."""


@dataclass
class Page:
    """One tab, attached in flat mode: every command and event carries its sessionId."""

    browser: Browser
    session_id: str
    requests: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    _urls: dict[str, str] = field(default_factory=dict)
    _loaded: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session_id=self.session_id)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            self._urls[params["requestId"]] = url
            self.requests.append(url)
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = self._urls.get(params["requestId"], "?")
            self.failures.append(f"{url}: {params.get('errorText')}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            self.failures.append(f"{params['response']['url']}: {params['response']['status']}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console_errors.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.console_errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")

    async def goto(self, url: str) -> None:
        self._loaded.clear()
        reply = await self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {reply['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), CALL_S)

    async def eval(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate until the result is truthy; return it (fails after `timeout`)."""
        return await eventually(lambda: self.eval(expression), timeout, expression)

    async def screenshot(
        self, path: Path, width: int = 1280, *, height: int | None = None, mobile: bool = False
    ) -> None:
        """A PNG of the whole page at `width` CSS pixels; with `height`, of that viewport only
        (what is seen without scrolling), `mobile` as a phone lays it out."""
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height or 800, "deviceScaleFactor": 1,
                         "mobile": mobile})  # fmt: skip
        await asyncio.sleep(0.3)  # let the chart redraw for the new width
        if height is None:
            metrics = await self.send("Page.getLayoutMetrics")
            full = int(metrics["cssContentSize"]["height"]) + 1
            await self.send("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": full, "deviceScaleFactor": 1,
                             "mobile": mobile})  # fmt: skip
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))


class Chromium:
    """The browser process, one for the session: `start()`, then `Browser.connect(...)` per test.

    Launching Chromium costs a second or two; a test's isolation comes from its own DevTools
    connection and browser context (cookies, storage and cache of its own), not its own process.
    """

    def __init__(self, exe: str, root: Path) -> None:
        self.exe, self.root = exe, root
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws_url = ""

    def start(self) -> Chromium:
        profile = self.root / "chromium-profile"
        profile.mkdir(parents=True)
        with (self.root / "chromium.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [self.exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # its helpers share our process group: stopped together
            )  # fmt: skip
        active, proc = profile / "DevToolsActivePort", self.proc

        def listening() -> list[str] | None:
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited; see {self.root / 'chromium.log'}")
            lines = active.read_text().splitlines() if active.exists() else []
            return lines if len(lines) >= 2 else None

        lines = wait_until(listening, START_S, f"chromium; see {self.root / 'chromium.log'}")
        self.ws_url = f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Helpers (renderer, zygote) in the group we created, if any outlived the browser.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class Browser:
    """`async with Browser.connect(chromium) as browser`: one DevTools socket, on this loop.

    Every page opens in a browser context of its own, disposed of when the connection closes.
    """

    def __init__(self, chromium: Chromium) -> None:
        self.chromium = chromium
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pages: dict[str, Page] = {}
        self._contexts: list[str] = []
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, chromium: Chromium) -> AsyncIterator[Browser]:
        browser = cls(chromium)
        try:
            browser.http = aiohttp.ClientSession()
            browser.ws = await browser.http.ws_connect(chromium.ws_url, max_msg_size=0)
            browser._reader = asyncio.create_task(browser._read())
            yield browser
        finally:
            await browser._close()

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = msg.json()
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("sessionId") in self.pages:
                self.pages[data["sessionId"]].on_event(data["method"], data.get("params", {}))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CdpError("the browser closed its DevTools socket"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        assert self.ws is not None
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = future
        await self.ws.send_json(message)
        reply = await asyncio.wait_for(future, CALL_S)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self) -> Page:
        context = (await self.send("Target.createBrowserContext"))["browserContextId"]
        self._contexts.append(context)
        target = await self.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context}
        )
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self.pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def _close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            for context in self._contexts:  # its pages with it
                with contextlib.suppress(Exception):
                    await self.send("Target.disposeBrowserContext", {"browserContextId": context})
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.http is not None:
            await self.http.close()


# The fixtures every browser test uses (registered in conftest.py): one Chromium per module,
# a fresh connection and page per test.
@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """One browser process for the module; each test gets its own connection and context."""
    browser = Chromium(chromium_or_skip(), tmp_path_factory.mktemp("browser"))
    try:
        yield browser.start()
    finally:
        browser.stop()


@pytest.fixture
async def page(chromium: Chromium) -> AsyncIterator[Page]:
    assert chromium.alive(), f"chromium exited; see {chromium.root / 'chromium.log'}"
    async with Browser.connect(chromium) as browser:
        yield await browser.new_page()
