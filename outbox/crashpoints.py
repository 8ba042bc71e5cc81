"""Test-only crash points: `EDGE_CRASH_AT=name[:n]` SIGKILLs the process at the n-th passage.

The fault-matrix tests use them to die at exactly the worst moments (after a commit but
before the reply, after the centre committed but before the node settled, inside a mirror
batch). Without the variable a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_commit", "before_settle", "mirror_batch")


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"EDGE_CRASH_AT={spec!r}: unknown crash point; known: {', '.join(POINTS)}")
    return name, int(count or "1")


_target = _parse(os.environ.get("EDGE_CRASH_AT", ""))
_passed: dict[str, int] = {}


def reached(name: str) -> None:
    """Die here (SIGKILL: no cleanup, no flush) if this is the configured point and passage."""
    if _target is None or _target[0] != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
