"""`edge check-config` finds exactly what `edge serve` refuses to start with (real processes):
for each broken configuration both exit 2 listing the same errors, all of them; for a good
one check-config says valid and serve really serves. The centre's pair likewise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from procs import Site, edge, env, wait_http

pytestmark = pytest.mark.slow


def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edge(*args), env=env(**extra_env), capture_output=True, text=True, timeout=60
    )


def errors(stderr: str, prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in stderr.splitlines() if line.startswith(prefix)]


def both_refuse(config: Path, **extra_env: str) -> list[str]:
    """check-config's errors, after asserting serve refuses with the very same ones."""
    checked = run("check-config", "--config", str(config), **extra_env)
    assert checked.returncode == 2, checked.stderr
    found = errors(checked.stderr, f"{config}: error: ")
    assert f"{config}: {len(found)} errors: edge serve would refuse" in checked.stderr
    served = run("serve", "--config", str(config), **extra_env)
    assert served.returncode == 2, served.stderr
    assert errors(served.stderr, "edge: configuration error: ") == found
    assert "serving" not in served.stderr  # refused before anything started
    return found


def edit(site: Site, old: str, new: str) -> None:
    text = site.node_config.read_text()
    assert old in text, (old, text)
    site.node_config.write_text(text.replace(old, new, 1))


def test_broken_node_configs_are_refused_alike_with_every_error(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    secret = site.base / "dam-1.secret"
    edit(site, "shutdown_timeout_s = 5.0\n", "shutdown_timeout_s = 5.0\nprot = 1\n")
    edit(site, f"port = {site.node_port}\n", f'port = "{site.node_port}"\n')
    secret.rename(site.base / "elsewhere.secret")
    found = both_refuse(site.node_config, EDGE_CENTRE_BATCHSIZE="5")
    assert len(found) == 4, found
    assert found[0].startswith("unknown key http.prot ([http] prot): did you mean [http] port?")
    assert found[1] == (
        "unknown variable EDGE_CENTRE_BATCHSIZE: did you mean EDGE_CENTRE_BATCH_SIZE?"
    )
    assert found[2].startswith(f'http.port must be an integer, not the string "{site.node_port}"')
    assert found[3].startswith("centre.secret_file is refused: cannot read the secret file")
    assert "edge secret new" in found[3]

    # Files: a secret others may read, half a TLS pair, a tokens file that does not parse.
    (site.base / "elsewhere.secret").rename(secret)
    edit(site, f'port = "{site.node_port}"\n', f"port = {site.node_port}\n")
    edit(site, "prot = 1\n", f'key_file = "{secret}"\n')
    secret.chmod(0o644)
    (site.base / "tokens.toml").write_text("[tokens]\nbroken = 1\n")
    found = both_refuse(site.node_config)
    assert [line.split(" ")[0] for line in found] == [
        "http.key_file", "centre.secret_file", "auth.tokens_file",
    ], found  # fmt: skip
    assert "is set without http.cert_file" in found[0] and "has mode 644" in found[1]


def test_a_good_node_config_is_valid_and_serves(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    checked = run("check-config", "--config", str(site.node_config))
    assert checked.returncode == 0, checked.stderr
    assert f"{site.node_config}: valid." in checked.stderr
    assert "http.port" in checked.stdout and str(site.node_port) in checked.stdout
    # The old spelling, a positional FILE, still works.
    assert run("check-config", str(site.node_config)).returncode == 0
    try:
        site.start_node()  # serve really starts: /healthz answers (the centre may be down)
        assert site.node.alive()
        assert site.node.stop() == 0
    finally:
        site.shutdown()


def test_the_centre_checks_what_it_serves_with(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    good = run("centre", "check-config", "--config", str(site.centre_config))
    assert good.returncode == 0 and "valid: 1 nodes" in good.stderr, good.stderr
    text = site.centre_config.read_text()
    site.centre_config.write_text(
        text.replace(f"port = {site.centre_port}", f'port = "{site.centre_port}"\nhots = "x"')
        .replace('secret_file = "', 'secret_file = "missing-')
    )  # fmt: skip
    prefix = "edge centre: configuration error: "
    checked = run("centre", "check-config", "--config", str(site.centre_config))
    served = run("centre", "serve", "--config", str(site.centre_config))
    assert checked.returncode == served.returncode == 2
    found = errors(checked.stderr, prefix)
    assert errors(served.stderr, prefix) == found
    assert len(found) == 3, found
    assert found[0] == "unknown key hots in [centre]: did you mean host?"
    assert found[1].startswith('centre.port must be an integer in 0-65535, not the string "')
    assert found[2].startswith("nodes.dam-1.secret_file: cannot read the secret file")
    site.centre_config.write_text(text)
    try:
        site.start_centre()
        wait_http(f"http://127.0.0.1:{site.centre_port}/healthz", site.centre)
    finally:
        site.shutdown()
