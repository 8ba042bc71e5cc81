"""Request signing: HMAC-SHA256 over method, path and query, timestamp, node and body digest.

Both sides read the shared secret with `read_secret`; the centre checks with `verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from pathlib import Path

from sync.errors import BadSignature, SyncError

NODE_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = (
    "X-Edge-Node",
    "X-Edge-Timestamp",
    "X-Edge-Signature",
)
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_TIMESTAMP = re.compile(r"^-?[0-9]{1,12}\Z")


def read_secret(path: Path) -> bytes:
    """A node's shared secret: the file's text, whitespace stripped, as UTF-8 bytes.

    Never hex-decoded, so `openssl rand -hex 32 > node.secret` works the same on both sides.
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SyncError(f"cannot read the secret file {path}: {exc}", code="bad_secret") from exc
    if not text:
        raise SyncError(f"the secret file {path} is empty", code="bad_secret")
    return text.encode()


def string_to_sign(method: str, path_qs: str, timestamp: int, node: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    text = f"{method.upper()}\n{path_qs}\n{timestamp}\n{node}\n{digest}"
    # surrogatepass: a hostile path must give a wrong signature, not an encoding error.
    return text.encode("utf-8", "surrogatepass")


def signature(
    secret: bytes, method: str, path_qs: str, body: bytes, timestamp: int, node: str
) -> str:
    message = string_to_sign(method, path_qs, timestamp, node, body)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(
    secret: bytes, node: str, method: str, path_qs: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """The three headers that authenticate one request (path_qs exactly as sent)."""
    return {
        NODE_HEADER: node,
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: signature(secret, method, path_qs, body, int(timestamp), node),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def verify(
    secrets: Mapping[str, bytes],
    method: str,
    path_qs: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    max_skew_s: float = 300,
) -> str:
    """The signing node's id; raises BadSignature (with its code) when the request is not genuine."""
    node = _header(headers, NODE_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    given = _header(headers, SIGNATURE_HEADER)
    if not node or not stamp or not given:
        raise BadSignature(
            f"the {NODE_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required",
            code="missing_signature",
        )
    secret = secrets.get(node)
    if secret is None:
        raise BadSignature(f"node {node[:64]!r} is not known to the centre", code="unknown_node")
    if not _TIMESTAMP.match(stamp):
        raise BadSignature(f"{TIMESTAMP_HEADER} must be integer seconds", code="bad_signature")
    timestamp = int(stamp)
    if abs(timestamp - now) > max_skew_s:
        raise BadSignature(
            f"timestamp {timestamp} is {timestamp - now:+.0f} s from the centre's clock"
            f" (limit ±{max_skew_s:.0f} s); correct the clock from the Date header",
            code="stale_timestamp",
        )
    expected = signature(secret, method, path_qs, body, timestamp, node)
    if not _HEX_SHA256.match(given.lower()) or not hmac.compare_digest(expected, given.lower()):
        raise BadSignature("the signature does not match the request", code="bad_signature")
    return node
