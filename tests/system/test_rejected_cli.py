"""`edge rejected list|resolve` as subprocesses against a running node and centre.

The centre holds a per-payment ceiling for the node (`max_payment`), so a payment above it
is rejected; the operator lists it, refunds one and retargets another through the CLI, and
the centre's ledger (`edge centre ledger`) shows what was done.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from helpers import wait_until
from procs import Site, edge, env

from edge import tokens

CEILING = 5_000


def call(site: Site, path: str, body: dict[str, Any] | None = None, key: str = "") -> Any:
    headers = {"Authorization": f"Bearer {site.token}"}
    data = None
    if body is not None:
        headers |= {"Content-Type": "application/json", "Idempotency-Key": key}
        data = json.dumps(body).encode()
    req = urllib.request.Request(f"{site.url}{path}", data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def rejected(site: Site, token_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edge("rejected", *args, "--config", str(site.node_config), "--token-file", str(token_file)),
        env=env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_list_refund_and_retarget_from_the_command_line(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    with site.centre_config.open("a") as fh:
        fh.write(f"max_payment = {CEILING}\n")  # into [nodes.dam-1]
    admin = tmp_path / "admin.token"
    admin.write_text(tokens.add_token(site.base / "tokens.toml", "ops", ["admin"]) + "\n")
    site.seed(50)
    try:
        site.start_centre()
        site.start_node()
        wait_until(lambda: call(site, "/v1/status")["mirror"]["cursor"] is not None, 30,
                   "the node's mirror to bootstrap")  # fmt: skip
        bills = site.bills(3)
        taken = [
            call(site, "/v1/payments", {"bill_id": bills[i], "amount": CEILING + 1 + i,
                                        "method": "cash", "cashier": "هدى"}, key=f"k{i}")
            for i in range(2)
        ]  # fmt: skip
        wait_until(lambda: call(site, "/v1/status")["outbox"]["rejected"] == 2, 30,
                   "the centre's rejections")  # fmt: skip

        listed = rejected(site, admin, "list")
        assert listed.returncode == 0, listed.stderr
        assert all(t["payment_id"] in listed.stdout for t in taken)
        assert "amount_implausible" in listed.stdout
        assert listed.stdout.strip().endswith("2 rejected, 2 unresolved")

        refund = rejected(site, admin, "resolve", taken[0]["payment_id"], "--action", "refund",
                          "--reason", "أعيد المبلغ للمشترك")  # fmt: skip
        assert refund.returncode == 0, refund.stderr
        assert f"{taken[0]['payment_id']}: refunded" in refund.stdout
        again = rejected(site, admin, "resolve", taken[0]["payment_id"], "--action", "refund",
                         "--reason", "أعيد المبلغ للمشترك")  # fmt: skip
        assert again.returncode == 0 and again.stdout == refund.stdout  # the same answer
        other = rejected(site, admin, "resolve", taken[0]["payment_id"], "--action", "retarget",
                         "--reason", "x", "--bill", bills[2])  # fmt: skip
        assert other.returncode == 1 and "already_resolved" in other.stderr
        missing = rejected(site, admin, "resolve", taken[1]["payment_id"], "--action",
                           "retarget", "--reason", "x")  # fmt: skip
        assert missing.returncode == 2

        moved = rejected(site, admin, "resolve", taken[1]["payment_id"], "--action", "retarget",
                         "--reason", "الفاتورة الصحيحة", "--bill", bills[2])  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        assert f"{taken[1]['payment_id']}: retargeted" in moved.stdout
        assert f"on {bills[2]}" in moved.stdout

        def settled() -> bool:
            status = call(site, "/v1/status")["outbox"]
            return bool(status["pending"] == 0)

        wait_until(settled, 30, "the resolutions' delivery")
        ledger = site.ledger()
        kinds = [(row["bill_id"], row["verdict"]) for row in ledger]
        # The retarget is a payment of the same money: above the ceiling, rejected again, and
        # listed again for the operator; the chain keeps all four entries.
        assert kinds == [(bills[0], "rejected"), (bills[1], "rejected"),
                         (bills[0], "refunded"), (bills[2], "rejected")]  # fmt: skip
        final = json.loads(rejected(site, admin, "list", "--format", "json").stdout)
        assert (final["total"], final["unresolved"]) == (3, 1)
        assert {e["payment_id"]: (e["resolution"] or {}).get("action") for e in final["entries"]
                } == {taken[0]["payment_id"]: "refund", taken[1]["payment_id"]: "retarget",
                      final["entries"][0]["payment_id"]: None}  # fmt: skip
        assert final["entries"][0]["kind"] == "retarget"
    finally:
        site.shutdown()
