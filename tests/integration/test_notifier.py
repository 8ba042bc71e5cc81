"""The node's alert notifier against real parts: a real upsd driven to a low battery, a real
program run per event (like upsmon's NOTIFYCMD), a real aiohttp webhook receiver on loopback
(plain and https with the test CA), a hanging program killed while payments go on, a
receiver that is down (one log line), a redirect refused, and the rate limit per group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import eventually, free_port, make_bill
from nodefixtures import RunningNode, start_node
from tlscerts import Authority
from upsd import UPS, Upsd

from edge import alerts, config, notifier
from edge.errors import ConfigError
from edge.watcher import ALERTS
from sync import timefmt

BILL = "DAM-2026-05-0100234567"
FIELDS = {"event", "severity", "notifytype", "node", "governorate", "time", "details", "text_ar",
          "text_en", "suppressed"}  # fmt: skip


@dataclass
class Receiver:
    """A webhook receiver: records each POST; `status` is what it answers."""

    url: str = ""
    status: int = 200
    seen: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if self.status in (301, 302, 307, 308):
            raise web.HTTPTemporaryRedirect("/elsewhere")
        self.seen.append(await request.json())
        return web.Response(status=self.status)

    def events(self) -> list[str]:
        return [body["event"] for body in self.seen]


@asynccontextmanager
async def receiver(context: ssl.SSLContext | None = None) -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"{'https' if context else 'http'}://127.0.0.1:{port}/hooks/s3cr3t-path"
    try:
        yield rec
    finally:
        await runner.cleanup()


def script(tmp_path: Path, body: str) -> Path:
    """An executable shell script (what an operator would write for notify.exec)."""
    path = tmp_path / "notify.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(stat.S_IRWXU)
    return path


def recording_script(tmp_path: Path) -> tuple[Path, Path]:
    """Each run appends one JSON line: its stdin, its environment's NOTIFYTYPE and friends,
    and its argument count."""
    out = tmp_path / "notified.jsonl"
    path = script(
        tmp_path,
        f"""body=$(cat)
printf '{{"stdin": %s, "notifytype": "%s", "event": "%s", "upsname": "%s", "argc": %d}}\\n' \\
  "$body" "$NOTIFYTYPE" "$EDGE_EVENT" "$UPSNAME" "$#" >> {out}
""",
    )
    return path, out


def lines(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


async def pay(rn: RunningNode, key: str) -> int:
    body = {"bill_id": BILL, "amount": 1000, "method": "cash", "cashier": "rami"}
    headers = rn.headers(**{"Idempotency-Key": key})
    async with rn.session.post(f"{rn.url}/v1/payments", json=body, headers=headers) as resp:
        return resp.status


@asynccontextmanager
async def node(tmp_path: Path, **settings: Any) -> AsyncIterator[RunningNode]:
    runner, rn = await start_node(
        tmp_path, [make_bill("0100234567", amount=10_000_000)],
        **({"notify_check_s": 0.1} | settings),
    )  # fmt: skip
    try:
        yield rn
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_a_low_battery_from_a_real_upsd_is_told_to_the_program_and_the_webhook(
    upsd: Upsd, tmp_path: Path
) -> None:
    program, out = recording_script(tmp_path)
    async with receiver() as rec, node(
        tmp_path, ups_source="nut", ups_port=upsd.port, ups_name=UPS, ups_poll_s=0.3,
        ups_poll_battery_s=0.2, ups_timeout_s=1.0, power_on_low="read_only",
        power_final_replay_s=1.0, notify_exec=str(program), notify_webhook_url=rec.url,
        notify_battery_after_s=0, notify_min_interval_s=0,
    ) as rn:  # fmt: skip
        await asyncio.to_thread(upsd.set_status, "OB")
        await eventually(lambda: "on_battery" in rec.events(), 10, lambda: f"seen {rec.events()}")
        await asyncio.to_thread(upsd.set_status, "OB LB")
        await eventually(lambda: "low_battery" in [x["event"] for x in lines(out)], 10,
                         lambda: f"ran for {lines(out)}")  # fmt: skip
        await eventually(lambda: "low_battery" in rec.events(), 10)
        assert await pay(rn, "k-low") == 503  # the node acted on it too

        low = next(x for x in lines(out) if x["event"] == "low_battery")
        # NOTIFYCMD's way: the kind in NOTIFYTYPE, the UPS in UPSNAME, nothing in argv
        assert (low["notifytype"], low["upsname"], low["argc"]) == (
            "LOWBATT",
            f"{UPS}@127.0.0.1",
            0,
        )
        body = low["stdin"]
        assert set(body) == FIELDS
        assert (body["event"], body["severity"], body["node"], body["governorate"]) == (
            "low_battery",
            "critical",
            "dam-1",
            "DAM",
        )
        assert body["details"]["charge_percent"] == 100.0
        assert "UPS" in body["text_en"] and "بطارية" in body["text_ar"]
        assert body["text_ar"].startswith("دمشق: ") and body["text_en"].startswith(
            "dam-1 (Damascus): "
        )
        assert body == next(b for b in rec.seen if b["event"] == "low_battery")  # the same JSON
        assert abs(timefmt.parse_iso(body["time"]) - time.time()) < 60

        await asyncio.to_thread(upsd.set_status, "OL")
        await eventually(lambda: "power_back" in rec.events(), 10, lambda: f"seen {rec.events()}")
        assert rec.events() == ["on_battery", "low_battery", "power_back"]
        assert [x["event"] for x in lines(out)] == rec.events()


async def test_a_flapping_mains_is_told_once_per_interval_then_its_latest_state(
    tmp_path: Path,
) -> None:
    """The notifier's rate limit with a real webhook: eleven changes within the interval are one
    notification; once the interval is over the latest (on battery) follows, counting the rest."""
    now = [1000.0]
    async with receiver() as rec:
        settings = config.Settings(node_data_dir=tmp_path, notify_webhook_url=rec.url,
                                   notify_min_interval_s=300, notify_battery_after_s=0)  # fmt: skip
        notify = notifier.Notifier(settings, monotonic=lambda: now[0])
        judge = alerts.Judge(settings)
        sink = notify.sinks[0]
        await sink.open()
        task = asyncio.create_task(sink.run())
        try:
            for i in range(11):  # on battery, mains, on battery, ... (on battery last)
                power = "mains" if i % 2 else "battery"
                for event in judge.judge(observation(power), now[0]):
                    notify.emit(event)
                now[0] += 10
            await eventually(lambda: len(rec.seen) == 1, 10)
            notify.release()  # within the interval: nothing more
            await asyncio.sleep(0.3)
            assert rec.events() == ["on_battery"]
            now[0] = 1000.0 + 300
            notify.release()
            await eventually(lambda: len(rec.seen) == 2, 10)
            # 10 changes after the first: the latest (on battery) stands for the other 9
            assert (rec.seen[1]["event"], rec.seen[1]["suppressed"]) == ("on_battery", 9)
        finally:
            sink.stop()
            await task
            await sink.close()


def observation(power: str) -> alerts.Observation:
    return alerts.Observation(
        at=time.time(), power=power, charge_percent=90.0, runtime_s=1800.0, link="up",
        pending=0, oldest_pending_age_s=None, unresolved=0, mirror_age_s=0.0, failed_tasks={},
        disk=None, offline={},
    )  # fmt: skip


async def scrape(rn: RunningNode, line: str) -> bool:
    async with rn.session.get(rn.url + "/metrics") as resp:
        return line in await resp.text()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead too
    except FileNotFoundError:
        return False


async def test_a_hanging_program_is_killed_with_its_children_while_payments_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pids = tmp_path / "pids"
    # It starts a child, then hangs without reading its input.
    program = script(tmp_path, f"sleep 300 &\necho $$ $! > {pids}\nwait\n")
    caplog.set_level(logging.WARNING, "edge.notifier")
    # disk_free_percent 100: "nearly full" at once, a real event on a real disk
    async with node(tmp_path, notify_exec=str(program), notify_timeout_s=2.0,
                    notify_disk_free_percent=100) as rn:  # fmt: skip
        await eventually(pids.exists, 10, "the program to start")
        await eventually(lambda: len(pids.read_text().split()) == 2, 5)
        shell, child = map(int, pids.read_text().split())
        assert alive(shell) and alive(child)
        started = time.monotonic()
        for i in range(5):  # the node serves while the program hangs
            t = time.monotonic()
            assert await pay(rn, f"k-{i}") == 201
            assert time.monotonic() - t < 1.0
        assert time.monotonic() - started < 2.0, "payments must not wait for the program"
        await eventually(lambda: not alive(shell) and not alive(child), 10,
                         "the program and its child to be killed")  # fmt: skip
        assert await scrape(rn, 'edge_notify_events_total{result="failed",sink="exec"} 1.0')
    killed = [r for r in caplog.records if "was killed" in r.getMessage()]
    assert len(killed) == 1, [r.getMessage() for r in caplog.records]
    assert "ran over 2 s" in killed[0].getMessage()


async def test_a_webhook_that_is_down_leaves_the_node_serving_and_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/s3cr3t-path"  # nothing listens there
    caplog.set_level(logging.DEBUG, "edge.notifier")
    async with node(
        tmp_path, notify_webhook_url=url, notify_timeout_s=1.0, notify_disk_free_percent=100,
        mirror_stale_after_s=0.5, limits_offline_max_count=2, notify_offline_limit_ratio=0.5,
    ) as rn:  # fmt: skip
        sink = rn.app[ALERTS].notifier.sinks[0]
        await eventually(lambda: sink.failures >= 1, 15, "the first failed delivery")
        assert await pay(rn, "k-1") == 201  # 1 of 2: offline limit half used, a third event
        failed = 'edge_notify_events_total{result="failed",sink="webhook"} 3.0'
        await eventually(lambda: scrape(rn, failed), 40, "three events failed")
        assert await pay(rn, "k-2") == 201
        async with rn.session.get(f"{rn.url}/v1/accounts/0100234567/bills",
                                  headers=rn.headers("viewer")) as resp:  # fmt: skip
            assert resp.status == 200
        assert rn.node.not_ready() == []  # the sink's loop lives on
    failures = [r for r in caplog.records if "notify-webhook failed" in r.getMessage()]
    warned = [r for r in failures if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and len(failures) >= 3 * 3, [r.getMessage() for r in failures]
    assert "s3cr3t" not in caplog.text  # the URL's path (its secret) is never logged


async def test_a_redirect_is_refused_not_followed(tmp_path: Path) -> None:
    async with receiver() as rec:
        rec.status = 307
        settings = config.Settings(node_data_dir=tmp_path, notify_webhook_url=rec.url)
        sink = notifier.WebhookSink(settings, notifier._ignore)
        await sink.open()
        try:
            event = alerts.make("disk_low", time.time(), disk_details(), settings)
            with pytest.raises(notifier.NotifyError, match="307: redirects are refused"):
                await sink.deliver(json.dumps(event.body(settings)).encode(), event)
        finally:
            await sink.close()
        assert rec.paths == ["/hooks/s3cr3t-path"]  # once, and /elsewhere never


def disk_details() -> dict[str, Any]:
    return {"free_bytes": 2**20, "total_bytes": 2**30, "free_percent": 0.1}


async def test_an_https_webhook_is_verified_against_notify_ca_file(tmp_path: Path) -> None:
    ca = Authority.make(tmp_path / "pki")
    pair = ca.issue("hooks")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(pair.cert), str(pair.key))
    async with receiver(server) as rec:
        event = alerts.make("disk_low", time.time(), disk_details(), config.Settings())
        for ca_file, delivered in ((str(ca.cert), True), ("", False)):
            settings = config.Settings(node_data_dir=tmp_path, notify_webhook_url=rec.url,
                                       notify_ca_file=ca_file)  # fmt: skip
            sink = notifier.WebhookSink(settings, notifier._ignore)
            await sink.open()
            try:
                body = json.dumps(event.body(settings)).encode()
                if delivered:
                    await sink.deliver(body, event)
                else:  # the system's CAs do not know the test CA
                    with pytest.raises(notifier.NotifyError, match=r"TLS: .*certificate") as err:
                        await sink.deliver(body, event)
                    assert not isinstance(err.value, notifier.Unreachable)  # not retried
            finally:
                await sink.close()
        assert rec.events() == ["disk_low"]


def test_notify_settings_are_checked(tmp_path: Path) -> None:
    for bad, named in (
        ({"notify_exec": "relative/cmd"}, "notify.exec"),
        ({"notify_exec": str(tmp_path)}, "notify.exec"),
        ({"notify_webhook_url": "ftp://x"}, "notify.webhook_url"),
        ({"notify_ca_file": str(tmp_path / "none.pem")}, "notify.ca_file"),
        ({"notify_timeout_s": 0.0}, "notify.timeout_s"),
        ({"notify_offline_limit_ratio": 1.5}, "notify.offline_limit_ratio"),
        ({"notify_min_interval_s": float("nan")}, "notify.min_interval_s"),
    ):
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            config.validate(config.Settings(**bad))
    config.validate(config.Settings(notify_exec="/bin/true", notify_webhook_url="https://x/y"))


async def test_the_stop_looks_once_more_and_sends_what_it_saw_before_the_node_closes(
    tmp_path: Path,
) -> None:
    """A state reached just before a stop (as when a low battery stops the node) is told:
    the loop looks once an hour here, yet the event seen at the stop is sent before it ends."""
    program, out = recording_script(tmp_path)
    async with node(tmp_path, notify_exec=str(program), notify_check_s=3600,
                    notify_disk_free_percent=100, limits_offline_max_count=2,
                    notify_offline_limit_ratio=0.5) as rn:  # fmt: skip
        # The first look, at the start: the disk is "nearly full" with a threshold of 100 %.
        await eventually(lambda: [x["event"] for x in lines(out)] == ["disk_low"], 10)
        assert await pay(rn, "k-1") == 201  # the offline limit is now half used
        await asyncio.sleep(0.3)
        assert len(lines(out)) == 1  # the loop sleeps: nothing new seen yet
    assert [x["event"] for x in lines(out)] == ["disk_low", "offline_limit_near"]
    assert lines(out)[1]["stdin"]["details"]["limits"] == {"max_count": 0.5}
