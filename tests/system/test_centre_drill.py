"""deploy/README.md's database roles and its backup and restore drill, word for word. The
roles: the centre migrates and takes payments as the least-privileged `edge_centre`, and
`edge_report` reads but cannot write. The drill: the nightly `pg_dump -Fc` of a
PostgreSQL centre that took a node's payments, restored into a scratch database, and the
guide's own shell block (shellcheck-clean) comparing every chain head with the live ledger:
no MISMATCH while the live centre takes more payments, one for a head that is not in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import urllib.request
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest
from helpers import unavailable, wait_until
from pgcluster import USER, Cluster
from procs import ROOT, Site

pytestmark = pytest.mark.slow
GUIDE = ROOT / "deploy" / "README.md"


def block(after: str) -> str:
    """The guide's first ```sh block after the text `after`."""
    text = GUIDE.read_text()
    found = re.search(r"```sh\n(.*?)```", text[text.index(after) :], re.S)
    assert found is not None, after
    return found.group(1)


def pay(site: Site, bill: str, key: str) -> None:
    request = urllib.request.Request(
        f"{site.url}/v1/payments",
        data=json.dumps({"bill_id": bill, "amount": 300, "method": "cash",
                         "cashier": "huda"}).encode(),
        headers={"Authorization": f"Bearer {site.token}", "Idempotency-Key": key,
                 "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201


def test_the_guides_restore_drill_finds_every_head_and_only_true_ones(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        unavailable("shellcheck is absent (apt-get install shellcheck)")
    drill = block("**The drill, monthly**")
    backups = block("Two kinds, both")
    nightly = next(line for line in backups.splitlines() if "pg_dump" in line)
    for script in (drill, backups):
        checked = subprocess.run([shellcheck, "-s", "bash", "-"], input=script, text=True,
                                 capture_output=True, check=False)  # fmt: skip
        assert checked.returncode == 0, checked.stdout
    dump = tmp_path / "night.dump"
    for old, new in [('LIVE="host=db.example.sy dbname=edge_centre user=edge_report"',
                      'LIVE="dbname=edge_centre"'),  # host, port and user from PG* below
                     ("edge_centre-2026-12-01.dump", str(dump))]:  # fmt: skip
        assert old in drill, old
        drill = drill.replace(old, new)
    old = '"/var/backups/edge-centre/edge_centre-$(date +%F).dump"'
    assert old in nightly
    nightly = nightly.replace(old, str(dump))
    tools = {**os.environ, "PATH": f"{pg_cluster.bin}:{os.environ['PATH']}", "PGHOST": "127.0.0.1",
             "PGPORT": str(pg_cluster.port), "PGUSER": USER}  # fmt: skip

    def sh(script: str) -> str:
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=tools, text=True,
                              capture_output=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    pg_cluster.psql("CREATE DATABASE edge_centre")
    site = Site(tmp_path / "site", database=pg_cluster.url("edge_centre"))
    try:
        site.seed(20)
        site.start_centre()
        site.start_node()

        def bills() -> list[str]:
            with closing(site.node_db()) as conn:
                query = "SELECT bill_id FROM bills WHERE amount - paid > 10000 ORDER BY bill_id"
                return [r[0] for r in conn.execute(query + " LIMIT 5").fetchall()]

        wait_until(lambda: len(bills()) == 5, 30, site.node.tail, every=0.2)
        ids = bills()
        for i in range(3):
            pay(site, ids[i], f"night-{i}")
        wait_until(lambda: len(site.ledger()) == 3, 30, site.node.tail, every=0.3)
        sh(nightly)  # the nightly dump, while the centre runs
        for i in range(3, 5):  # the live centre goes on after the dump
            pay(site, ids[i], f"day-{i}")
        wait_until(lambda: len(site.ledger()) == 5, 30, site.node.tail, every=0.3)

        out = sh(drill)
        assert "MISMATCH" not in out, out
        assert out.strip().splitlines()[-1] == "3|900"  # the dump's day: 3 payments of 300
        assert (tmp_path / "heads.txt").read_text().startswith("dam-1|3|")
        # A copy whose head is not the live ledger's (a wrong or damaged backup) is named.
        pg_cluster.psql("UPDATE chain_heads SET hash = repeat('0', 64)", "edge_centre_drill")
        compare = "\n".join(line for line in drill.splitlines() if not line.startswith("createdb"))
        assert "MISMATCH dam-1 3" in sh(compare)
    finally:
        site.shutdown()
        pg_cluster.drop_database(pg_cluster.url("edge_centre"))
        pg_cluster.drop_database(pg_cluster.url("edge_centre_drill"))


async def as_report(url: str) -> tuple[int, str]:
    """What the read-only role may do: read the ledger, and not write it."""
    conn = await asyncpg.connect(url)
    try:
        count = int(await conn.fetchval("SELECT count(*) FROM entries"))
        try:
            await conn.execute("UPDATE bills SET paid = 0")
        except asyncpg.InsufficientPrivilegeError as exc:
            return count, str(exc)
        return count, "the report role could write"
    finally:
        await conn.close()


def test_the_guides_roles_run_the_centre_and_the_report_role_only_reads(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    setup = block("### The database")
    script = setup.split("<<'SQL'\n", 1)[1].split("\nSQL\n", 1)[0]
    for statement in script.split(";\n"):
        sql = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
        if sql.strip():
            pg_cluster.psql(sql)
    commands = re.findall(r'psql -d edge_centre -c "(.*?)"', setup, re.S)
    assert len(commands) == 2, commands  # the REVOKE now, the GRANTs after the first start
    pg_cluster.psql(commands[0], "edge_centre")
    assert pg_cluster.psql("SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname ="
                           " 'edge_centre'").strip() == "f|f"  # fmt: skip
    url = f"postgresql://edge_centre@127.0.0.1:{pg_cluster.port}/edge_centre"
    site = Site(tmp_path / "site", database=url)
    try:
        site.seed(10)  # the first start: the centre's migrations, as edge_centre
        pg_cluster.psql(commands[1], "edge_centre")
        site.start_centre()
        site.start_node()

        def bills() -> list[str]:
            with closing(site.node_db()) as conn:
                query = "SELECT bill_id FROM bills WHERE amount - paid > 10000 ORDER BY bill_id"
                return [r[0] for r in conn.execute(query + " LIMIT 1").fetchall()]

        wait_until(lambda: len(bills()) == 1, 30, site.node.tail, every=0.2)
        pay(site, bills()[0], "least-privilege")
        wait_until(lambda: len(site.ledger()) == 1, 30, site.node.tail, every=0.3)
        owner = "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        assert pg_cluster.psql(owner, "edge_centre").split() == ["edge_centre"]
        report = f"postgresql://edge_report@127.0.0.1:{pg_cluster.port}/edge_centre"
        count, refusal = asyncio.run(as_report(report))
        assert count == 1 and "permission denied" in refusal, refusal
    finally:
        site.shutdown()
        pg_cluster.drop_database(url)
        pg_cluster.psql("DROP ROLE IF EXISTS edge_report")
        pg_cluster.psql("DROP ROLE IF EXISTS edge_centre")
