"""Client tokens: only hashes are stored, scopes are checked, the file is re-read on change."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge import tokens
from edge.errors import ConfigError


def test_add_token_stores_only_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = tokens.add_token(path, "counter-3", ["inquire", "pay"])
    text = path.read_text()
    assert token not in text
    assert tokens.hash_token(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    clients = tokens.load_tokens(path)
    assert clients[tokens.hash_token(token)] == tokens.Client(
        "counter-3", frozenset({"inquire", "pay"})
    )


def test_identify_and_unknown(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = tokens.add_token(path, "kiosk", ["inquire"])
    store = tokens.Tokens(path)
    store.load()
    assert store.identify(token) == tokens.Client("kiosk", frozenset({"inquire"}))
    assert store.identify(token + "x") is None
    assert store.identify("") is None


def test_new_token_is_picked_up_without_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.toml"
    tokens.add_token(path, "a", ["inquire"])
    store = tokens.Tokens(path)
    store.load()
    second = tokens.add_token(path, "b", ["pay"])
    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    monkeypatch.setattr(tokens, "_RECHECK_S", 0.0)
    assert store.identify(second) == tokens.Client("b", frozenset({"pay"}))


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("", ["pay"]), ("has space", ["pay"]), ("ok", []), ("ok", ["root"]), ("ok", ["pay", "sudo"])],
)
def test_bad_names_and_scopes_are_refused(tmp_path: Path, name: str, scopes: list[str]) -> None:
    with pytest.raises(ConfigError):
        tokens.add_token(tmp_path / "t.toml", name, scopes)
    assert not (tmp_path / "t.toml").exists()


def test_duplicate_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    tokens.add_token(path, "c1", ["pay"])
    with pytest.raises(ConfigError, match="exists"):
        tokens.add_token(path, "c1", ["pay"])


def test_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[tokens.x]\nhash = "plain-token"\nscopes = ["pay"]\n')
    with pytest.raises(ConfigError, match="hash"):
        tokens.load_tokens(path)
