"""Row 2 of the fault matrix: the node dies at named worst moments (EDGE_CRASH_AT), then recovers."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from procs import Site, edge, env


def pay(site: Site, bill: str, amount: int, key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        f"{site.url}/v1/payments", method="POST",
        data=json.dumps({"bill_id": bill, "amount": amount, "method": "cash", "cashier": "c"}).encode(),
        headers={"Authorization": f"Bearer {site.token}", "Idempotency-Key": key, "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read()), dict(resp.headers)


def wait_delivered(site: Site, n: int, timeout: float = 30) -> None:
    def delivered() -> bool:
        with closing(site.node_db()) as conn:
            sql = "SELECT COUNT(*) FROM outbox_entries WHERE state = 'delivered'"
            return bool(conn.execute(sql).fetchone()[0] == n)

    wait_until(delivered, timeout, lambda: f"all {n} entries delivered:\n{site.node.tail()}",
               every=0.2)  # fmt: skip


def wait_mirror(site: Site, timeout: float = 20) -> None:
    def bootstrapped() -> bool:
        with closing(site.node_db()) as conn:
            return conn.execute("SELECT cursor FROM mirror_state").fetchone()[0] is not None

    wait_until(bootstrapped, timeout, "the mirror to bootstrap", every=0.1)


def wait_dead(site: Site, timeout: float = 20) -> None:
    assert site.node.popen is not None
    site.node.popen.wait(timeout)
    assert site.node.popen.returncode == -9, site.node.tail()


@pytest.fixture
def site(tmp_path: Path) -> Any:
    s = Site(tmp_path / "site")
    s.seed(50)
    s.start_centre()
    yield s
    s.shutdown()


def test_crash_after_commit_before_reply(site: Site) -> None:
    site.start_node(EDGE_CRASH_AT="after_commit:3")
    wait_mirror(site)
    bill = site.bills(1)[0]
    for i in range(2):
        assert pay(site, bill, 500, f"k{i}")[0] == 201
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        pay(site, bill, 500, "k2")  # committed, then the process died before answering
    wait_dead(site)
    site.start_node()
    status, body, headers = pay(site, bill, 500, "k2")  # the cashier retries with the same key
    assert status == 201 and headers.get("Idempotent-Replayed") == "true"
    wait_delivered(site, 3)
    ledger = site.ledger()
    assert len(ledger) == 3 and body["payment_id"] in {r["id"] for r in ledger}


def test_crash_after_centre_committed_before_settle(site: Site) -> None:
    site.start_node(EDGE_CRASH_AT="before_settle:1")
    wait_mirror(site)
    site.centre.stop()  # the link is down while the cashier takes three payments
    bill = site.bills(1)[0]
    ids = [pay(site, bill, 700, f"s{i}")[1]["payment_id"] for i in range(3)]
    site.start_centre()  # the link returns: one batch of three, and death before settling it
    wait_dead(site)
    with closing(site.node_db()) as conn:
        pending = conn.execute(
            "SELECT COUNT(*) FROM outbox_entries WHERE state = 'pending'"
        ).fetchone()[0]
    assert pending >= 1  # the node never recorded the verdict ...
    assert len(site.ledger()) >= 1  # ... that the centre had already committed
    site.start_node()
    wait_delivered(site, 3)
    ledger = site.ledger()
    assert Counter(r["id"] for r in ledger) == Counter(ids)  # once each
    with closing(site.node_db()) as conn:
        verdicts = {r[0] for r in conn.execute("SELECT verdict FROM outbox_entries")}
    assert "duplicate" in verdicts


def test_crash_in_the_middle_of_a_mirror_batch(tmp_path: Path) -> None:
    site = Site(tmp_path / "big")
    site.seed(12_000)  # the snapshot arrives in batches of 5,000: three batches
    try:
        site.start_centre()
        site.node.start(EDGE_CRASH_AT="mirror_batch:2")
        wait_dead(site)
        with closing(site.node_db()) as conn:
            bills, cursor = conn.execute(
                "SELECT (SELECT COUNT(*) FROM bills), cursor FROM mirror_state"
            ).fetchone()
        # The first batch (5,000 and what its last chunk carried) is kept, the second rolled
        # back, and there is no cursor yet: a restart bootstraps again.
        assert 5_000 <= bills < 12_000 and cursor is None
        site.node.start(EDGE_CRASH_AT="")

        def mirror() -> tuple[int, int | None, int] | None:
            with closing(site.node_db()) as conn:
                row = conn.execute(
                    "SELECT (SELECT COUNT(*) FROM bills), cursor, bills FROM mirror_state").fetchone()  # fmt: skip
            return row if row[1] is not None else None

        bills, cursor, counted = wait_until(mirror, 30, "the mirror to bootstrap again", every=0.2)
        assert (bills, counted) == (12_000, 12_000) and cursor == 12_000
        # The change feed: a new cycle, with the node killed inside its first batch.
        site.node.kill9()
        subprocess.run(edge("centre", "cycle", "--config", str(site.centre_config), "--cycle", "2031-01"),
                       check=True, env=env(), capture_output=True)  # fmt: skip
        site.node.start(EDGE_CRASH_AT="mirror_batch:1")
        wait_dead(site)
        with closing(site.node_db()) as conn:
            new, cursor = conn.execute(
                "SELECT (SELECT COUNT(*) FROM bills WHERE cycle = '2031-01'), cursor FROM mirror_state").fetchone()  # fmt: skip
        assert (new, cursor) == (0, 12_000)  # the cursor is never ahead of the data
        site.node.start(EDGE_CRASH_AT="")

        def new_cycle() -> bool:
            with closing(site.node_db()) as conn:
                sql = "SELECT COUNT(*) FROM bills WHERE cycle = '2031-01'"
                return bool(conn.execute(sql).fetchone()[0] == 12_000)

        wait_until(new_cycle, 30, "the 12,000 bills of the new cycle", every=0.2)
    finally:
        site.shutdown()
