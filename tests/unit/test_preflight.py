"""edge.preflight: the files `edge serve` (and check-config, the same code) needs, checked
for existence, loading, mode and owner, every problem at once, each naming its key."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import unavailable
from tlscerts import Authority

from edge import config, preflight, tokens
from edge.errors import ConfigError

NOBODY = 65534  # a uid that is neither this process's nor root's


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def secret(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "centre.secret"
    path.write_text("0123456789abcdef" * 4 + "\n")
    path.chmod(mode)
    return path


def node_toml(tmp_path: Path, extra: str = "") -> str:
    return (
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n[auth]\ntokens_file = "{tmp_path / "t.toml"}"\n'
        f'[centre]\nsecret_file = "{tmp_path / "centre.secret"}"\n{extra}'
    )


def refused(path: Path) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        preflight.check(path, env={})
    return caught.value.problems


def test_a_good_configuration_passes_and_is_what_load_gives(tmp_path: Path) -> None:
    secret(tmp_path)
    path = write(tmp_path, node_toml(tmp_path))
    assert preflight.check(path, env={}) == config.load(path, env={})


def test_a_missing_secret_file_is_refused_with_how_to_make_one(tmp_path: Path) -> None:
    path = write(tmp_path, node_toml(tmp_path))
    assert config.load(path, env={}) is not None  # the values alone are fine...
    (line,) = refused(path)  # ...but serve cannot start without its key
    assert line.startswith("centre.secret_file is refused: cannot read the secret file")
    assert f"edge secret new {tmp_path / 'centre.secret'}" in line
    assert "EDGE_CENTRE_SECRET_FILE" in line


def test_no_centre_needs_no_secret(tmp_path: Path) -> None:
    path = write(tmp_path, node_toml(tmp_path, 'url = ""\n'))
    assert preflight.check(path, env={}).centre_url == ""


def test_a_secret_readable_by_others_or_not_ours_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("chown to another user needs root")
    key = secret(tmp_path, 0o640)
    path = write(tmp_path, node_toml(tmp_path))
    (line,) = refused(path)
    assert "has mode 640" in line and f"chmod 600 {key}" in line
    key.chmod(0o600)
    os.chown(key, NOBODY, NOBODY)
    (line,) = refused(path)
    assert f"owned by uid {NOBODY}" in line


def test_problems_in_values_and_files_come_together(tmp_path: Path) -> None:
    path = write(tmp_path, node_toml(tmp_path, "batch_size = 0\n"))
    found = refused(path)
    assert len(found) == 2
    assert found[0].startswith("centre.batch_size") and found[1].startswith("centre.secret_file")


def test_a_tokens_file_must_parse_and_be_ours(tmp_path: Path) -> None:
    secret(tmp_path)
    path = write(tmp_path, node_toml(tmp_path))
    tokens_file = tmp_path / "t.toml"
    tokens_file.write_text("[tokens]\nx = 1\n")
    (line,) = refused(path)
    assert line.startswith(f"auth.tokens_file {tokens_file} is not a valid tokens file")
    tokens_file.unlink()
    tokens.add_token(tokens_file, "counter-1", ["pay"])
    assert preflight.check(path, env={})
    if os.geteuid() == 0:
        os.chown(tokens_file, NOBODY, NOBODY)
        (line,) = refused(path)
        assert f"is owned by uid {NOBODY}" in line


def test_node_tls_files_must_load_and_the_key_be_private(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed")
    secret(tmp_path)
    ca = Authority.make(tmp_path / "ca")
    node, other = ca.issue("node"), ca.issue("other")
    http = f'[http]\ncert_file = "{node.cert}"\nkey_file = "{node.key}"\n'
    assert preflight.check(write(tmp_path, node_toml(tmp_path) + http), env={})
    node.key.chmod(0o644)
    (line,) = refused(tmp_path / "edge.toml")
    assert line.startswith("http.key_file is refused: the private key") and "mode 644" in line
    node.key.chmod(0o600)
    # A key of another certificate: the files exist, but serve could not load them.
    mixed = f'[http]\ncert_file = "{node.cert}"\nkey_file = "{other.key}"\n'
    (line,) = refused(write(tmp_path, node_toml(tmp_path) + mixed))
    assert line.startswith("http.cert_file/key_file/client_ca_file: cannot load the certificate")


def test_centre_tls_files_are_checked_for_an_https_centre(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed")
    secret(tmp_path)
    ca = Authority.make(tmp_path / "ca")
    client = ca.issue("dam-1", client=True)
    link = (
        f'url = "https://127.0.0.1:9"\nca_file = "{ca.cert}"\ncert_file = "{client.cert}"\n'
        f'key_file = "{client.key}"\n'
    )
    assert preflight.check(write(tmp_path, node_toml(tmp_path, link)), env={})
    client.key.chmod(0o604)
    missing = link.replace(str(ca.cert), str(tmp_path / "nope.pem"))
    found = refused(write(tmp_path, node_toml(tmp_path, missing)))
    assert found == (
        f"centre.ca_file {tmp_path / 'nope.pem'}: no such file ([centre] ca_file in the file,"
        " or EDGE_CENTRE_CA_FILE)",
    )
    found = refused(write(tmp_path, node_toml(tmp_path, link)))
    assert len(found) == 1 and found[0].startswith("centre.key_file is refused: the private key")


def test_the_ups_password_file_must_be_private(tmp_path: Path) -> None:
    secret(tmp_path)
    password = tmp_path / "ups.pass"
    ups = f'[ups]\nsource = "nut"\nusername = "mon"\npassword_file = "{password}"\n'
    path = write(tmp_path, node_toml(tmp_path) + ups)
    (line,) = refused(path)
    assert line.startswith(f"ups.password_file {password}: no such file")
    password.write_text("hunter2\n")
    password.chmod(0o644)
    (line,) = refused(path)
    assert line.startswith("ups.password_file is refused: the password file") and "644" in line
    password.chmod(0o600)
    assert preflight.check(path, env={}).ups_password_file == str(password)


def test_the_data_directory_must_be_a_directory_or_be_made_at_start(tmp_path: Path) -> None:
    secret(tmp_path)
    (tmp_path / "data").write_text("not a directory")
    (line,) = refused(write(tmp_path, node_toml(tmp_path)))
    assert line.startswith(f"node.data_dir {tmp_path / 'data'} is not a directory")
    (tmp_path / "data").unlink()
    assert preflight.check(tmp_path / "edge.toml", env={})  # serve creates it
