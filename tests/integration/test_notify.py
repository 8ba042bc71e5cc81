"""systemd notify protocol: real datagram sockets receive what the node tells systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from helpers import eventually, free_port, make_bill

from edge import config, mirror
from edge.app import create_app
from edge.node import NODE
from edge.ops import notify


class Receiver:
    """The systemd end: a bound SOCK_DGRAM socket collecting notification fields."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def fields(self) -> list[str]:
        return [line for message in self.drain() for line in message.split("\n")]

    async def wait_for(self, field: str, timeout: float = 10.0) -> None:
        await eventually(lambda: field in self.fields(), timeout,
                         lambda: f"{field} (got {self.messages})", every=0.02)  # fmt: skip


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    path = tmp_path / "notify.sock"
    r = Receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield r
    r.sock.close()


def test_send_to_a_path_socket(receiver: Receiver) -> None:
    assert notify.send("READY=1", "STATUS=serving")
    assert receiver.drain() == ["READY=1\nSTATUS=serving"]


def test_send_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edge-test-{uuid.uuid4().hex}"
    r = Receiver("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.send("WATCHDOG=1")
        assert r.drain() == ["WATCHDOG=1"]
    finally:
        r.sock.close()


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify.send("READY=1")
    assert notify.address({"NOTIFY_SOCKET": "relative/path"}) is None
    # A socket that went away is logged, never raised into the node.
    assert not notify.send("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})


def test_watchdog_period_is_half_the_timeout_for_the_named_process() -> None:
    assert notify.watchdog_period({}) is None
    assert notify.watchdog_period({"WATCHDOG_USEC": "60000000"}) == 30.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert notify.watchdog_period(mine) == 1.0
    # Inherited by a child process: not ours to ping.
    assert notify.watchdog_period({**mine, "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_period({"WATCHDOG_USEC": "0"}) is None
    assert notify.watchdog_period({"WATCHDOG_USEC": "soon"}) is None


async def test_node_ready_only_once_serving_then_watchdog_then_stopping(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    port = free_port()
    settings = config.Settings(
        node_data_dir=tmp_path / "data", auth_tokens_file=tmp_path / "tokens.toml",
        http_host="127.0.0.1", http_port=port, ups_source="none", centre_url="",
    )  # fmt: skip
    app = create_app(settings)
    notify.install(app)
    runner = web.AppRunner(app)
    await runner.setup()  # the app has started; its port is not bound yet
    # A loaded mirror (an empty one would be bootstrapping: mode degraded, not normal).
    await app[NODE].db.write(lambda c: mirror.apply_changes(c, [make_bill("0100234567")], 1))
    try:
        await asyncio.sleep(0.5)
        seen = receiver.fields()
        assert any(f.startswith("STATUS=starting") for f in seen)
        assert "READY=1" not in seen
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await receiver.wait_for("READY=1")
        assert any(f.startswith("STATUS=node dam-1") and "normal" in f for f in receiver.fields())
        await receiver.wait_for("WATCHDOG=1", timeout=2.0)
        receiver.messages.clear()
        await receiver.wait_for("WATCHDOG=1", timeout=2.0)  # and again: it keeps pinging
    finally:
        await runner.cleanup()
    fields = receiver.fields()
    assert "STOPPING=1" in fields
    assert fields[-1] == "STATUS=stopped"
