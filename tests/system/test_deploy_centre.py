"""The national centre's deployment files: the instance unit and its target pass
systemd-analyze, and the shipped HAProxy configuration passes `haproxy -c` with its files in
place. (Its behaviour in front of real processes: test_centre_haproxy.py.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import unavailable
from tlscerts import Authority

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HAPROXY_CFG = DEPLOY / "haproxy" / "edge-centre.cfg"
UNITS = ["edge-centre@.service", "edge-centre.target"]
# The shipped file's paths, and what a test puts there instead.
CA_FILE, CHECK_CRT = "/etc/haproxy/edge-link-ca.pem", "/etc/haproxy/edge-centre-check.pem"

pytestmark = pytest.mark.slow


def haproxy() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        unavailable("haproxy is absent (apt-get install haproxy)")
    return found


def configured(tmp_path: Path, text: str, ca: Authority) -> str:
    """`text` with its CA and checker files made under tmp_path (every path must be there)."""
    check = ca.issue("haproxy-check", client=True)
    bundle = tmp_path / "check.pem"
    bundle.write_text(check.cert.read_text() + check.key.read_text())
    bundle.chmod(0o600)
    for old, new in [(CA_FILE, str(ca.cert)), (CHECK_CRT, str(bundle))]:
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_centre_instance_unit_and_target_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is absent (apt-get install systemd)")
    stub = tmp_path / "bin" / "edge"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/edge/bin/edge", str(stub)))
    done = subprocess.run([analyze, "verify", *(str(tmp_path / u) for u in UNITS)],
                          capture_output=True, text=True, cwd=tmp_path, check=False)  # fmt: skip
    # Unknown or misspelt keys are only warnings to systemd: any output is a failure here.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    unit = (DEPLOY / "systemd" / "edge-centre@.service").read_text()
    wanted = ["--config /etc/edge-centre/centre.toml --port 909%i\n", "User=edge-centre\n",
              "Environment=PGPASSFILE=/etc/edge-centre/pgpass\n", "Restart=always\n",
              "PartOf=edge-centre.target\n", "WantedBy=edge-centre.target\n",
              "ProtectSystem=strict\n", "NoNewPrivileges=yes\n", "CapabilityBoundingSet=\n",
              "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n"]  # fmt: skip
    assert [line for line in wanted if line not in unit] == []


def test_the_shipped_haproxy_configuration_passes_haproxy_check(tmp_path: Path) -> None:
    binary = haproxy()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configured(tmp_path, HAPROXY_CFG.read_text(), Authority.make(tmp_path / "pki")))
    done = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # and it is the configuration the guide describes: passthrough, checks, two processes
    text = HAPROXY_CFG.read_text()
    for line in ["mode tcp", "balance leastconn", "http-check send meth GET uri /healthz",
                 "server centre1 127.0.0.1:9091", "server centre2 127.0.0.1:9092",
                 "on-marked-down shutdown-sessions", "bind :9443"]:  # fmt: skip
        assert line in text, line
    assert "ssl crt" not in text.split("frontend", 1)[1]  # no TLS termination at the proxy
    broken = cfg.read_text().replace("balance leastconn", "balance fastest")
    cfg.write_text(broken)
    refused = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True,
                             check=False)  # fmt: skip
    assert refused.returncode != 0  # the check is a real one
