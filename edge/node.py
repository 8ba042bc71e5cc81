"""The running node: one typed record, built once in `create_app`, shared through one AppKey.

Handlers and background loops read it; nothing is added to it later. Its parts open in
`edge.app`'s cleanup contexts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edge import mirror
from edge.audit import Trail
from edge.config import Settings
from edge.db import Database
from edge.lastused import LastUsed
from edge.mirror import MirrorState
from edge.offline import Limits
from edge.payments import Acceptor
from edge.power.history import History
from edge.replication import Replication
from edge.tasks import Supervisor
from edge.tokens import Tokens
from sync.fines import Rule
from sync.link import Link


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
    link: Link
    tasks: Supervisor
    replication: Replication
    history: History
    audit: Trail
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    shutting_down: bool = False
    shutdown_reason: str = ""
    power: PowerView = field(default_factory=PowerView)
    acceptor: Acceptor = field(init=False)
    last_used: LastUsed = field(init=False)
    _mirror_cache: tuple[float, MirrorState] | None = field(default=None, init=False)
    _rules_cache: tuple[float, list[Rule]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # One instance per node: the writer groups payments by this job's identity.
        self.acceptor = Acceptor(
            self.settings.node_id,
            self.settings.node_governorate,
            self.settings.receipt_code,
            Limits.of(self.settings),
        )
        self.power.source = self.settings.ups_source
        self.last_used = LastUsed(self.db, self.clock)

    @classmethod
    def build(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time,
        on_replay_result: Callable[[Any], None] | None = None,
    ) -> Node:  # fmt: skip
        """Every part of a node, wired, without I/O."""
        db = Database(settings.node_data_dir, synchronous=settings.storage_synchronous)
        link = Link(clock=clock)
        tasks = Supervisor()
        replication = Replication(
            settings, db, link, tasks, clock=clock, on_result=on_replay_result
        )
        history = History(
            db, clock, runtime_floor_s=settings.power_runtime_floor_s, source=settings.ups_source
        )
        link.on_change(history.on_link_change)
        audit = Trail(db, tasks, enabled=settings.audit_enabled,
                      keep_days=settings.audit_keep_days, clock=clock)  # fmt: skip
        return cls(
            settings=settings, db=db, tokens=Tokens(settings.auth_tokens_file, clock=clock), link=link,
            tasks=tasks, replication=replication, history=history, audit=audit,
            clock=clock,
        )  # fmt: skip

    @property
    def outbox_changed(self) -> Any:
        return self.replication.outbox_changed

    def mirror_state(self) -> MirrorState:
        """The mirror's cursor and freshness, re-read at most once a second (inquiries ask often)."""
        now = time.monotonic()
        if self._mirror_cache is None or now - self._mirror_cache[0] > 1.0:
            self._mirror_cache = (now, self.db.read(mirror.state))
        return self._mirror_cache[1]

    def fine_rules(self) -> list[Rule]:
        """The pulled fine rules (DESIGN 5.17), re-read at most once a second like the mirror
        state: every inquiry needs the rule of its day."""
        now = time.monotonic()
        if self._rules_cache is None or now - self._rules_cache[0] > 1.0:
            self._rules_cache = (now, self.db.read(mirror.rules))
        return self._rules_cache[1]

    def bootstrap(self, state: MirrorState | None = None) -> dict[str, int | None] | None:
        """`{"bills": n, "of": total}` until the mirror's first snapshot is applied (its cursor
        is set), then None. Readiness, inquiries and `/v1/status` follow it (DESIGN 5.3).

        `n` is what the current (or last) snapshot stream applied, `of` what the centre
        announced (None if it did not); with no stream yet, the bills the mirror holds.
        """
        state = state or self.mirror_state()
        if state.cursor is None:
            # Re-read, not the second-old cache: a node must turn ready as soon as it is.
            state = self.db.read(mirror.state)
            self._mirror_cache = (time.monotonic(), state)
        if state.cursor is not None:
            return None
        puller = self.replication.puller
        progress = None if puller is None else puller.bootstrap_progress
        if progress is None:
            return {"bills": state.bills, "of": None}
        return {"bills": progress.done, "of": progress.total}

    def refuse_payments(self, reason: str) -> None:
        self.shutting_down = True
        self.shutdown_reason = reason

    def resume_payments(self) -> None:
        self.shutting_down, self.shutdown_reason = False, ""

    def mode(self) -> str:
        """`normal`, `degraded` (offline, on battery or bootstrapping), `read_only` or
        `shutting_down`."""
        if self.shutting_down:
            return "read_only" if self.settings.power_on_low == "read_only" else "shutting_down"
        if self.power.state in ("battery", "low") or self.link.state in ("down", "degraded"):
            return "degraded"
        if self.db.is_open and self.bootstrap() is not None:
            return "degraded"  # inquiries are refused until the mirror is loaded
        return "normal"

    def not_ready(self) -> list[str]:
        """Why the node should not get traffic now (empty: ready)."""
        reasons = []
        if not self.db.is_open:
            reasons.append("database not open")
        if self.shutting_down:
            reasons.append(f"shutting down: {self.shutdown_reason or 'stopping'}")
        reasons += [f"task {failed}" for failed in self.tasks.failed()]
        return reasons


NODE = web.AppKey("node", Node)
