"""deploy/README.md's hot standby, step by step, for real: a PostgreSQL centre taking a node's
payments, a standby made with `pg_basebackup -X stream -R` streaming from it (then
synchronous, `sync_state = sync`), the primary killed, the standby promoted, and the centre
pointed at it: every entry the node was answered for is there, and its next payment chains on.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import tempfile
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from helpers import free_port, unavailable, wait_until
from pgcluster import USER, Cluster, bindir
from procs import Site

pytestmark = pytest.mark.slow


def pay(site: Site, bill: str, key: str) -> None:
    request = urllib.request.Request(
        f"{site.url}/v1/payments",
        data=json.dumps({"bill_id": bill, "amount": 500, "method": "cash",
                         "cashier": "huda"}).encode(),
        headers={"Authorization": f"Bearer {site.token}", "Idempotency-Key": key,
                 "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201


def standby_of(primary: Cluster) -> Cluster:
    """Step 2: an empty directory filled by pg_basebackup from the primary, then started."""
    base = Path(tempfile.mkdtemp(prefix="edge-pg-standby-"))
    if primary.runas:
        owner = pwd.getpwnam("nobody")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    standby = Cluster(primary.bin, base, free_port(), primary.runas)
    subprocess.run(
        [*primary.runas, str(primary.bin / "pg_basebackup"), "-h", "127.0.0.1",
         "-p", str(primary.port), "-U", USER, "-D", str(standby.data), "-X", "stream", "-R",
         "-c", "fast"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert (standby.data / "standby.signal").exists()  # -R made it a standby
    # The copy carries the primary's settings: its own port, socket and name override them.
    auto = standby.data / "postgresql.auto.conf"
    with auto.open("a") as conf:
        conf.write(f"port = {standby.port}\nunix_socket_directories = '{base}'\n"
                   "cluster_name = 'standby1'\nhot_standby = on\n")  # fmt: skip
    standby.pg_ctl("start")
    return standby


def test_a_streaming_standby_takes_over_and_the_centre_goes_on(tmp_path: Path) -> None:
    found = bindir()
    if found is None:
        unavailable("PostgreSQL is absent (apt-get install postgresql)")
    primary = Cluster.start(found)
    standby: Cluster | None = None
    url = primary.create_database()
    name = url.rsplit("/", 1)[1]
    site = Site(tmp_path / "site", database=url)
    try:
        site.seed(30)
        site.start_centre()
        site.start_node()

        def bills() -> list[str]:
            with closing(site.node_db()) as conn:
                return [r[0] for r in conn.execute("SELECT bill_id FROM bills ORDER BY bill_id"
                                                   " LIMIT 6").fetchall()]  # fmt: skip

        wait_until(lambda: len(bills()) == 6, 30, site.node.tail, every=0.2)
        ids = bills()
        pay(site, ids[0], "k0")
        pay(site, ids[1], "k1")
        wait_until(lambda: len(site.ledger()) == 2, 30, site.node.tail, every=0.3)

        standby = standby_of(primary)
        state = "SELECT application_name, state, sync_state FROM pg_stat_replication"
        wait_until(lambda: primary.psql(state).strip() == "standby1|streaming|async", 30,
                   lambda: primary.psql(state))  # fmt: skip
        assert standby.psql("SELECT pg_is_in_recovery()").strip() == "t"
        # Step 4: synchronous, for money.
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (standby1)'")
        primary.psql("SELECT pg_reload_conf()")
        wait_until(lambda: primary.psql(state).strip() == "standby1|streaming|sync", 30,
                   lambda: primary.psql(state))  # fmt: skip
        for i in range(2, 5):
            pay(site, ids[i], f"k{i}")
        wait_until(lambda: len(site.ledger()) == 5, 30, site.node.tail, every=0.3)
        # Answered means on the standby too (synchronous): nothing waits to be copied.
        assert standby.psql("SELECT count(*) FROM entries", name).strip() == "5"

        # Step 5: the primary is lost; the standby is promoted; the centre points at it.
        site.centre.kill9()
        primary.pg_ctl("stop", "immediate")
        assert standby.psql("SELECT pg_promote()").strip() == "t"
        wait_until(lambda: standby.psql("SELECT pg_is_in_recovery()").strip() == "f", 30,
                   lambda: "promotion")  # fmt: skip
        site.centre_config.write_text(
            site.centre_config.read_text().replace(url, standby.url(name))
        )
        site.start_centre()
        pay(site, ids[5], "k5")
        wait_until(lambda: len(site.ledger()) == 6, 30, site.node.tail, every=0.3)
        rows = site.ledger()
        assert [int(r["seq"]) for r in rows] == list(range(1, 7))
        assert {r["verdict"] for r in rows} == {"applied"}
        assert standby.psql("SELECT seq FROM chain_heads WHERE node = 'dam-1'", name).strip() == "6"
    finally:
        site.shutdown()
        if standby is not None:
            standby.stop()
        primary.stop()
