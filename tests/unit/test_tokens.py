"""Client tokens: only hashes are stored, scopes are checked, the file is re-read on change."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
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


HASH = "sha256:" + "ab" * 32


def test_a_file_from_before_expiry_and_revocation_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[tokens."counter-1"]\nhash = "{HASH}"\nscopes = ["inquire", "pay"]\n')
    assert tokens.load_tokens(path) == {
        HASH: tokens.Client("counter-1", frozenset({"inquire", "pay"}), None)
    }
    (record,) = tokens.read_records(path)
    assert (record.created_at, record.expires_at, record.revoked_at) == (None, None, None)
    assert record.state(0.0) == "active"


def test_expires_and_revoked_are_parsed_from_iso_strings_and_toml_times(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    other = "sha256:" + "cd" * 32
    path.write_text(
        f'[tokens.a]\nhash = "{HASH}"\nscopes = ["pay"]\nexpires_at = "2027-03-01T00:00:00.000Z"\n'
        f'[tokens.b]\nhash = "{other}"\nscopes = ["audit"]\nexpires_at = 2027-03-01T00:00:00Z\n'
        'revoked_at = "2026-12-01T10:00:00.000Z"\n'
    )
    a, b = tokens.read_records(path)
    march = datetime(2027, 3, 1, tzinfo=UTC).timestamp()
    assert a.expires_at == b.expires_at == march
    assert b.revoked_at == datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()
    assert (a.state(march - 1), a.state(march), b.state(0.0)) == ("active", "expired", "revoked")
    assert set(tokens.load_tokens(path)) == {HASH}  # the revoked one is left out


@pytest.mark.parametrize("value", ['"next week"', "12", '"2027-13-01T00:00:00Z"'])
def test_a_bad_expiry_is_a_config_error(tmp_path: Path, value: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[tokens.a]\nhash = "{HASH}"\nscopes = ["pay"]\nexpires_at = {value}\n')
    with pytest.raises(ConfigError, match="expires_at"):
        tokens.load_tokens(path)


def test_an_expired_token_is_not_identified(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    now = [1_800_000_000.0]
    token = tokens.add_token(path, "temp", ["inquire"], expires_at=now[0] + 60)
    store = tokens.Tokens(path, clock=lambda: now[0])
    store.load()
    assert store.identify(token) is not None
    now[0] += 60
    assert store.identify(token) is None


@pytest.mark.parametrize(("text", "seconds"), [("90d", 90 * 86400), ("12h", 43200), ("1d", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert tokens.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "90", "1.5d", "10m", "-1h", "d", "1w", "9999999d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="expires"):
        tokens.parse_duration(text)


def test_revoke_adds_one_line_atomically_and_the_node_drops_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text("# counters of the Midan office\n")
    keep = tokens.add_token(path, "counter-1", ["inquire", "pay"])
    gone = tokens.add_token(path, "counter-2", ["inquire", "pay"])
    before = path.read_text()
    store = tokens.Tokens(path)
    store.load()
    record = tokens.revoke_token(path, "counter-2", now=1_800_000_000.0)
    assert record.revoked_at == 1_800_000_000.0 and record.state(0.0) == "revoked"
    after = path.read_text()
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert added == ['revoked_at = "2027-01-15T08:00:00.000Z"']
    assert after.replace(added[0] + "\n", "") == before  # comments and the rest untouched
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.toml"]  # no temp file left
    monkeypatch.setattr(tokens, "_RECHECK_S", 0.0)
    assert store.identify(gone) is None
    assert store.identify(keep) is not None
    # Revoking again changes nothing; the name stays taken.
    assert tokens.revoke_token(path, "counter-2").revoked_at == 1_800_000_000.0
    assert path.read_text() == after
    with pytest.raises(ConfigError, match="exists"):
        tokens.add_token(path, "counter-2", ["pay"])


def test_revoking_an_unknown_name_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    tokens.add_token(path, "counter-1", ["pay"])
    with pytest.raises(ConfigError, match="no token named"):
        tokens.revoke_token(path, "counter-9")


def test_a_table_it_cannot_find_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    text = f'tokens = {{ x = {{ hash = "{HASH}", scopes = ["pay"] }} }}\n'
    path.write_text(text)
    with pytest.raises(ConfigError, match="by hand"):
        tokens.revoke_token(path, "x")
    assert path.read_text() == text
