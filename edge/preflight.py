"""What `edge serve` checks before it starts, and `edge check-config` with the same code: every
setting (edge.config), then every file the settings name: that it exists and loads, and that a
secret, private key or password is the node's alone (mode 0600, owned by it or root).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from edge import config, replication, serving, tokens
from edge.config import Problems, Settings
from edge.errors import ConfigError
from sync import signing
from sync.errors import SyncError


def check(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """The settings `edge serve` runs with; ConfigError listing every problem found."""
    settings, problems = config.read(path, env)
    files(settings, problems)
    problems.raise_if_any()
    return settings


def files(s: Settings, problems: Problems) -> None:
    """Add a problem for each file `s` names that the node could not start with. A key whose
    value is already refused is not looked at again (its file would be the default's)."""
    if "node_data_dir" not in problems.names:
        _data_dir(s.node_data_dir, problems)
    if s.centre_url and "centre_secret_file" not in problems.names:
        _secret(s, problems)
    if "auth_tokens_file" not in problems.names:
        _tokens(s.auth_tokens_file, problems)
    http = {"http_cert_file", "http_key_file", "http_client_ca_file"}
    if (
        s.http_cert_file
        and s.http_key_file
        and not problems.names & http
        and _private(Path(s.http_key_file), "http_key_file", "private key", problems)
    ):
        _loads(lambda: serving.server_context(s), problems)
    if s.centre_url.startswith("https://"):
        _centre_tls(s, problems)
    if s.ups_source == "nut" and s.ups_password_file:
        path = Path(s.ups_password_file)
        if _private(path, "ups_password_file", "password file", problems):
            try:
                path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.add("ups_password_file", f"{path} cannot be read: {exc}")


def _data_dir(path: Path, problems: Problems) -> None:
    """The node makes its data directory (and parents) at start, and writes its database there."""
    if path.exists() and not path.is_dir():
        problems.add("node_data_dir", f"{path} is not a directory")
        return
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        fix = "" if existing == path else f" to create {path} in"
        problems.add("node_data_dir", f"{existing} is not writable by this user (uid"
                     f" {os.geteuid()}){fix}: install -d -o USER -m 750 {path}")  # fmt: skip


def _secret(s: Settings, problems: Problems) -> None:
    path = s.centre_secret_file
    try:
        signing.read_secret(path)
    except SyncError as exc:
        fix = (
            f"; make one with: edge secret new {path} (then chown it to the service user), and"
            f" give the centre the same text for [nodes.{s.node_id}]"
            if not path.exists()
            else ""
        )
        problems.add("centre_secret_file", f"is refused: {exc.detail}{fix}")


def _tokens(path: Path, problems: Problems) -> None:
    """A missing file is no client yet (check-config warns); one that is there must be ours
    (its hashes decide who may pay) and parse. A loose mode is tightened at start."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        problems.add("auth_tokens_file", f"{path} cannot be read: {exc}")
        return
    if info.st_uid not in (os.geteuid(), 0):
        problems.add("auth_tokens_file", f"{path} is owned by uid {info.st_uid}: it must be"
                     f" owned by the user running the node (uid {os.geteuid()}) or root"
                     f" (chown it)")  # fmt: skip
        return
    try:
        tokens.read_records(path)
    except ConfigError as exc:
        problems.add("auth_tokens_file", f"{path} is not a valid tokens file: {exc}")


def _centre_tls(s: Settings, problems: Problems) -> None:
    """An https:// centre: its CA and the node's client pair load (as the link will at start)."""
    names = ("centre_ca_file", "centre_cert_file", "centre_key_file")
    if problems.names & set(names):
        return
    ok = True
    for name in names:
        value = getattr(s, name)
        if value and not Path(value).is_file():
            problems.add(name, f"{value}: no such file")
            ok = False
    if ok and s.centre_key_file:
        ok = _private(Path(s.centre_key_file), "centre_key_file", "private key", problems)
    if ok:
        _loads(lambda: replication.ssl_context(s), problems)


def _private(path: Path, name: str, what: str, problems: Problems) -> bool:
    """True when `path` is there and only the node may read it (else a problem is added)."""
    try:
        signing.check_private(path, path.stat(), what)
    except FileNotFoundError:
        problems.add(name, f"{path}: no such file")
        return False
    except OSError as exc:
        problems.add(name, f"{path} cannot be read: {exc}")
        return False
    except SyncError as exc:
        problems.add(name, f"is refused: {exc.detail}")
        return False
    return True


def _loads(build: Callable[[], object], problems: Problems) -> None:
    """Run a context builder; its ConfigError (naming the keys) becomes a problem."""
    try:
        build()
    except ConfigError as exc:
        problems.add(None, str(exc))
