"""Client tokens: only hashes are stored, scopes are checked, the file is re-read on change."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge import auth
from edge.errors import ConfigError


def test_add_token_stores_only_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = auth.add_token(path, "counter-3", ["inquire", "pay"])
    text = path.read_text()
    assert token not in text
    assert auth.hash_token(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    clients = auth.load_tokens(path)
    assert clients[auth.hash_token(token)] == auth.Client(
        "counter-3", frozenset({"inquire", "pay"})
    )


def test_identify_and_unknown(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = auth.add_token(path, "kiosk", ["inquire"])
    tokens = auth.Tokens(path)
    tokens.load()
    assert tokens.identify(token) == auth.Client("kiosk", frozenset({"inquire"}))
    assert tokens.identify(token + "x") is None
    assert tokens.identify("") is None


def test_new_token_is_picked_up_without_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.toml"
    auth.add_token(path, "a", ["inquire"])
    tokens = auth.Tokens(path)
    tokens.load()
    second = auth.add_token(path, "b", ["pay"])
    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    monkeypatch.setattr(auth, "_RECHECK_S", 0.0)
    assert tokens.identify(second) == auth.Client("b", frozenset({"pay"}))


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("", ["pay"]), ("has space", ["pay"]), ("ok", []), ("ok", ["root"]), ("ok", ["pay", "sudo"])],
)
def test_bad_names_and_scopes_are_refused(tmp_path: Path, name: str, scopes: list[str]) -> None:
    with pytest.raises(ConfigError):
        auth.add_token(tmp_path / "t.toml", name, scopes)
    assert not (tmp_path / "t.toml").exists()


def test_duplicate_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    auth.add_token(path, "c1", ["pay"])
    with pytest.raises(ConfigError, match="exists"):
        auth.add_token(path, "c1", ["pay"])


def test_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[tokens.x]\nhash = "plain-token"\nscopes = ["pay"]\n')
    with pytest.raises(ConfigError, match="hash"):
        auth.load_tokens(path)
