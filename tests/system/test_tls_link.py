"""`edge centre serve` and `edge serve` as real processes over TLS with client certificates,
configured from TOML as deploy/README.md says: a payment goes through, the node does not warn.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from procs import Proc, Site, wait_http
from tlscerts import Authority

pytestmark = pytest.mark.slow


def wait_https(url: str, context: ssl.SSLContext, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.alive(), f"process died before {url} answered:\n{proc.tail()}"
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout} s:\n{proc.tail()}")


def test_node_and_centre_processes_over_tls_with_client_certificates(tmp_path: Path) -> None:
    ca = Authority.make(tmp_path / "pki")
    centre, node = ca.issue("centre"), ca.issue("dam-1", client=True)
    site = Site(tmp_path / "site")
    plain = site.centre_config.read_text()
    assert "\n[nodes." in plain  # the [centre] table ends where the first node's begins
    text = plain.replace(
        "\n[nodes.",
        f'\ncert_file = "{centre.cert}"\nkey_file = "{centre.key}"\n'
        f'client_ca_file = "{ca.cert}"\n[nodes.',
        1,
    )
    site.centre_config.write_text(text)
    http = f"http://127.0.0.1:{site.centre_port}"
    https = f"https://127.0.0.1:{site.centre_port}"
    site.node_config.write_text(
        site.node_config.read_text().replace(f'url = "{http}"', f'url = "{https}"\n'
            f'ca_file = "{ca.cert}"\ncert_file = "{node.cert}"\nkey_file = "{node.key}"')
    )  # fmt: skip
    site.seed(50)
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.load_cert_chain(str(node.cert), str(node.key))
    try:
        site.centre.start()
        wait_https(f"{https}/healthz", context, site.centre)
        site.start_node()
        wait_http(f"{site.url}/healthz", site.node)
        bill = site.bills(1)[0]
        deadline = time.monotonic() + 30
        while True:  # the mirror comes over TLS first
            request = urllib.request.Request(
                f"{site.url}/v1/payments",
                data=json.dumps({"bill_id": bill, "amount": 1_000, "method": "cash",
                                 "cashier": "huda"}).encode(),
                headers={"Authorization": f"Bearer {site.token}", "Idempotency-Key": "k1",
                         "Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    assert resp.status == 201
                    break
            except urllib.error.HTTPError as exc:
                assert exc.code == 404 and time.monotonic() < deadline, exc.read()
                time.sleep(0.2)
        while [row["verdict"] for row in site.ledger()] != ["applied"]:
            assert time.monotonic() < deadline, site.node.tail()
            time.sleep(0.2)
        with urllib.request.urlopen(f"{site.url}/v1/status", timeout=5) as resp:
            link = json.load(resp)["link"]
        assert link["state"] == "up" and link["insecure"] is False
        assert "plain http://" not in site.node.tail()
        assert "https (client certificates required)" in site.centre.tail()
        # Without its certificate anything else is refused in the handshake.
        bare = ssl.create_default_context(cafile=str(ca.cert))
        with pytest.raises((urllib.error.URLError, OSError)):
            urllib.request.urlopen(f"{https}/healthz", timeout=5, context=bare).close()
    finally:
        site.shutdown()
