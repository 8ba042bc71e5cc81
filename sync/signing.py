"""Request signing (protocol 2): HMAC-SHA256 over method, path, timestamp, node, key id, nonce
and body digest, checkable from the headers alone, before the body is read (PROTOCOL.md 3).

Both sides read secrets with `read_secret`; the centre checks with `check_headers`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sync.errors import BadSignature, SyncError

log = logging.getLogger(__name__)
NODE_HEADER = "X-Edge-Node"
KEY_HEADER = "X-Edge-Key"
TIMESTAMP_HEADER = "X-Edge-Timestamp"
NONCE_HEADER = "X-Edge-Nonce"
DIGEST_HEADER = "X-Edge-Digest"
SIGNATURE_HEADER = "X-Edge-Signature"
REQUEST_TAG = "edge-request/2"
MIN_SECRET = 32  # bytes of key: the 64 hex characters of `openssl rand -hex 32` are 64
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_KEY_ID = re.compile(r"^[0-9a-f]{8}\Z")
_NONCE = re.compile(r"^[0-9a-f]{32}\Z")
_TIMESTAMP = re.compile(r"^-?[0-9]{1,12}\Z")
_NODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}\Z")


def read_secret(path: Path, *, check_owner: bool = True) -> bytes:
    """A shared secret: the file's text, whitespace stripped, as UTF-8 bytes (never hex-decoded).

    Refused (SyncError `bad_secret`, naming the file and the rule) unless it is at least
    MIN_SECRET bytes, the file has no group or other permission bits, and it is owned by
    the running user or root.
    """
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SyncError(f"cannot read the secret file {path}: {exc}", code="bad_secret") from exc
    check_private(path, info, "secret file", check_owner=check_owner)
    key = text.encode()
    if len(key) < MIN_SECRET:
        raise SyncError(
            f"the secret file {path} holds {len(key)} bytes of key: at least {MIN_SECRET} are"
            f" required (make one with: edge secret new {path})",
            code="bad_secret",
        )
    return key


def check_private(path: Path, info: os.stat_result, what: str, *, check_owner: bool = True) -> None:
    """The rule for secrets and private keys: no group or other permission bits, owned by the
    running user or root (SyncError `bad_secret` naming the file and the fix)."""
    if info.st_mode & 0o077:
        article = "an" if what[0] in "aeiou" else "a"
        raise SyncError(
            f"the {what} {path} has mode {info.st_mode & 0o777:03o}: {article} {what} must"
            f" be mode 0600 or stricter (chmod 600 {path})",
            code="bad_secret",
        )
    if check_owner and info.st_uid not in (os.geteuid(), 0):
        raise SyncError(
            f"the {what} {path} is owned by uid {info.st_uid}: it must be owned by the"
            f" user running this service (uid {os.geteuid()}) or root",
            code="bad_secret",
        )


def write_secret(path: Path, *, force: bool = False) -> str:
    """Write a fresh 32-byte secret as 64 hex characters, mode 0600; returns its key id."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    text = _random.token_hex(32)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_id(text.encode())


class SecretFile:
    """A secret file, re-read when it changes (a rotation needs no restart); a changed file
    that breaks the rules is logged and the last good key kept. Call it for the key now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self._secret = read_secret(path)

    def __call__(self) -> bytes:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._secret = read_secret(self.path)
            except SyncError as exc:
                log.error("%s; still signing with key %s", exc, key_id(self._secret))
            else:
                log.warning("%s changed: now signing with key %s", self.path, key_id(self._secret))
        return self._secret

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size


def key_id(secret: bytes) -> str:
    """A secret's public name: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(secret).hexdigest()[:8]


def new_nonce() -> str:
    return _random.token_hex(16)


def string_to_sign(
    method: str, path_qs: str, timestamp: int, node: str, key: str, nonce: str, digest: str
) -> bytes:
    text = (
        f"{REQUEST_TAG}\n{method.upper()}\n{path_qs}\n{timestamp}\n{node}\n{key}\n{nonce}\n{digest}"
    )
    # surrogatepass: a hostile path must give a wrong signature, not an encoding error.
    return text.encode("utf-8", "surrogatepass")


def mac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(
    secret: bytes,
    node: str,
    method: str,
    path_qs: str,
    body: bytes,
    timestamp: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The six headers that authenticate one request (path_qs exactly as sent)."""
    key, nonce = key_id(secret), nonce or new_nonce()
    digest = hashlib.sha256(body).hexdigest()
    message = string_to_sign(method, path_qs, int(timestamp), node, key, nonce, digest)
    return {
        NODE_HEADER: node,
        KEY_HEADER: key,
        TIMESTAMP_HEADER: str(int(timestamp)),
        NONCE_HEADER: nonce,
        DIGEST_HEADER: digest,
        SIGNATURE_HEADER: mac(secret, message),
    }


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value by case-insensitive name ("" when absent), for any mapping."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value or ""


@dataclass(frozen=True)
class Signed:
    """A request whose headers verified: who signed it, with which key, and what it claims."""

    node: str
    key: str
    secret: bytes = field(repr=False)
    timestamp: int
    nonce: str
    digest: str
    signature: str

    def body_matches(self, body: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha256(body).hexdigest(), self.digest)


def unauthorized(reason: str) -> BadSignature:
    """The one refusal the wire shows for every failed check (the reason is for the log)."""
    return BadSignature(reason, code="unauthorized")


def check_headers(
    keys: Mapping[str, Mapping[str, bytes]],
    method: str,
    path_qs: str,
    headers: Mapping[str, str],
    now: float,
    max_skew_s: float = 300,
) -> Signed:
    """The verified signer of a request, from its headers alone (no body needed).

    `keys` maps node -> key id -> secret. Every failure is BadSignature `unauthorized`,
    except a timestamp outside the symmetric window on a request whose signature verifies:
    that is StaleTimestamp (`stale_timestamp`), which carries `signed` so the answer is signed.
    """
    node, key = header(headers, NODE_HEADER), header(headers, KEY_HEADER)
    stamp, nonce = header(headers, TIMESTAMP_HEADER), header(headers, NONCE_HEADER)
    digest, given = header(headers, DIGEST_HEADER), header(headers, SIGNATURE_HEADER).lower()
    for name, value, pattern in (
        (NODE_HEADER, node, _NODE), (KEY_HEADER, key, _KEY_ID), (TIMESTAMP_HEADER, stamp, _TIMESTAMP),
        (NONCE_HEADER, nonce, _NONCE), (DIGEST_HEADER, digest, _HEX_SHA256),
        (SIGNATURE_HEADER, given, _HEX_SHA256),
    ):  # fmt: skip
        if not pattern.match(value):
            raise unauthorized(f"{name} is missing or malformed: {value[:80]!r}")
    secret = keys.get(node, {}).get(key)
    if secret is None:
        known = "unknown node" if node not in keys else "unknown key id"
        raise unauthorized(f"{known}: node {node!r}, key {key!r}")
    timestamp = int(stamp)
    expected = mac(secret, string_to_sign(method, path_qs, timestamp, node, key, nonce, digest))
    if not hmac.compare_digest(expected, given):
        raise unauthorized(f"bad signature from node {node!r} (key {key})")
    signed = Signed(node, key, secret, timestamp, nonce, digest, given)
    if abs(timestamp - now) > max_skew_s:
        raise StaleTimestamp(
            f"timestamp {timestamp} is {timestamp - now:+.0f} s from the centre's clock"
            f" (limit ±{max_skew_s:.0f} s); correct the clock from the Date header",
            signed,
        )
    return signed


class StaleTimestamp(BadSignature):
    """A genuine request signed outside the window: the one 401 the node may act on."""

    code = "stale_timestamp"

    def __init__(self, detail: str, signed: Signed) -> None:
        super().__init__(detail)
        self.signed = signed
