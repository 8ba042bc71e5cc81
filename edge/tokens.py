"""Client tokens: a TOML file that stores only SHA-256 hashes, with scopes, expiry and revocation.

A token is shown once, when made (`edge token add`). The node re-reads the file when it
changes, so a new counter's token works, and a revoked one stops, within 2 s without a restart.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from outbox import private
from sync.timefmt import iso, parse_iso

log = logging.getLogger(__name__)
SCOPES = ("inquire", "pay", "admin", "audit", "supervise", "read_meter", "request")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([hd])\Z")
_RECHECK_S = 2.0


@dataclass(frozen=True)
class Client:
    name: str
    scopes: frozenset[str]
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class Record:
    """One token as the file holds it: what `edge token list` shows (never the hash)."""

    name: str
    digest: str
    scopes: tuple[str, ...]
    created_at: float | None = None
    expires_at: float | None = None
    revoked_at: float | None = None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.client().expired(now) else "active"

    def client(self) -> Client:
        return Client(self.name, frozenset(self.scopes), self.expires_at)


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain digest is enough (no password stretching).
    # surrogatepass: header bytes that are not UTF-8 reach us as lone surrogates; such a
    # token must simply match nothing, not raise (found by tests/integration/test_fuzz_api.py).
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_duration(text: str) -> float:
    """`90d` or `12h` as seconds (what `edge token add --expires` takes)."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise ConfigError(f"--expires {text!r}: a whole number of hours or days, like 12h or 90d")
    return int(found.group(1)) * (86400 if found.group(2) == "d" else 3600)


def _when(where: str, value: Any) -> float | None:
    """A time field: an ISO string (as `edge token` writes it) or a TOML date-time (UTC if naive)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            pass
    raise ConfigError(f"{where} must be an ISO 8601 time like 2027-03-01T00:00:00.000Z")


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc}") from exc


def read_records(path: Path) -> list[Record]:
    """Every token in the file, revoked ones too; a missing file has none, a bad one raises."""
    tokens = _read(path).get("tokens", {})
    if not isinstance(tokens, dict):
        raise ConfigError(f"{path}: [tokens] must be a table")
    out = []
    for name, entry in tokens.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: tokens.{name} must be a table")
        digest, scopes = entry.get("hash"), entry.get("scopes")
        if not isinstance(digest, str) or not _HASH.match(digest):
            raise ConfigError(f"{path}: tokens.{name}.hash must be 'sha256:<64 hex>'")
        if not isinstance(scopes, list) or not all(s in SCOPES for s in scopes):
            raise ConfigError(f"{path}: tokens.{name}.scopes must be a list of {SCOPES}")
        where = f"{path}: tokens.{name}"
        out.append(Record(
            name=name, digest=digest, scopes=tuple(scopes),
            created_at=_when(f"{where}.created_at", entry.get("created_at")),
            expires_at=_when(f"{where}.expires_at", entry.get("expires_at")),
            revoked_at=_when(f"{where}.revoked_at", entry.get("revoked_at")),
        ))  # fmt: skip
    return out


def load_tokens(path: Path) -> dict[str, Client]:
    """Hash -> client, revoked tokens left out (expiry is checked at each use)."""
    return {r.digest: r.client() for r in read_records(path) if r.revoked_at is None}


def add_token(path: Path, name: str, scopes: list[str], *, expires_at: float | None = None) -> str:
    """Append a new token to the file (mode 600) and return the token itself."""
    if not NAME.match(name):
        raise ConfigError(f"token name {name!r}: letters, digits, '.', '_' and '-', 1-64 chars")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes)}")
    # Revoked names stay taken: `edge token list` keeps showing them, and "last used" is by name.
    if name in {r.name for r in read_records(path)}:
        raise ConfigError(f"a token named {name!r} exists already in {path}")
    token = "edge_" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    block = (
        f'\n[tokens."{name}"]\n'
        f'hash = "{hash_token(token)}"\n'
        f"scopes = [{', '.join(repr(s).replace(chr(39), chr(34)) for s in scopes)}]\n"
        f'created_at = "{iso(time.time())}"\n'
    )
    if expires_at is not None:
        block += f'expires_at = "{iso(expires_at)}"\n'
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    private.tighten(path)  # the create mode only applies to a new file
    return token


def revoke_token(path: Path, name: str, *, now: float | None = None) -> Record:
    """Mark `name` revoked in the file, replacing it atomically; the revoked record."""
    records = {r.name: r for r in read_records(path)}
    if name not in records:
        raise ConfigError(f"no token named {name!r} in {path}")
    if records[name].revoked_at is not None:
        return records[name]
    at = iso(time.time() if now is None else now)
    text = path.read_text(encoding="utf-8")
    # One line added under the token's own header keeps the operator's comments and layout.
    header = re.compile(
        r'^[ \t]*\[[ \t]*tokens[ \t]*\.[ \t]*(?:"{0}"|\'{0}\'|{0})[ \t]*\][ \t]*(?:#.*)?$'.format(
            re.escape(name)
        ),
        re.MULTILINE,
    )
    found = header.search(text)
    edited = (
        None
        if found is None
        else f'{text[: found.end()]}\nrevoked_at = "{at}"{text[found.end() :]}'
    )
    want = _read(path)
    want["tokens"][name]["revoked_at"] = at
    if edited is None or _parses_to(edited) != want:
        raise ConfigError(
            f'cannot find the table [tokens."{name}"] in {path} to edit; add'
            f' revoked_at = "{at}" under it by hand'
        )
    try:
        replace_file(path, edited)
    except OSError as exc:
        # The temp file goes beside the tokens file: its directory must be writable.
        raise ConfigError(f"cannot replace {path}: {exc}") from exc
    return next(r for r in read_records(path) if r.name == name)


def _parses_to(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def replace_file(path: Path, text: str) -> None:
    """Write `text` to a temp file (0600, the old file's owner), fsync, rename over `path`."""
    old = path.stat()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                # root revoking a token must not leave a file the node's user cannot read.
                os.fchown(fh.fileno(), old.st_uid, old.st_gid)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class Tokens:
    """The live view of the tokens file, re-read at most every 2 s when the file changes."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._by_hash: dict[str, Client] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0

    def load(self) -> None:
        private.tighten(self.path)
        self._by_hash = load_tokens(self.path)
        self._stamp = self._stat()
        self._checked = time.monotonic()
        log.info("loaded %d client tokens from %s", len(self._by_hash), self.path)

    def _stat(self) -> tuple[int, int, int] | None:
        # The inode too: a revoke renames a new file into place, maybe within one mtime tick.
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _RECHECK_S:
            return
        self._checked = now
        if self._stat() != self._stamp:
            try:
                self.load()
            except ConfigError:
                self._stamp = self._stat()  # logged once per change, not every 2 s
                log.exception("tokens file changed but is invalid; keeping the previous tokens")

    def identify(self, token: str) -> Client | None:
        """The token's client; None when unknown, revoked or expired (all alike: a 401)."""
        self._refresh()
        digest = hash_token(token)
        found: Client | None = None
        # Compare against every stored hash so the time taken does not depend on a match.
        for stored, client in self._by_hash.items():
            if hmac.compare_digest(stored, digest):
                found = client
        if found is not None and found.expired(self.clock()):
            return None
        return found
