"""Client tokens: a TOML file that stores only SHA-256 hashes, with scopes per token.

A token is shown once, when made (`edge token add`). The node re-reads the file when it
changes, so a new counter's token works without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError
from sync.timefmt import iso

log = logging.getLogger(__name__)
SCOPES = ("inquire", "pay", "admin", "audit")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_RECHECK_S = 2.0


@dataclass(frozen=True)
class Client:
    name: str
    scopes: frozenset[str]


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain digest is enough (no password stretching).
    # surrogatepass: header bytes that are not UTF-8 reach us as lone surrogates; such a
    # token must simply match nothing, not raise (found by tests/integration/test_fuzz_api.py).
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def load_tokens(path: Path) -> dict[str, Client]:
    """Hash -> client. A missing file means no clients; a malformed one is a ConfigError."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc}") from exc
    out: dict[str, Client] = {}
    tokens = doc.get("tokens", {})
    if not isinstance(tokens, dict):
        raise ConfigError(f"{path}: [tokens] must be a table")
    for name, entry in tokens.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: tokens.{name} must be a table")
        digest, scopes = entry.get("hash"), entry.get("scopes")
        if not isinstance(digest, str) or not _HASH.match(digest):
            raise ConfigError(f"{path}: tokens.{name}.hash must be 'sha256:<64 hex>'")
        if not isinstance(scopes, list) or not all(s in SCOPES for s in scopes):
            raise ConfigError(f"{path}: tokens.{name}.scopes must be a list of {SCOPES}")
        out[digest] = Client(name=name, scopes=frozenset(scopes))
    return out


def add_token(path: Path, name: str, scopes: list[str]) -> str:
    """Append a new token to the file (mode 600) and return the token itself."""
    if not NAME.match(name):
        raise ConfigError(f"token name {name!r}: letters, digits, '.', '_' and '-', 1-64 chars")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes)}")
    existing = {client.name for client in load_tokens(path).values()}
    if name in existing:
        raise ConfigError(f"a token named {name!r} exists already in {path}")
    token = "edge_" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    block = (
        f'\n[tokens."{name}"]\n'
        f'hash = "{hash_token(token)}"\n'
        f"scopes = [{', '.join(repr(s).replace(chr(39), chr(34)) for s in scopes)}]\n"
        f'created_at = "{iso(time.time())}"\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return token


class Tokens:
    """The live view of the tokens file, re-read at most every 2 s when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, Client] = {}
        self._mtime: float | None = None
        self._checked = 0.0

    def load(self) -> None:
        self._by_hash = load_tokens(self.path)
        self._mtime = self._stat()
        self._checked = time.monotonic()
        log.info("loaded %d client tokens from %s", len(self._by_hash), self.path)

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _RECHECK_S:
            return
        self._checked = now
        if self._stat() != self._mtime:
            try:
                self.load()
            except ConfigError:
                log.exception("tokens file changed but is invalid; keeping the previous tokens")

    def identify(self, token: str) -> Client | None:
        self._refresh()
        digest = hash_token(token)
        found: Client | None = None
        # Compare against every stored hash so the time taken does not depend on a match.
        for stored, client in self._by_hash.items():
            if hmac.compare_digest(stored, digest):
                found = client
        return found
