"""`edge demo` as a subprocess: it prints a URL and a token, takes a payment, syncs it, stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def call(url: str, token: str, body: dict[str, Any] | None = None, key: str = "") -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers |= {"Content-Type": "application/json", "Idempotency-Key": key}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def centre_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "centre", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)  # fmt: skip


def test_edge_demo_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "demo", "--port", "0", "--data", str(tmp_path / "demo"), "--bills", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "edge demo exited early:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        out = "".join(lines)
        url = re.search(r"Dashboard:\s+(http://\S+)/", out)
        token = re.search(r"Cashier token:\s+(\S+)", out)
        account = re.search(r"Sample account: (\d+)", out)
        assert url and token and account, out
        base, tok = url.group(1), token.group(1)

        doc = call(f"{base}/v1/accounts/{account.group(1)}/bills", tok)
        bill = next(b for b in doc["bills"] if b["due"] > 0)
        paid = call(f"{base}/v1/payments", tok, {"bill_id": bill["bill_id"], "amount": 100,
                                                 "method": "cash", "cashier": "demo"}, key="demo-1")  # fmt: skip
        assert paid["state"] == "pending_sync"
        url = f"{base}/v1/payments/{paid['payment_id']}"
        wait_until(lambda: call(url, tok)["state"] == "synced", 20, "the payment synced", every=0.2)

        # The centre's config is written beside the node's: `edge centre` works against it.
        centre = re.search(r"Centre config: (\S+)", out)
        assert centre and Path(centre.group(1)) == tmp_path / "demo" / "centre.toml", out
        ledger = centre_cli("ledger", "--config", centre.group(1))
        assert paid["payment_id"] in ledger.stdout, ledger.stderr
        online = centre_cli("pay", "--config", centre.group(1), bill["bill_id"], "200")
        assert online.returncode == 0 and bill["bill_id"] in online.stdout, online.stderr
        # The node's mirror follows the online payment within a pull (5 s in the demo).
        wait_until(lambda: next(b for b in call(f"{base}/v1/accounts/{account.group(1)}/bills",
                                                tok)["bills"] if b["bill_id"] == bill["bill_id"])
                   ["paid"] == bill["paid"] + 100 + 200, 30, "the online payment in the mirror",
                   every=0.5)  # fmt: skip
        credits = centre_cli("credits", "--config", centre.group(1))
        assert credits.returncode == 0, credits.stderr
        # The non-TTY output has no bars, and the seed and the bootstrap said how far they got.
        assert "\r" not in out and "seed DAM: 300/300 bills (100%" in out, out
        assert "mirror bootstrap: 300/300 bills (100%" in out, out
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "edge demo stopped cleanly" in rest
