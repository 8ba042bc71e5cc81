"""The deployment of deploy/README.md's ministry section, for real: two `edge centre serve
--port` processes on one PostgreSQL database, TLS with client certificates, behind HAProxy
running the shipped deploy/haproxy/edge-centre.cfg (TLS passthrough, /healthz checks), and a
node whose `centre.url` is the proxy. The process carrying the node's connection is killed
with SIGKILL: HAProxy marks it down, the node's next payments reach the other one, each
entry is recorded once and the chain stays whole.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from helpers import free_port, wait_until
from pgcluster import Cluster
from procs import Proc, Site, edge, env, wait_http
from test_deploy_centre import CA_FILE, CHECK_CRT, HAPROXY_CFG, configured, haproxy
from tlscerts import Authority

pytestmark = pytest.mark.slow


def stats(sock: Path) -> dict[str, dict[str, str]]:
    """HAProxy's `show stat` over its admin socket: server name -> its columns."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(sock))
        conn.sendall(b"show stat\n")
        text = b"".join(iter(lambda: conn.recv(65536), b"")).decode()
    header, *rows = [line for line in text.splitlines() if line]
    names = header.lstrip("# ").split(",")
    table = [dict(zip(names, row.split(","), strict=False)) for row in rows]
    return {r["svname"]: r for r in table if r["pxname"] == "centre_processes"}


def pay(site: Site, bill: str, key: str) -> None:
    request = urllib.request.Request(
        f"{site.url}/v1/payments",
        data=json.dumps({"bill_id": bill, "amount": 100, "method": "cash",
                         "cashier": "huda"}).encode(),
        headers={"Authorization": f"Bearer {site.token}", "Idempotency-Key": key,
                 "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"payment {key}: {exc.code} {exc.read()!r}") from exc


def test_two_centre_processes_behind_haproxy_survive_one_killed(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    binary = haproxy()
    ca = Authority.make(tmp_path / "pki")
    server, client = ca.issue("centre"), ca.issue("dam-1", client=True)
    database = pg_cluster.create_database()
    site = Site(tmp_path / "site", database=database)
    text = site.centre_config.read_text()
    old = f'database = "{database}"\n'
    assert old in text
    site.centre_config.write_text(text.replace(old, old + f'cert_file = "{server.cert}"\n'
        f'key_file = "{server.key}"\nclient_ca_file = "{ca.cert}"\n'))  # fmt: skip
    lb = free_port()
    ports = [free_port(), free_port()]
    cfg = configured(tmp_path, HAPROXY_CFG.read_text(), ca)
    admin = tmp_path / "haproxy.sock"
    for old, new in [
        ("bind :9443", f"bind 127.0.0.1:{lb}"),
        ("server centre1 127.0.0.1:9091", f"server centre1 127.0.0.1:{ports[0]}"),
        ("server centre2 127.0.0.1:9092", f"server centre2 127.0.0.1:{ports[1]}"),
        ("centre.example.sy", "localhost"),  # the name in the test certificate
        (
            "    chroot /var/lib/haproxy\n",
            f"    chroot /var/lib/haproxy\n    stats socket {admin}\n",
        ),
    ]:
        assert old in cfg, old
        cfg = cfg.replace(old, new)
    assert CA_FILE not in cfg and CHECK_CRT not in cfg
    (tmp_path / "haproxy.cfg").write_text(cfg)
    https = f"https://127.0.0.1:{lb}"
    site.node_config.write_text(
        site.node_config.read_text().replace(f'url = "http://127.0.0.1:{site.centre_port}"',
            f'url = "{https}"\nca_file = "{ca.cert}"\ncert_file = "{client.cert}"\n'
            f'key_file = "{client.key}"')
    )  # fmt: skip
    subprocess.run(edge("centre", "seed", "--config", str(site.centre_config), "--bills", "50",
                        "--seed", "7"), check=True, env=env(), capture_output=True)  # fmt: skip
    centres = [
        Proc(
            edge("centre", "serve", "--config", str(site.centre_config), "--port", str(port)),
            tmp_path / f"centre{n}.log",
        )
        for n, port in enumerate(ports, 1)
    ]
    with (tmp_path / "haproxy.log").open("wb") as out:
        proxy = subprocess.Popen([binary, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                 stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        for centre in centres:
            centre.start()
        # Both processes come up in HAProxy's eyes: its TLS checks with a client certificate pass.
        wait_until(lambda: [s["status"] for n, s in sorted(stats(admin).items())
                            if n.startswith("centre")] == ["UP", "UP"], 30,
                   lambda: f"both UP: {stats(admin)}\n{centres[0].tail()}", every=0.2,
                   ignore=(OSError, ValueError, KeyError))  # fmt: skip
        site.start_node()
        wait_http(f"{site.url}/healthz", site.node)

        def bills() -> list[str]:
            with closing(site.node_db()) as conn:
                query = "SELECT bill_id FROM bills WHERE amount - paid > 10000 ORDER BY bill_id"
                rows = conn.execute(query + " LIMIT 10").fetchall()
            return [r[0] for r in rows]

        wait_until(lambda: len(bills()) == 10, 30, lambda: site.node.tail(), every=0.2)
        bill_ids = bills()
        for i in range(5):
            pay(site, bill_ids[i], f"before-{i}")

        def recorded() -> list[dict[str, str]]:
            return site.ledger()

        wait_until(lambda: len(recorded()) == 5, 30, lambda: site.node.tail(), every=0.3)
        # The process holding the node's connection is killed.
        serving = [
            n for n, s in stats(admin).items() if n.startswith("centre") and int(s["stot"]) > 0
        ]
        assert serving, stats(admin)
        victim = centres[int(serving[0][-1]) - 1]
        victim.kill9()
        for i in range(5, 10):
            pay(site, bill_ids[i], f"after-{i}")
        wait_until(lambda: len(recorded()) == 10, 60, lambda: site.node.tail(), every=0.3)
        rows = recorded()
        assert sorted(int(r["seq"]) for r in rows) == list(range(1, 11))
        assert len({r["id"] for r in rows}) == 10
        assert {r["verdict"] for r in rows} == {"applied"}
        wait_until(lambda: stats(admin)[serving[0]]["status"].startswith("DOWN"), 30,
                   lambda: f"DOWN: {stats(admin)}", every=0.2)  # fmt: skip
        with urllib.request.urlopen(f"{site.url}/v1/status", timeout=5) as resp:
            status = json.load(resp)
        assert status["outbox"]["pending"] == 0 and status["link"]["state"] == "up", status
        live = next(c for c in centres if c is not victim)
        assert live.alive() and "Traceback" not in live.tail()
    finally:
        site.shutdown()
        for centre in centres:
            centre.kill9()
        proxy.kill()
        proxy.wait(10)
        pg_cluster.drop_database(database)
