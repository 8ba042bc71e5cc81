"""`edge serve` as a real process on its own TLS port (client certificates required), reached by
`edge status`, `edge replay` and `edge doctor` over https; and the same node in plain http on
every address, which warns once at start and in doctor.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from procs import Site, edge, env, wait_http
from tlscerts import Authority

from edge import tokens

pytestmark = pytest.mark.slow


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edge(*args), env=env(), capture_output=True, text=True, timeout=60, input=stdin
    )


def http_section(site: Site, extra: str, host: str = "127.0.0.1") -> None:
    text = site.node_config.read_text()
    old = '[http]\nhost = "127.0.0.1"\n'
    assert old in text
    site.node_config.write_text(text.replace(old, f'[http]\nhost = "{host}"\n{extra}', 1))


def test_a_node_served_over_tls_with_client_certificates_answers_its_own_tools(
    tmp_path: Path,
) -> None:
    base = tmp_path
    ca = Authority.make(base / "pki")
    # Its local tools present the node's own pair: issued for serverAuth and clientAuth.
    node, counter = ca.issue("edge-node", also_client=True), ca.issue("counter-1", client=True)
    site = Site(base / "site")
    http_section(site, f'cert_file = "{node.cert}"\nkey_file = "{node.key}"\n'
                       f'client_ca_file = "{ca.cert}"\n')  # fmt: skip
    admin = tokens.add_token(base / "site" / "tokens.toml", "ops", ["admin"])
    https = f"https://127.0.0.1:{site.node_port}"
    counter_context = ssl.create_default_context(cafile=str(ca.cert))
    counter_context.load_cert_chain(str(counter.cert), str(counter.key))
    try:
        site.start_centre()  # ready means bootstrapped: the node needs its centre's snapshot
        site.node.start()
        wait_http(f"{https}/readyz", site.node, context=counter_context)
        shown = run("status", "--config", str(site.node_config))
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["http"] == {
            "tls": True, "client_certificates": True, "insecure": False
        }  # fmt: skip
        replay = run("replay", "--config", str(site.node_config), "--token-file", "-", stdin=admin)
        assert replay.returncode == 0 and "replay triggered" in replay.stdout, replay.stderr
        doctor = run("doctor", "--config", str(site.node_config)).stdout
        assert "OK    http tls" in doctor and "client certificates from" in doctor, doctor
        node_line = [line for line in doctor.splitlines() if f"{https}/readyz" in line]
        assert node_line[0].startswith("OK ") and "answers 200" in node_line[0], doctor
        # A counter with no certificate is refused in the handshake, before any HTTP.
        bare = ssl.create_default_context(cafile=str(ca.cert))
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{https}/healthz", timeout=5, context=bare).close()
        log = site.node.tail()
        assert "serving on https://127.0.0.1:" in log and "client certificates required" in log
        assert "plain http" not in log
    finally:
        site.shutdown()


def test_plain_http_on_every_address_warns_once_at_start_and_in_doctor(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site")
    http_section(site, "", host="0.0.0.0")  # reached here through 127.0.0.1 only
    try:
        site.node.start()
        wait_http(f"{site.url}/healthz", site.node)
        warned = [line for line in site.node.tail().splitlines() if "serving plain http" in line]
        assert len(warned) == 1 and " WARNING edge.serving: " in warned[0], site.node.tail()
        assert "0.0.0.0" in warned[0] and "http.cert_file and http.key_file" in warned[0]
        shown = run("status", "--config", str(site.node_config))
        assert json.loads(shown.stdout)["http"] == {
            "tls": False, "client_certificates": False, "insecure": True
        }  # fmt: skip
        doctor = run("doctor", "--config", str(site.node_config)).stdout
        assert "WARN  http tls" in doctor and "unencrypted" in doctor, doctor
        checked = run("check-config", str(site.node_config))
        assert checked.returncode == 0 and "http.host 0.0.0.0 serves plain http" in checked.stderr
    finally:
        site.shutdown()
