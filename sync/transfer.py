"""Signed transfer files (PROTOCOL.md 11): the wire's frames in one file for a node without a
link, carried by hand: a plain header, the frames gzip-compressed and AES-256-CTR encrypted
under a key derived from the node's shared secret, and an HMAC-SHA256 over all of it.

`write_file` makes one; `TransferFile` reads the header, `verify`s the whole file, then
yields the frames. Nothing of a file is acted on before its signature verified.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets as _random
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sync import protocol
from sync.errors import TransferRefused
from sync.signing import key_id

MAGIC = b"EDGE-TRANSFER/1\n"
KINDS = ("outbox", "verdicts", "bills")
COMPRESSION = "gzip"
CIPHER = "aes-256-ctr+hmac-sha256"
TAG = 32  # bytes of HMAC-SHA256 at the end of the file
MAX_HEADER = 4096
MAX_FRAME = 64 * 1024 * 1024
GZIP_LEVEL = 6
_CHUNK = 1 << 20
_LEN = struct.Struct(">I")
_HASH = re.compile(r"^([0-9a-f]{64})?\Z")
_HEADER_FIELDS = ("v", "kind", "node", "governorate", "key", "created_at", "first_seq",
                  "last_seq", "chain_head", "count", "since", "cursor", "source", "nonce",
                  "compression", "cipher")  # fmt: skip


@dataclass(frozen=True)
class Header:
    """What a file says of itself, readable without the key (it holds no personal data)."""

    kind: str
    node: str
    governorate: str
    key: str  # the id of the key it is signed with (sync.signing.key_id)
    created_at: float
    first_seq: int = 0  # outbox, verdicts: the seq range covered (0, 0: none)
    last_seq: int = 0
    chain_head: str = ""  # outbox: the hash of last_seq; verdicts: the centre's head
    count: int = 0  # entries, verdicts or bills in the file
    since: int | None = None  # bills: the cursor the changes follow; None: a snapshot
    cursor: int = 0  # bills: the cursor after it; verdicts: the centre's acked_seq
    source: str = ""  # verdicts: the SHA-256 of the outbox file answered
    nonce: str = ""
    v: int = protocol.PROTOCOL_VERSION
    compression: str = COMPRESSION
    cipher: str = CIPHER

    def describe(self) -> str:
        what = f"{self.kind} file of node {self.node} ({self.governorate}), {self.count} items"
        if self.kind == "bills":
            start = "a snapshot" if self.since is None else f"changes since {self.since}"
            return f"{what}, {start} to cursor {self.cursor}"
        return what + (f", seq {self.first_seq}..{self.last_seq}" if self.count else "")


def _keys(secret: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """(encryption key, signing key): one HKDF per file, the file's nonce as its salt."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=nonce, info=b"edge-transfer/1").derive(
        secret
    )
    return okm[:32], okm[32:]


def _cipher(key: bytes, nonce: bytes) -> Cipher[modes.CTR]:
    return Cipher(algorithms.AES(key), modes.CTR(nonce))


def write_file(path: Path, secret: bytes, header: Header, frames: Iterable[bytes]) -> str:
    """Write a signed, compressed, encrypted file (mode 0600, atomically: a temp file renamed
    into place); returns its SHA-256. The header's key and nonce are set here."""
    nonce = _random.token_bytes(16)
    enc_key, mac_key = _keys(secret, nonce)
    fields = asdict(header) | {"key": key_id(secret), "nonce": nonce.hex()}
    head = msgpack.packb({k: fields[k] for k in _HEADER_FIELDS}, use_bin_type=True)
    if len(head) > MAX_HEADER:
        raise ValueError("transfer header too large")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # subscribers' names and addresses: nobody else's file
        with os.fdopen(fd, "wb") as out:
            signer = hmac.new(mac_key, digestmod=hashlib.sha256)
            whole = hashlib.sha256()

            def put(data: bytes) -> None:
                signer.update(data)
                whole.update(data)
                out.write(data)

            put(MAGIC + _LEN.pack(len(head)) + head)
            encryptor = _cipher(enc_key, nonce).encryptor()
            gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            for frame in frames:
                put(encryptor.update(gzip.compress(_LEN.pack(len(frame)) + frame)))
            put(encryptor.update(gzip.flush()) + encryptor.finalize())
            tag = signer.digest()
            whole.update(tag)
            out.write(tag)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return whole.hexdigest()


def _refuse(path: Path, why: str) -> TransferRefused:
    return TransferRefused(f"{path}: {why}; nothing was changed")


def _header(raw: Any, path: Path) -> Header:
    if not isinstance(raw, dict) or set(raw) != set(_HEADER_FIELDS):
        raise _refuse(path, "the header is damaged (fields missing or unexpected)")
    ints = ("first_seq", "last_seq", "count", "cursor")
    strs = ("kind", "node", "governorate", "key", "chain_head", "source", "nonce",
            "compression", "cipher")  # fmt: skip
    if (
        any(type(raw[k]) is not int or raw[k] < 0 for k in ints)
        or any(not isinstance(raw[k], str) or len(raw[k]) > 128 for k in strs)
        or not (raw["since"] is None or (type(raw["since"]) is int and raw["since"] >= 0))
        or not isinstance(raw["created_at"], int | float)
        or type(raw["v"]) is not int
    ):
        raise _refuse(path, "the header is damaged (a field of the wrong type)")
    if raw["v"] != protocol.PROTOCOL_VERSION:
        raise _refuse(path, f"protocol version {raw['v']} is not supported (this side speaks"
                            f" {protocol.PROTOCOL_VERSION})")  # fmt: skip
    if raw["kind"] not in KINDS or raw["compression"] != COMPRESSION or raw["cipher"] != CIPHER:
        raise _refuse(path, f"unknown kind, compression or cipher ({raw['kind'][:16]!r})")
    if not re.fullmatch(r"[0-9a-f]{32}", raw["nonce"]) or not _HASH.match(raw["chain_head"]):
        raise _refuse(path, "the header is damaged (nonce or chain head)")
    return Header(**{k: raw[k] for k in _HEADER_FIELDS})


class TransferFile:
    """An open transfer file: `header` (unverified until `verify`), then `frames()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh: BinaryIO = path.open("rb")
            self.size = os.fstat(self._fh.fileno()).st_size
        except OSError as exc:
            raise TransferRefused(f"cannot read {path}: {exc.strerror}") from exc
        self.verified = False
        start = self._fh.read(len(MAGIC) + _LEN.size)
        if len(start) < len(MAGIC) + _LEN.size or not start.startswith(MAGIC):
            self.close()
            raise _refuse(path, "not an edge transfer file (or its first bytes are damaged)")
        (length,) = _LEN.unpack(start[len(MAGIC) :])
        self._body = len(start) + length
        if length > MAX_HEADER or self._body + TAG > self.size:
            self.close()
            raise _refuse(path, "the file is truncated or its header is damaged")
        try:
            raw = msgpack.unpackb(self._fh.read(length), raw=False, strict_map_key=True)
        except Exception:  # any msgpack failure: the same damaged header
            self.close()
            raise _refuse(path, "the header is damaged (not msgpack)") from None
        try:
            self.header = _header(raw, path)
        except TransferRefused:
            self.close()
            raise

    def __enter__(self) -> TransferFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def verify(self, secret: bytes) -> str:
        """Check the signature over the whole file; returns the file's SHA-256."""
        ours = key_id(secret)
        if self.header.key != ours:
            raise _refuse(self.path, f"it is signed with key {self.header.key[:8]!r}, and the"
                                     f" key here is {ours}: check the secret files")  # fmt: skip
        _, mac_key = _keys(secret, bytes.fromhex(self.header.nonce))
        signer = hmac.new(mac_key, digestmod=hashlib.sha256)
        whole = hashlib.sha256()
        self._fh.seek(0)
        left = self.size - TAG
        while left > 0:
            chunk = self._fh.read(min(_CHUNK, left))
            if not chunk:
                break
            signer.update(chunk)
            whole.update(chunk)
            left -= len(chunk)
        tag = self._fh.read(TAG)
        whole.update(tag)
        if left or not hmac.compare_digest(signer.digest(), tag):
            raise _refuse(self.path, "its signature does not verify: the file was altered or"
                                     " truncated on the way (ask for a new one)")  # fmt: skip
        self.verified, self._secret = True, secret
        return whole.hexdigest()

    def frames(self) -> Iterator[bytes]:
        """The frames, decrypted and decompressed as they are read (only once verified)."""
        if not self.verified:
            raise RuntimeError("verify() the file before reading its frames")
        nonce = bytes.fromhex(self.header.nonce)
        decryptor = _cipher(_keys(self._secret, nonce)[0], nonce).decryptor()
        gunzip = zlib.decompressobj(31)
        buf = bytearray()
        self._fh.seek(self._body)
        left = self.size - TAG - self._body
        try:
            while left > 0:
                chunk = self._fh.read(min(_CHUNK, left))
                left -= len(chunk)
                buf += gunzip.decompress(decryptor.update(chunk))
                yield from _split(buf)
            buf += gunzip.flush()
            yield from _split(buf)
        except zlib.error as exc:
            raise _refuse(self.path, f"its content does not decompress: {exc}") from None
        if buf or not gunzip.eof:
            raise _refuse(self.path, "its content ends inside a frame")


def _split(buf: bytearray) -> Iterator[bytes]:
    """Take whole length-prefixed frames off the front of `buf`."""
    while len(buf) >= _LEN.size:
        (length,) = _LEN.unpack_from(buf)
        if length > MAX_FRAME:
            raise TransferRefused(f"a frame of {length} bytes (the limit is {MAX_FRAME})")
        if len(buf) < _LEN.size + length:
            return
        frame = bytes(buf[_LEN.size : _LEN.size + length])
        del buf[: _LEN.size + length]
        yield frame
