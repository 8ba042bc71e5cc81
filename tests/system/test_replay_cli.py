"""`edge replay` against a real node: exit 1 with the reason while its centre is unreachable,
0 once the centre answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

from procs import Site, edge, env

from edge import tokens


def replay(site: Site, admin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edge("replay", "--config", str(site.node_config), "--token-file", "-"),
        input=admin + "\n", capture_output=True, text=True, env=env(), timeout=60,
    )  # fmt: skip


def test_replay_with_the_link_down_exits_1_and_says_why(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    admin = tokens.add_token(site.base / "tokens.toml", "ops", ["admin"])
    try:
        site.start_node()  # its centre is not running: nothing listens on centre.url's port
        done = replay(site, admin)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "replay triggered" not in done.stdout
        assert "the link to the centre is" in done.stderr
        assert "refused" in done.stderr.lower() or "connect" in done.stderr.lower(), done.stderr

        site.start_centre()
        done = replay(site, admin)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "the centre answers" in done.stdout
    finally:
        site.shutdown()
