"""Key rotation while payments flow (deploy/README.md): a new secret, the centre's
next_secret_file, the node switched, then the swap; and the start refusals of bad secrets."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from loadgen import Cashiers
from procs import Site, edge, env


def pending(site: Site) -> int:
    with closing(site.node_db()) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'").fetchone()[
                0
            ]
        )


async def restart(proc_start: object, stop: object) -> None:
    await asyncio.to_thread(stop)  # type: ignore[arg-type]
    await asyncio.to_thread(proc_start)  # type: ignore[arg-type]


async def test_a_key_rotates_while_payments_flow_none_lost_none_refused(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    site.seed(200)
    old = site.base / "dam-1.secret"
    new = site.base / "dam-1.next.secret"
    made = subprocess.run(edge("secret", "new", str(new)), env=env(), capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert "key id" in made.stdout and new.stat().st_mode & 0o777 == 0o600
    centre_toml = site.centre_config.read_text()
    try:
        site.start_centre()
        site.start_node()
        await asyncio.sleep(1.0)  # the mirror bootstraps
        cashiers = Cashiers(site.url, site.token, site.bills(50), random.Random(5))
        load = asyncio.create_task(cashiers.run(8))
        await asyncio.sleep(1.0)
        # 1. The centre holds both keys.
        site.centre_config.write_text(
            centre_toml.replace(f'secret_file = "{old}"\n',
                                f'secret_file = "{old}"\nnext_secret_file = "{new}"\n')
        )  # fmt: skip
        await restart(site.start_centre, site.centre.stop)
        await asyncio.sleep(1.0)
        # 2. The node switches: its file is replaced (atomically); it follows without a restart.
        staged = site.base / "centre.secret.new"
        shutil.copy(new, staged)
        staged.chmod(0o600)
        os.replace(staged, old)
        await asyncio.sleep(1.5)
        # 3. The swap: the new key is the centre's only key.
        site.centre_config.write_text(
            centre_toml.replace(f'secret_file = "{old}"', f'secret_file = "{new}"')
        )
        await restart(site.start_centre, site.centre.stop)
        await asyncio.sleep(1.0)
        cashiers.stop.set()
        await load
        deadline = time.monotonic() + 60
        while pending(site) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        ledger = site.ledger()
    finally:
        site.shutdown()
    with closing(site.node_db()) as conn:
        node = {
            r[0] for r in conn.execute("SELECT id FROM outbox_entries WHERE state = 'delivered'")
        }
        total = conn.execute("SELECT COUNT(*) FROM outbox_entries").fetchone()[0]
    ids = Counter(r["id"] for r in ledger)
    assert cashiers.refused == 0
    assert len(node) == total == len(cashiers.acked) > 0, "entries not delivered"
    assert set(ids) == node and max(ids.values()) == 1
    centre_log = site.centre.tail()
    assert "unauthorized" not in centre_log, centre_log  # no request of the node was refused
    assert "now signing with key" in site.node.tail()
    print(f"\nkey rotated under load: {total} payments, 0 lost, 0 refused")


@pytest.mark.parametrize(
    ("content", "mode", "rule"),
    [("short-secret\n", 0o600, "at least 32"), ("k" * 64 + "\n", 0o644, "0600 or stricter")],
)
def test_a_bad_secret_stops_node_and_centre_at_start(
    tmp_path: Path, content: str, mode: int, rule: str
) -> None:
    site = Site(tmp_path / "site")
    secret = site.base / "dam-1.secret"
    secret.write_text(content)
    secret.chmod(mode)
    for config, args in ((site.node_config, ["serve"]), (site.centre_config, ["centre", "serve"])):
        done = subprocess.run(edge(*args, "--config", str(config)), env=env(), capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert str(secret) in done.stderr and rule in done.stderr, done.stderr
