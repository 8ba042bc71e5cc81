"""The `edge` CLI as real processes started under umask 022: what they create stays private.

edge.cli main() sets umask 077 first; the node's files are 0600 by their own code as well.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import free_port
from procs import Proc, edge, env, wait_http


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask_022() -> Iterator[None]:
    """The usual shell umask, inherited by the processes started meanwhile."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def node_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n[http]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[auth]\ntokens_file = "{tmp_path / "etc" / "sub" / "tokens.toml"}"\n'
        '[centre]\nurl = ""\n[storage]\nmin_free_mb = 0\n[ups]\nsource = "none"\n'
    )
    return cfg


def test_cli_sets_umask_077_for_what_it_creates(tmp_path: Path) -> None:
    cfg = node_config(tmp_path, free_port())
    with umask_022():
        done = subprocess.run(edge("token", "add", "--config", str(cfg), "--name", "counter-1"),
                              env=env(), capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    tokens = tmp_path / "etc" / "sub" / "tokens.toml"
    assert mode(tokens) == 0o600
    # Directories made with the default mode: 0755 under the caller's umask, 0700 under ours.
    assert (mode(tokens.parent), mode(tokens.parent.parent)) == (0o700, 0o700)


def test_edge_serve_under_umask_022_keeps_database_wal_and_shm_0600(tmp_path: Path) -> None:
    port = free_port()
    cfg = node_config(tmp_path, port)
    with umask_022():
        node = Proc(edge("serve", "--config", str(cfg)), tmp_path / "node.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", node)
        db = tmp_path / "data" / "edge.db"
        files = [db, db.with_name("edge.db-wal"), db.with_name("edge.db-shm")]
        assert [mode(p) for p in files] == [0o600] * 3
        assert mode(db.parent) == 0o700
    finally:
        assert node.stop() == 0, node.tail()
    assert "node stopped cleanly" in node.tail()
