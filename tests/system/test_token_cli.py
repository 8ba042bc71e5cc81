"""`edge token add|list|revoke` and `edge replay` as real processes against a running node.

Tokens never travel in argv (`ps` shows it): `edge replay` reads a file, standard input or
EDGE_ADMIN_TOKEN, and refuses `--token`. `edge token list` shows each token's name, scopes,
state, creation, last use and expiry, and never a hash.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import wait_until
from procs import Site, edge, env

from edge import tokens


def run(*args: str, stdin: str | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edge(*args), input=stdin, capture_output=True, text=True, env=env(**extra_env), timeout=60
    )


def add(site: Site, name: str, *extra: str) -> str:
    done = run("token", "add", "--config", str(site.node_config), "--name", name, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def listing(site: Site) -> dict[str, list[str]]:
    done = run("token", "list", "--config", str(site.node_config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCOPES", "STATE", "CREATED", "LAST", "USED", "EXPIRES"]
    # Never a hash or a token: nothing that looks like one is printed.
    assert "sha256" not in done.stdout and "edge_" not in done.stdout
    for record in tokens.read_records(site.base / "tokens.toml"):
        assert record.digest.split(":")[1] not in done.stdout
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_token_list_shows_scopes_created_last_used_expiry_and_revocation(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    try:
        ops = add(site, "ops", "--scope", "admin", "--expires", "90d")
        add(site, "kiosk-7", "--scope", "inquire", "--expires", "12h")
        tokens.add_token(site.base / "tokens.toml", "old-1", ["pay"], expires_at=time.time() - 1)
        site.start_centre()
        site.start_node()
        # A token is "used" when it authenticates: the cashier inquires once.
        request = urllib.request.Request(
            f"{site.url}/v1/bills/DAM-2026-05-0000000000",
            headers={"Authorization": f"Bearer {site.token}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 404  # no such bill; the token was still used
        refused.value.close()
        rows = wait_until(
            lambda: (r := listing(site))["counter-1"][3] != "never" and r,
            timeout=10, what="counter-1's last use to show",
        )  # fmt: skip
        name_scopes = {name: cols[0] for name, cols in rows.items()}
        assert name_scopes == {
            "counter-1": "inquire,pay", "ops": "admin", "kiosk-7": "inquire", "old-1": "pay"
        }  # fmt: skip
        states = {name: cols[1] for name, cols in rows.items()}
        assert states == {"counter-1": "active", "ops": "active", "kiosk-7": "active",
                          "old-1": "expired"}  # fmt: skip
        assert all(cols[2].endswith("Z") for cols in rows.values())  # created
        assert rows["ops"][3] == rows["kiosk-7"][3] == "never"  # not used yet
        assert rows["counter-1"][4] == "never"  # no expiry
        assert rows["ops"][4] > rows["kiosk-7"][4] > rows["ops"][2]  # 90 d after 12 h after now
        assert ops  # printed once by `add`

        done = run("token", "revoke", "--config", str(site.node_config), "kiosk-7")
        assert done.returncode == 0, done.stderr
        assert listing(site)["kiosk-7"][1] == "revoked"
        done = run("token", "revoke", "--config", str(site.node_config), "nobody")
        assert done.returncode == 2 and "no token named" in done.stderr
    finally:
        site.shutdown()


def test_replay_reads_its_token_from_a_file_or_stdin_never_argv(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    try:
        admin = add(site, "ops", "--scope", "admin")
        site.start_centre()
        site.start_node()
        token_file = tmp_path / "admin.token"
        token_file.write_text(admin + "\n")
        token_file.chmod(0o600)
        config = str(site.node_config)

        done = run("replay", "--config", config, "--token-file", str(token_file))
        assert done.returncode == 0, done.stderr
        assert "replay triggered" in done.stdout

        # From standard input: while it waits for the token, its argv does not hold it.
        proc = subprocess.Popen(
            edge("replay", "--config", config, "--token-file", "-"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env(),
        )  # fmt: skip
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        wait_until(lambda: b"replay" in cmdline.read_bytes(), timeout=10)
        assert admin.encode() not in cmdline.read_bytes()
        out, err = proc.communicate(admin + "\n", timeout=60)
        assert proc.returncode == 0, err
        assert "replay triggered" in out

        done = run("replay", "--config", config, EDGE_ADMIN_TOKEN=admin)
        assert done.returncode == 0, done.stderr

        # --token is refused, with the reason, and nothing is sent.
        done = run("replay", "--config", config, "--token", admin)
        assert done.returncode == 2
        assert "--token is refused" in done.stderr and "ps" in done.stderr
        # A token without the admin scope is refused by the node (403), not by the CLI.
        done = run("replay", "--config", config, "--token-file", "-", stdin=site.token)
        assert done.returncode == 1 and "403" in done.stderr
    finally:
        site.shutdown()
