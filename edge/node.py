"""The running node's state, shared by handlers and background loops through one AppKey."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge import mirror
from edge.auth import Tokens
from edge.config import Settings
from edge.db import Database
from edge.mirror import MirrorState
from edge.payments import Acceptor
from sync.link import Link
from sync.puller import Puller
from sync.replayer import Replayer, StepResult

if TYPE_CHECKING:
    from edge.monitor import PowerMonitor


@dataclass
class PowerView:
    """What the power monitor last concluded; `unknown` until a UPS source reports."""

    state: str = "unknown"
    source: str = "none"
    ups_status: str | None = None
    battery_charge: float | None = None
    runtime_s: float | None = None
    load_pct: float | None = None
    input_voltage: float | None = None
    updated_at: float | None = None
    error: str | None = None  # why the source gives no data, shown while `unknown`

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Node:
    settings: Settings
    db: Database
    tokens: Tokens
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    shutting_down: bool = False
    shutdown_reason: str = ""
    power: PowerView = field(default_factory=PowerView)
    link: Link = field(default_factory=Link)
    # Set when a payment commits, so the replayer sends it without waiting for its timer.
    outbox_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Background loops, set by their cleanup contexts (None: not running, e.g. no centre).
    replayer: Replayer | None = None
    puller: Puller | None = None
    power_monitor: PowerMonitor | None = None
    on_replay_result: Callable[[StepResult], None] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    acceptor: Acceptor = field(init=False)
    _mirror_cache: tuple[float, MirrorState] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # One instance per node: the writer groups payments by this job's identity.
        self.acceptor = Acceptor(self.settings.node_id, self.settings.node_governorate)

    def mirror_state(self) -> MirrorState:
        """The mirror's cursor and freshness, re-read at most once a second (inquiries ask often)."""
        now = time.monotonic()
        if self._mirror_cache is None or now - self._mirror_cache[0] > 1.0:
            self._mirror_cache = (now, self.db.read(mirror.state))
        return self._mirror_cache[1]

    def refuse_payments(self, reason: str) -> None:
        self.shutting_down = True
        self.shutdown_reason = reason


NODE = web.AppKey("node", Node)
