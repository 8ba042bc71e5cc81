"""`edge audit` as a subprocess against a served node's database: CSV, filters, read-only."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import urllib.request
from contextlib import closing
from pathlib import Path

from helpers import free_port, make_bill, wait_until
from procs import Proc, edge, env, wait_http

from edge import mirror, tokens
from edge.db import DB_NAME, migrate

HEADER = ["seq", "at", "token", "address", "action", "object", "account", "status"]
A, B = "0100234567", "0100999999"


def audit_csv(config: Path, *args: str) -> list[dict[str, str]]:
    out = subprocess.run(
        edge("audit", "--config", str(config), *args), capture_output=True, env=env(),
        timeout=60, check=True,
    )  # fmt: skip
    text = out.stdout.decode("utf-8")  # strict: the CSV is UTF-8
    reader = csv.reader(io.StringIO(text, newline=""))
    assert next(reader) == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in reader]


def read(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def test_edge_audit_prints_the_trail_as_csv_with_filters(tmp_path: Path) -> None:
    port, data, tokens_file = free_port(), tmp_path / "node", tmp_path / "tokens.toml"
    counter = tokens.add_token(tokens_file, "counter-1", ["inquire", "pay"])
    kiosk = tokens.add_token(tokens_file, "kiosk-1", ["inquire"])
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[node]\nid = "dam-1"\ngovernorate = "DAM"\ndata_dir = "{data}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\nshutdown_timeout_s = 5.0\n'
        f'[auth]\ntokens_file = "{tokens_file}"\n[centre]\nurl = ""\n'
        '[storage]\nmin_free_mb = 0\n[ups]\nsource = "none"\n'
    )
    # The mirror seeded before the start, with the node's own migrations.
    data.mkdir()
    with closing(sqlite3.connect(data / DB_NAME, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)
        conn.execute("BEGIN")
        mirror.apply_changes(conn, [make_bill(A), make_bill(B)], 1, now=0.0)
        conn.execute("COMMIT")
    node = Proc(edge("serve", "--config", str(config)), tmp_path / "node.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", node)
        assert read(f"{url}/v1/accounts/{A}/bills", counter) == 200
        assert read(f"{url}/v1/accounts/{B}/bills", counter) == 200
        assert read(f"{url}/v1/bills/DAM-2026-05-{A}", kiosk) == 200
        # While the node serves: the rows appear within a flush, read through mode=ro.
        rows = wait_until(
            lambda: len(got := audit_csv(config, "--since", "2000-01-01")) == 3 and got,
            what=lambda: f"three audit rows; node log:\n{node.tail()}",
        )
        assert [(r["token"], r["action"], r["object"], r["status"]) for r in rows] == [
            ("counter-1", "account.read", A, "200"),
            ("counter-1", "account.read", B, "200"),
            ("kiosk-1", "bill.read", f"DAM-2026-05-{A}", "200"),
        ]
        assert {r["address"] for r in rows} == {"127.0.0.1"}
        assert all(r["at"].endswith("Z") for r in rows)
        assert [r["object"] for r in audit_csv(config, "--since", "2000-01-01", "--account", A)
                ] == [A, f"DAM-2026-05-{A}"]  # fmt: skip
        assert [r["object"] for r in audit_csv(config, "--since", "2000-01-01", "--token",
                                               "kiosk-1")] == [f"DAM-2026-05-{A}"]  # fmt: skip
    finally:
        assert node.stop() == 0, node.tail()
    # An old row (stamped 2026-01-15 10:00 UTC, 13:00 in Damascus) for the time filters.
    with closing(sqlite3.connect(data / DB_NAME, isolation_level=None)) as conn:
        conn.execute(
            "INSERT INTO audit_log (at, token, address, action, object, account, status)"
            " VALUES (1768471200.0, 'counter-1', '10.0.0.7', 'account.read', ?, ?, 404)",
            (A, A),
        )
    old = audit_csv(config, "--since", "2026-01-15", "--until", "2026-01-15")
    assert [(r["address"], r["at"], r["status"]) for r in old] == [
        ("10.0.0.7", "2026-01-15T10:00:00.000Z", "404")
    ]
    assert audit_csv(config, "--since", "2026-01-16", "--until", "2026-01-31") == []
    assert len(audit_csv(config, "--since", "2026-01-15T09:59:59Z", "--account", A)) == 3


def test_edge_audit_refuses_a_bad_filter_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "node"}"\n')
    for bad in (["--since", "last week"], ["--since", "2026-01-01", "--account", "12ab"]):
        out = subprocess.run(edge("audit", "--config", str(config), *bad), capture_output=True,
                             env=env(), timeout=60, check=False)  # fmt: skip
        assert out.returncode == 2 and b"configuration error" in out.stderr
    missing = subprocess.run(edge("audit", "--config", str(config), "--since", "2026-01-01"),
                             capture_output=True, env=env(), timeout=60, check=False)  # fmt: skip
    assert missing.returncode == 1 and b"no database" in missing.stderr
