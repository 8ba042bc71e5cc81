"""Deployment: the units pass systemd-analyze, the scripts shellcheck, and the offline bundle
installs into a prefix with no index, runs, and upgrades in place keeping config and data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import free_port, make_bill, unavailable, wait_until

from edge import mirror

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = ["edge.service", "edge-centre.service", "edge-backup.service", "edge-backup.timer"]
VERSION = "0.1.0"
# Any attempt to reach a package index during the install fails fast.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # fmt: skip

pytestmark = pytest.mark.slow


def verify(*units: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is absent (apt-get install systemd)")
    done = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True,
                          cwd=units[0].parent, check=False)  # fmt: skip
    # Unknown or misspelt keys are only warnings to systemd: any output is a failure here.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    stub = tmp_path / "opt" / "edge" / "bin" / "edge"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/edge/bin/edge", str(stub)))
    verify(*(tmp_path / unit for unit in UNITS))
    node = (DEPLOY / "systemd" / "edge.service").read_text()
    wanted = ["Type=notify", "WatchdogSec=60", "Restart=always", "TimeoutStopSec=60",
              "After=network-online.target nut-server.service", "ProtectSystem=strict",
              "ReadWritePaths=/var/lib/edge", "User=edge", "CapabilityBoundingSet=\n"]  # fmt: skip
    assert [line for line in wanted if line not in node] == []


def test_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        unavailable("shellcheck is absent (apt-get install shellcheck)")
    scripts = [DEPLOY / "build-bundle.sh", DEPLOY / "install.sh"]
    done = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout


@dataclass
class Installed:
    archive: Path
    prefix: Path

    @property
    def edge(self) -> Path:
        return self.prefix / "opt" / "edge" / "bin" / "edge"

    @property
    def config(self) -> Path:
        return self.prefix / "etc" / "edge" / "edge.toml"

    def install(self) -> str:
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | NO_NETWORK
        done = subprocess.run(
            ["bash", str(DEPLOY / "install.sh"), "--prefix", str(self.prefix),
             "--python", sys.executable, str(self.archive)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundle per session: building wheels is the slow part (uses the configured index)."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        ["bash", str(DEPLOY / "build-bundle.sh"), "--out", str(out), "--python", sys.executable],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    archive = out / f"edge-bundle-{VERSION}.tar.gz"
    assert archive.is_file()
    return archive


class Notify:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="edge-n-", dir="/tmp")  # AF_UNIX paths are short
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.fields: list[str] = []

    def wait_for(self, field: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if field not in self.fields:
                with suppress(TimeoutError):  # recv waits up to 0.2 s
                    self.fields += self.sock.recv(4096).decode().split("\n")
            return field in self.fields

        wait_until(seen, timeout, lambda: f"{field} (got {self.fields})", every=0)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir)


def get(url: str, token: str = "") -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    notify: Notify

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0
        self.notify.wait_for("STOPPING=1", timeout=5)
        self.notify.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(installed: Installed) -> Served:
        notify = Notify()
        port = int(next(line.split("=")[1] for line in installed.config.read_text().splitlines()
                        if line.startswith("port =") and "3493" not in line))  # fmt: skip
        log = (tmp_path / "node.log").open("ab")
        with log:
            proc = subprocess.Popen(  # stopped by PID below
                [str(installed.edge), "serve", "--config", str(installed.config)],
                stdout=log, stderr=subprocess.STDOUT,
                env=os.environ | {"NOTIFY_SOCKET": notify.path, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        served = Served(proc, f"http://127.0.0.1:{port}", notify)
        started.append(served)
        notify.wait_for("READY=1")  # sent only once the port answers
        return served

    yield start
    for served in started:  # a failed test leaves its node running and its socket open
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        if served.notify.sock.fileno() != -1:
            served.notify.close()


def test_offline_install_runs_and_upgrades_in_place(
    bundle: Path, tmp_path: Path, serve: object
) -> None:
    started = time.monotonic()
    site = Installed(bundle, tmp_path / "root")
    out = site.install()
    assert "generated" in out and "wrote" in out
    etc = site.prefix / "etc" / "edge"
    assert (etc / "centre.secret").stat().st_mode & 0o777 == 0o600
    assert (etc / "tokens.toml").stat().st_mode & 0o777 == 0o600
    units = site.prefix / "etc" / "systemd" / "system"
    verify(*(units / u for u in ("edge.service", "edge-backup.service", "edge-backup.timer")))

    # The administrator's edits: a free port, no centre, no UPS, and a marker.
    port = free_port()
    text = site.config.read_text()
    for old, new in [('host = "0.0.0.0"', 'host = "127.0.0.1"'), ("port = 8080", f"port = {port}"),
                     ('url = "http://127.0.0.1:9090"', 'url = ""'),
                     ('source = "nut"', 'source = "none"'),
                     # The bundle carries uvloop (the [fast] extra): serve on it.
                     ('loop = "asyncio"', 'loop = "uvloop"')]:  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    site.config.write_text(text + "# marker: edited by the administrator\n")
    token = subprocess.run([str(site.edge), "token", "add", "--config", str(site.config),
                            "--name", "counter-1"], capture_output=True, text=True,
                           check=True).stdout.split()[-1]  # fmt: skip
    secret = (etc / "centre.secret").read_text()

    node = serve(site)  # type: ignore[operator]
    # No centre and no bills yet: up, but not ready until a mirror is loaded.
    assert get(f"{node.url}/readyz") == (503, {"status": "bootstrapping",
                                               "progress": {"bills": 0, "of": None}})  # fmt: skip
    assert "on the uvloop event loop" in (tmp_path / "node.log").read_text()
    db = site.prefix / "var" / "lib" / "edge" / "edge.db"
    with closing(sqlite3.connect(db, timeout=10, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        mirror.apply_changes(conn, [make_bill("0100234567")], 1)
        conn.execute("COMMIT")
    # Another process's commit: the node's held read snapshot sees it within 100 ms.
    deadline = time.monotonic() + 10
    while get(f"{node.url}/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert get(f"{node.url}/readyz")[0] == 200
    body = json.dumps({"bill_id": "DAM-2026-05-0100234567", "amount": 5000, "method": "cash",
                       "cashier": "c1"}).encode()  # fmt: skip
    request = urllib.request.Request(
        f"{node.url}/v1/payments", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "first",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201
        payment = json.load(resp)["payment_id"]
    node.stop()

    out = site.install()  # the upgrade, over the running installation's files
    assert "kept" in out and "generated" not in out
    assert site.config.read_text().endswith("# marker: edited by the administrator\n")
    assert (etc / "centre.secret").read_text() == secret

    node = serve(site)  # type: ignore[operator]
    status, doc = get(f"{node.url}/v1/payments/{payment}", token)
    assert status == 200 and doc["amount"] == 5000
    node.stop()
    assert time.monotonic() - started < 120
