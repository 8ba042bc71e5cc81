"""Supervised background tasks: a task that dies is logged, shown, counted and fails readiness."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nodefixtures import RunningNode

from edge.tasks import Supervisor


async def test_a_task_that_dies_is_shown_and_makes_the_node_not_ready(
    running: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    async with running.session.get(running.url + "/readyz") as resp:
        assert resp.status == 200

    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("the disk caught fire")

    with caplog.at_level(logging.ERROR, logger="edge.tasks"):
        running.node.tasks.start("probe", broken)
        for _ in range(100):
            if not running.node.tasks.up("probe"):
                break
            await asyncio.sleep(0.01)
    assert any(r.exc_info and "probe" in r.getMessage() for r in caplog.records), "traceback logged"

    async with running.session.get(running.url + "/readyz") as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 503
        assert "probe: RuntimeError: the disk caught fire" in body["detail"]
    async with running.session.get(running.url + "/v1/status") as resp:
        status = await resp.json()
    assert status["tasks"]["probe"] == {
        "state": "failed",
        "error": "RuntimeError: the disk caught fire",
    }
    async with running.session.get(running.url + "/metrics") as resp:
        text = await resp.text()
    assert 'edge_task_up{task="probe"} 0.0' in text


async def test_the_supervisor_tells_a_stop_from_a_death() -> None:
    tasks = Supervisor()
    stop = asyncio.Event()

    async def loop() -> None:
        await stop.wait()

    async def quits() -> None:
        return None

    tasks.start("loop", loop)
    tasks.start("quits", quits)
    await asyncio.sleep(0.01)
    assert tasks.states()["quits"] == {"state": "failed", "error": "exited"}
    assert tasks.up("loop")
    stop.set()
    await tasks.stop("loop", cancel=False)
    assert tasks.states()["loop"] == {"state": "stopped", "error": None}
    assert tasks.failed() == ["quits: exited"]
    with pytest.raises(RuntimeError):
        tasks.start("x", loop)
        tasks.start("x", loop)
    await tasks.close()
