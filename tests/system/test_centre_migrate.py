"""`edge centre migrate-to-postgres` for real: an SQLite centre that received a node's real
payments (and an online payment, a fine rule) is moved into a throwaway PostgreSQL cluster and
verified; a second move is refused (nothing written), `--replace` moves it again; then `edge
centre serve` on the PostgreSQL URL serves the same node, whose next payment chains on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest
from helpers import wait_until
from pgcluster import Cluster
from procs import GOV, Site, edge, env

from sync.centre import migrate

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(edge(*args), env=env(), capture_output=True, text=True, timeout=120)


def pay(site: Site, bill: str, key: str) -> None:
    request = urllib.request.Request(
        f"{site.url}/v1/payments",
        data=json.dumps({"bill_id": bill, "amount": 700, "method": "cash",
                         "cashier": "huda"}).encode(),
        headers={"Authorization": f"Bearer {site.token}", "Idempotency-Key": key,
                 "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201


def mirror_bills(site: Site) -> list[str]:
    with closing(site.node_db()) as conn:
        rows = conn.execute(
            "SELECT bill_id FROM bills WHERE amount - paid > 10000 ORDER BY bill_id LIMIT 8"
        ).fetchall()
    return [r[0] for r in rows]


def pending(site: Site) -> int:
    with closing(site.node_db()) as conn:
        query = "SELECT count(*) FROM outbox_entries WHERE state = 'pending'"
        return int(conn.execute(query).fetchone()[0])


async def tamper_and_compare(source: Path, url: str) -> list[str]:
    """The verification is a real one: one entry's amount changed in the target shows."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE entries SET amount = amount + 1 WHERE seq = 2")
        with closing(migrate.open_source(source)) as src:
            tables = migrate.plan(migrate.source_tables(src), await migrate.target_columns(conn))
            here = migrate.source_figures(src, tables)
        there = await migrate.target_figures(conn, tables)
        await conn.execute("UPDATE entries SET amount = amount - 1 WHERE seq = 2")
        return here.differences(there)
    finally:
        await conn.close()


def test_an_sqlite_centre_moves_to_postgresql_and_serves_the_same_node_on(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    site = Site(tmp_path / "site")
    site.seed(40)
    url = pg_cluster.create_database()
    source = site.base / "centre" / "centre.db"
    try:
        site.start_centre()
        site.start_node()
        wait_until(lambda: len(mirror_bills(site)) == 8, 30, site.node.tail, every=0.2)
        bills = mirror_bills(site)
        for i in range(5):
            pay(site, bills[i], f"sqlite-{i}")
        wait_until(lambda: len(site.ledger()) == 5, 30, site.node.tail, every=0.3)
        paid = run("centre", "pay", "--config", str(site.centre_config), bills[6], "300")
        assert paid.returncode == 0, paid.stderr
        rule = run("centre", "fine-rule", "set", "--config", str(site.centre_config),
                   "--governorate", GOV, "--grace-days", "15", "--fixed", "500",
                   "--effective", "2030-01-01")  # fmt: skip
        assert rule.returncode == 0, rule.stderr
        assert site.node.stop() == 0 and site.centre.stop() == 0
        before = site.ledger()

        with_password = url.replace("centre@", "centre:hunter2@")
        refused = run("centre", "migrate-to-postgres", "--from", str(source), "--to", with_password)
        assert refused.returncode == 2 and "PGPASSFILE" in refused.stderr
        assert "hunter2" not in refused.stderr + refused.stdout

        moved = run("centre", "migrate-to-postgres", "--from", str(source), "--to", url)
        assert moved.returncode == 0, moved.stderr
        assert "verified:" in moved.stdout and "entries: 5 rows" in moved.stdout, moved.stdout
        assert "chain heads" in moved.stdout and "bills: 40 rows" in moved.stdout
        assert "online_payments: 1 rows" in moved.stdout and "fine_rules: 1 rows" in moved.stdout

        again = run("centre", "migrate-to-postgres", "--from", str(source), "--to", url)
        assert again.returncode == 1 and "already holds centre data" in again.stderr
        assert pg_cluster.psql("SELECT count(*) FROM entries", url.rsplit("/", 1)[1]).strip() == "5"
        replaced = run("centre", "migrate-to-postgres", "--from", str(source), "--to", url,
                       "--replace")  # fmt: skip
        assert replaced.returncode == 0 and "verified:" in replaced.stdout, replaced.stderr

        differences = asyncio.run(tamper_and_compare(source, url))
        assert differences == ["entries: digests differ"], differences

        # The same node, now served from PostgreSQL: its next payment continues its chain.
        text = site.centre_config.read_text()
        assert 'database = ""\n' in text
        site.centre_config.write_text(text.replace('database = ""\n', f'database = "{url}"\n'))
        source.rename(source.with_suffix(".db.moved"))  # nothing may read the old file now
        assert site.ledger() == before
        site.start_centre()
        site.start_node()
        pay(site, bills[5], "postgres-1")
        wait_until(lambda: len(site.ledger()) == 6, 30, site.node.tail, every=0.3)
        rows = site.ledger()
        assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4, 5, 6]
        assert {r["verdict"] for r in rows} == {"applied"}
        assert rows[:5] == before
        wait_until(lambda: pending(site) == 0, 30, site.node.tail, every=0.3)
        with urllib.request.urlopen(f"{site.url}/v1/status", timeout=5) as resp:
            assert json.load(resp)["link"]["state"] == "up"
    finally:
        site.shutdown()
        pg_cluster.drop_database(url)
