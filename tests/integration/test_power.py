"""A node in-process watching a real upsd: power states, stored events, and the API's behaviour.

The dummy UPS is driven with SET VAR / FSD / killing the driver / stopping upsd; the node
polls every 0.3 s (0.2 s on battery), so "two polls" is well under a second.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from helpers import eventually, make_bill
from nodefixtures import RunningNode, start_node
from upsd import UPS, Upsd

from edge.config import Settings
from edge.ops import ups
from edge.power import monitor

# The session's `upsd` where a test only changes the UPS (or kills the driver and starts it
# again); a `fresh_upsd` where it stops upsd or latches FSD, which only a restart clears.
POLL_S = 0.3
TWO_POLLS = 2 * POLL_S + 0.6  # two polls, plus slack for a busy test machine
BILL = "DAM-2026-05-0100234567"
ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def node_on(tmp_path: Path, port: int, **extra: Any) -> AsyncIterator[RunningNode]:
    settings = dict(
        ups_source="nut", ups_port=port, ups_name=UPS, ups_poll_s=POLL_S, ups_poll_battery_s=0.2,
        ups_timeout_s=1.0, power_dead_time_s=1.0, power_final_replay_s=1.0,
    ) | extra  # fmt: skip
    runner, rn = await start_node(
        tmp_path, [make_bill("0100234567", amount=10_000_000)], **settings
    )
    try:
        yield rn
    finally:
        await rn.session.close()
        await runner.cleanup()


async def wait_state(rn: RunningNode, state: str, within: float) -> None:
    await eventually(lambda: rn.node.power.state == state, within,
                     lambda: f"power {state!r}, still {rn.node.power.state!r}", every=0.02)  # fmt: skip


async def pay(rn: RunningNode, key: str) -> tuple[int, dict[str, Any], Any]:
    body = {"bill_id": BILL, "amount": 1000, "method": "cash", "cashier": "rami"}
    async with rn.session.post(
        f"{rn.url}/v1/payments", json=body, headers=rn.headers(**{"Idempotency-Key": key})
    ) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def inquiry_status(rn: RunningNode) -> int:
    url = f"{rn.url}/v1/accounts/0100234567/bills"
    async with rn.session.get(url, headers=rn.headers("viewer")) as resp:
        return resp.status


async def get(rn: RunningNode, path: str) -> tuple[int, Any]:
    async with rn.session.get(rn.url + path) as resp:  # no token: operational views
        return resp.status, await resp.json(content_type=None)


async def events(rn: RunningNode, since: str | None = None) -> list[dict[str, Any]]:
    status, body = await get(rn, "/v1/power/events" + ("" if since is None else f"?since={since}"))
    assert status == 200
    return body["events"]  # type: ignore[no-any-return]


async def test_ol_ob_lb_ol_states_events_and_payments(upsd: Upsd, tmp_path: Path) -> None:
    async with node_on(tmp_path, upsd.port, power_on_low="read_only") as rn:
        await wait_state(rn, "mains", within=5)
        assert (await pay(rn, "k1"))[0] == 201

        await asyncio.to_thread(upsd.set_status, "OB")
        await wait_state(rn, "battery", TWO_POLLS)
        assert (await pay(rn, "k2"))[0] == 201, "on battery the node still takes money"
        _, status = await get(rn, "/v1/status")
        assert (status["mode"], status["power"]["state"], status["power"]["ups_status"]) == (
            "degraded", "battery", "OB",
        )  # fmt: skip

        await asyncio.to_thread(upsd.set_status, "OB LB")
        await wait_state(rn, "low", TWO_POLLS)
        code, body, headers = await pay(rn, "k3")
        assert (code, body["code"], headers["Retry-After"]) == (503, "node_shutting_down", "600")
        assert "Power cut" in body["detail"] and "انقطاع في الكهرباء" in body["detail"]
        assert body["title_ar"]
        assert await inquiry_status(rn) == 200
        _, status = await get(rn, "/v1/status")
        assert (status["mode"], status["power"]["state"]) == ("read_only", "low")

        await asyncio.to_thread(upsd.set_status, "OL")
        await wait_state(rn, "mains", TWO_POLLS)
        assert (await pay(rn, "k4"))[0] == 201, "back on mains, payments resume"
        found = [(e["from"], e["to"], e["flags"]) for e in await events(rn)]
        assert found == [
            ("unknown", "mains", "OL"), ("mains", "battery", "OB"), ("battery", "low", "OB LB"),
            ("low", "mains", "OL"),
        ]  # fmt: skip
        assert rn.db_counts()[1] == 3


async def test_power_events_api(upsd: Upsd, tmp_path: Path) -> None:
    async with node_on(tmp_path, upsd.port) as rn:
        await wait_state(rn, "mains", within=5)
        await asyncio.to_thread(upsd.set, "battery.charge", "88")
        await asyncio.to_thread(upsd.set_status, "OB")
        await wait_state(rn, "battery", TWO_POLLS)
        every = await events(rn)
        assert [(e["from"], e["to"]) for e in every] == [("unknown", "mains"), ("mains", "battery")]
        first, second = every
        assert second["id"] > first["id"] and second["at"] >= first["at"]
        assert (second["charge"], second["runtime_s"]) == (88.0, 3600.0)
        assert second["at"].endswith("Z") and second["reason"] == "on battery (OB)"
        assert await events(rn, str(first["id"])) == [second]
        assert await events(rn, str(second["id"])) == []
        assert await events(rn, "2000-01-01T00:00:00Z") == every
        assert await events(rn, "2999-01-01T00:00:00Z") == []
        for bad in ("yesterday", "-1", ""):
            status, problem = await get(rn, f"/v1/power/events?since={bad}")
            assert (status, problem["code"]) == (400, "invalid_query"), bad


def edge_ups(tmp_path: Path, port: int, name: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "edge.toml"
    config.write_text(f'[ups]\nport = {port}\nname = "{name}"\n')
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "ups", "--config", str(config)],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip


def test_edge_ups_prints_the_ups_as_the_node_sees_it(upsd: Upsd, tmp_path: Path) -> None:
    done = edge_ups(tmp_path, upsd.port, UPS)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "state:           mains (on mains (OL))" in lines
    assert {"ups.status:      OL", "battery.charge:  100 %", "battery.runtime: 3600 s"} <= set(
        lines
    )
    assert "  device.model: Dummy UPS" in lines


async def test_ups_report_for_an_unknown_ups_name_says_why_and_exits_1(upsd: Upsd) -> None:
    lines: list[str] = []
    settings = Settings(ups_port=upsd.port, ups_name="nosuchups")
    assert await ups.report(settings, out=lines.append) == 1
    assert lines[1] == (
        "state:           unknown (UNKNOWN-UPS for UPS 'nosuchups': No UPS of that name in"
        " upsd's ups.conf.)"
    )


async def test_ups_lost_while_on_battery_is_low_after_the_dead_time(
    upsd: Upsd, tmp_path: Path
) -> None:
    async with node_on(
        tmp_path, upsd.port, power_on_low="read_only", power_dead_time_s=1.0, ups_timeout_s=0.3
    ) as rn:
        await asyncio.to_thread(upsd.set_status, "OB")
        await wait_state(rn, "battery", within=5)
        upsd.freeze("server")  # upsd stops answering, as when its host hangs
        lost_at = time.monotonic()
        await wait_state(rn, "low", within=1.0 + TWO_POLLS + 0.6)
        assert time.monotonic() - lost_at >= 0.8, "the dead time was honoured"
        assert (await pay(rn, "k1"))[0] == 503
        assert "lost while on battery" in (await events(rn))[-1]["reason"]


async def test_driver_killed_is_unknown_then_back(upsd: Upsd, tmp_path: Path) -> None:
    async with node_on(tmp_path, upsd.port) as rn:
        await wait_state(rn, "mains", within=5)
        await asyncio.to_thread(upsd.kill_driver)
        await wait_state(rn, "unknown", TWO_POLLS)
        _, status = await get(rn, "/v1/status")
        assert "DRIVER-NOT-CONNECTED" in status["power"]["error"]
        assert (await pay(rn, "k1"))[0] == 201 and await inquiry_status(rn) == 200
        await asyncio.to_thread(upsd.start_driver)
        await wait_state(rn, "mains", within=10)
        found = [(e["from"], e["to"]) for e in await events(rn)]
        assert found == [("unknown", "mains"), ("mains", "unknown"), ("unknown", "mains")]
        assert "DRIVER-NOT-CONNECTED" in (await events(rn))[1]["reason"]


async def test_node_started_while_nut_is_down_picks_the_ups_up_later(
    fresh_upsd: Upsd, tmp_path: Path
) -> None:
    upsd = fresh_upsd
    upsd.stop_server()
    async with node_on(tmp_path, upsd.port) as rn:
        _, ready = await get(rn, "/readyz")
        assert ready["status"] == "ready"
        await eventually(
            lambda: rn.node.power.error is not None, 5, "the monitor to poll", every=0.02
        )
        assert rn.node.power.state == "unknown" and "127.0.0.1" in rn.node.power.error
        assert (await pay(rn, "k1"))[0] == 201 and await inquiry_status(rn) == 200
        await asyncio.to_thread(upsd.start_server)
        await wait_state(rn, "mains", TWO_POLLS)
        assert [(e["from"], e["to"]) for e in await events(rn)] == [("unknown", "mains")]


async def test_upsd_stopped_is_unknown_and_the_node_keeps_serving(
    fresh_upsd: Upsd, tmp_path: Path
) -> None:
    upsd = fresh_upsd
    async with node_on(tmp_path, upsd.port) as rn:
        await wait_state(rn, "mains", within=5)
        await asyncio.to_thread(upsd.stop_server)
        await wait_state(rn, "unknown", TWO_POLLS)
        assert (await pay(rn, "k1"))[0] == 201 and await inquiry_status(rn) == 200
        code, status = await get(rn, "/v1/status")
        assert (code, status["power"]["state"], status["mode"]) == (200, "unknown", "normal")
        await asyncio.to_thread(upsd.start_server)
        await wait_state(rn, "mains", TWO_POLLS)


async def test_fsd_is_low_and_runs_the_final_action(fresh_upsd: Upsd, tmp_path: Path) -> None:
    upsd = fresh_upsd
    async with node_on(tmp_path, upsd.port, power_on_low="shutdown") as rn:
        stops: list[float] = []
        rn.app[monitor.POWER_MONITOR].shutdown = lambda: stops.append(time.monotonic())
        await wait_state(rn, "mains", within=5)
        await asyncio.to_thread(upsd.fsd)
        await wait_state(rn, "low", TWO_POLLS)
        assert (await pay(rn, "k1"))[0] == 503
        assert await inquiry_status(rn) == 200
        _, status = await get(rn, "/v1/status")
        assert (status["mode"], status["power"]["ups_status"]) == ("shutting_down", "FSD OL")
        await eventually(lambda: stops, 5, "the final action", every=0.02)
        assert (await events(rn))[-1]["reason"] == "forced shutdown (FSD) set by upsd"
