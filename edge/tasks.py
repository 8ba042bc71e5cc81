"""The supervisor of the node's background tasks: one place starts them and watches them.

A task that dies (raises, or returns while it was meant to run) is logged with its
traceback, shown in `/v1/status` and `edge_task_up`, and makes `/readyz` answer 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

RUNNING, FAILED, STOPPED = "running", "failed", "stopped"


@dataclass
class TaskState:
    state: str = RUNNING
    error: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"state": self.state, "error": self.error}


class Supervisor:
    """`start(name, factory)` runs a task; `stop(name)` / `close()` cancel and await them."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._states: dict[str, TaskState] = {}
        self._stopping: set[str] = set()

    def start(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name!r} is already running")
        task = asyncio.create_task(factory(), name=name)
        self._tasks[name] = task
        self._states[name] = TaskState()
        self._stopping.discard(name)
        task.add_done_callback(lambda t: self._ended(name, t))

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is not task:
            return  # a later task of the same name took over
        state = self._states[name]
        if name in self._stopping:
            state.state = STOPPED
            return
        if task.cancelled():
            state.state, state.error = FAILED, "cancelled"
            log.error("background task %s was cancelled while the node runs", name)
            return
        exc = task.exception()
        if exc is None:
            state.state, state.error = FAILED, "exited"
            log.error("background task %s returned while the node runs", name)
            return
        state.state, state.error = FAILED, f"{type(exc).__name__}: {exc}"
        log.error("background task %s died", name, exc_info=exc)

    def states(self) -> dict[str, dict[str, str | None]]:
        return {name: state.as_dict() for name, state in sorted(self._states.items())}

    def failed(self) -> list[str]:
        """`name: error` of every task that died, for readiness."""
        return [
            f"{name}: {s.error}" for name, s in sorted(self._states.items()) if s.state == FAILED
        ]

    def up(self, name: str) -> bool:
        return self._states.get(name, TaskState(STOPPED)).state == RUNNING

    async def stop(self, name: str, *, cancel: bool = True) -> None:
        """Wait for one task to end (cancelling it unless its own stop() was asked first)."""
        task = self._tasks.get(name)
        if task is None:
            return
        self._stopping.add(name)
        if cancel:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        for name in list(self._tasks):
            await self.stop(name)
