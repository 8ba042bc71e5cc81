"""`edge serve` says what it is doing at start, each slow step with its time, and logs
"serving on" only once its port answers."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from helpers import wait_until
from procs import Site


def test_each_start_step_is_logged_with_its_time_and_serving_means_answering(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site")
    try:
        site.centre.start()
        site.node.start()
        line = wait_until(
            lambda: next((x for x in site.node.tail().splitlines() if "serving on" in x), None),
            timeout=60, what=lambda: f"'serving on' in the log:\n{site.node.tail()}",
        )  # fmt: skip
        # The moment the line is there, the port takes a connection (no retry).
        port = int(
            re.search(r"serving on http://127\.0\.0\.1:(\d+) \(started in [0-9.]+ s\)", line)[1]
        )  # type: ignore[index]
        assert port == site.node_port
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        log = site.node.tail()
        steps = ["starting node dam-1", "opening the database", r"migrations: \d+ applied in [0-9.]+ s",
                 r"integrity check \(quick_check\) ok in [0-9.]+ s", r"database .* open in [0-9.]+ s",
                 r"mirror: 0 bills, cursor None, read in [0-9.]+ s \(bootstrapping", "serving on"]  # fmt: skip
        at = [re.search(step, log) for step in steps]
        assert all(at), list(zip(steps, at, strict=True))
        assert [m.start() for m in at if m] == sorted(m.start() for m in at if m), log
    finally:
        site.shutdown()
