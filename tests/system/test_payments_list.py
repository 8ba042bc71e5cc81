"""`edge payments list` as a subprocess, reading the database of a node that keeps running."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from procs import Site, edge, env

from edge.ops.payments import CSV_COLUMNS


def call(site: Site, path: str, body: dict[str, Any] | None = None, key: str = "") -> Any:
    headers = {"Authorization": f"Bearer {site.token}"}
    data = None
    if body is not None:
        headers |= {"Content-Type": "application/json", "Idempotency-Key": key}
        data = json.dumps(body).encode()
    req = urllib.request.Request(f"{site.url}{path}", data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def run(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edge("payments", "list", "--config", str(site.node_config), *args),
        env=env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    site = Site(tmp_path_factory.mktemp("payments-list") / "site")
    site.seed(200)
    try:
        site.start_centre()
        site.start_node()
        wait_until(lambda: call(site, "/v1/status")["mirror"]["cursor"] is not None, 30,
                   "the node's mirror to bootstrap")  # fmt: skip
        bills = site.bills(4)
        site.paid = [  # type: ignore[attr-defined]
            call(site, "/v1/payments", {"bill_id": bills[i % 4], "amount": 1000 + i,
                                        "method": "cash", "cashier": "هدى" if i % 2 else "rami"},
                 key=f"k{i}")
            for i in range(7)
        ]  # fmt: skip
        yield site
    finally:
        site.shutdown()


def test_json_is_the_apis_page_while_the_node_runs(site: Any) -> None:
    done = run(site, "--format", "json", "--limit", "500")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert site.node.alive()  # read-only beside the running writer
    assert [i["payment_id"] for i in listed["items"]] == [p["payment_id"] for p in
                                                          reversed(site.paid)]  # fmt: skip
    assert listed["next"] is None
    api = call(site, "/v1/payments?limit=500")  # counter-1's token: its own channel, all of them
    assert listed["items"] == api["items"]


def test_csv_is_utf8_with_a_header_and_takes_the_filters(site: Any) -> None:
    done = run(site, "--format", "csv", "--cashier", "هدى")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert done.stdout.splitlines()[0].startswith("payment_id,receipt,bill_id,account,amount")
    expected = [p for p in reversed(site.paid) if p["amount"] % 2]  # odd i: هدى
    assert [r["receipt"] for r in rows] == [p["receipt"] for p in expected]
    assert {r["cashier"] for r in rows} == {"هدى"} and {r["state"] for r in rows} <= {
        "pending_sync", "synced"}  # fmt: skip
    bill = site.paid[0]["bill_id"]
    done = run(site, "--format", "csv", "--bill-id", bill, "--channel", "counter-1")
    assert [r["bill_id"] for r in csv.DictReader(io.StringIO(done.stdout))] == [bill, bill]


def test_table_pages_and_says_how_to_go_on(site: Any) -> None:
    done = run(site, "--limit", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["seq", "receipt", "bill_id", "amount", "(SYP)", "method",
                                "cashier", "channel", "accepted_at", "state"]  # fmt: skip
    assert lines[-1] == "(3 payments)"
    assert site.paid[-1]["receipt"] in lines[1] and "10.06" in lines[1]
    assert "--after" in done.stderr
    every = run(site, "--limit", "3", "--all")
    assert every.stdout.splitlines()[-1] == "(7 payments)" and "--after" not in every.stderr
    none = run(site, "--day", "2000-01-01")
    assert none.returncode == 0, none.stderr
    assert none.stdout.splitlines()[-1] == "(0 payments)" and len(none.stdout.splitlines()) == 2
    empty_csv = run(site, "--day", "2000-01-01", "--format", "csv").stdout.splitlines()
    assert empty_csv == [",".join(CSV_COLUMNS)]
    receipt = site.paid[2]["receipt"]
    one = run(site, "--receipt", receipt)
    assert one.stdout.splitlines()[-1] == "(1 payment)" and receipt in one.stdout


@pytest.mark.parametrize(
    "args", [["--day", "2026-02-30"], ["--state", "lost"], ["--limit", "0"], ["--receipt", "x"]]
)
def test_a_bad_filter_exits_2_naming_it(site: Any, args: list[str]) -> None:
    done = run(site, *args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"edge: {args[0][2:]}:"), done.stderr


def test_a_missing_database_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "none"}"\n')
    done = subprocess.run(edge("payments", "list", "--config", str(config)), env=env(),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1 and "no database" in done.stderr


def test_the_api_refuses_what_the_cli_refuses(site: Any) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        call(site, "/v1/payments?state=lost")
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["code"] == "invalid_query"
    caught.value.close()
