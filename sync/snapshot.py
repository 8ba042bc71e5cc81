"""The snapshot stream (PROTOCOL.md 4.4): bill maps in pages, each page sealed by a signed frame,
the last seal carrying the cursor; `Sealer` writes it at the centre, `SnapshotReader` checks it.

The reader hands out a page's bills only once its seal verified, so nothing unsigned is applied.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import msgpack

from sync import protocol
from sync.answers import page_mac
from sync.errors import BadAnswer, ProtocolError

MAX_PAGE = protocol.MAX_CHANGES  # bills under one seal: bounds what a reader holds unverified
_SEAL = ("page", "bills", "mac")
_END = ("end", "cursor", "count")


def encode_item(bill: Mapping[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(protocol.bill_map(bill), use_bin_type=True)
    return packed


class Sealer:
    """The centre's side: `seal(page_bytes, n)` after each page, then `end(cursor)`."""

    def __init__(self, secret: bytes, request_signature: str) -> None:
        self._secret, self._signature = secret, request_signature
        self.page = self.count = 0

    def seal(self, page: bytes, bills: int) -> bytes:
        digest = hashlib.sha256(page).hexdigest()
        frame = {
            "v": protocol.PROTOCOL_VERSION, "page": self.page, "bills": bills,
            "mac": page_mac(self._secret, self._signature, self.page, bills, digest),
        }  # fmt: skip
        self.page += 1
        self.count += bills
        packed: bytes = msgpack.packb(frame, use_bin_type=True)
        return packed

    def end(self, cursor: int, page: bytes = b"", bills: int = 0) -> bytes:
        """The last seal: over the bytes since the previous seal (usually none) and the cursor."""
        count = self.count + bills
        digest = hashlib.sha256(page).hexdigest()
        mac = page_mac(self._secret, self._signature, self.page, bills, digest, (cursor, count))
        frame = {
            "v": protocol.PROTOCOL_VERSION, "page": self.page, "bills": bills, "end": True,
            "cursor": cursor, "count": count, "mac": mac,
        }  # fmt: skip
        packed: bytes = msgpack.packb(frame, use_bin_type=True)
        return packed


class SnapshotReader:
    """The node's side: feed chunks as they arrive; `feed` returns the bills of pages whose
    seal verified. ProtocolError for a malformed stream, BadAnswer for a wrong seal."""

    def __init__(
        self,
        secret: bytes,
        request_signature: str,
        *,
        governorate: str | None = None,
        max_buffer: int = 16 * 1024 * 1024,
    ) -> None:
        self._unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=True, max_buffer_size=max_buffer, max_array_len=0,
            **protocol._LIMITS,
        )  # fmt: skip
        self._secret, self._signature = secret, request_signature
        self._governorate = governorate
        self._raw = bytearray()  # from the current page's first byte on
        self._consumed = 0  # the stream offset of self._raw[0]
        self._page_end = 0  # where in self._raw the current page's last bill ends
        self._max_buffer = max_buffer
        self._page: list[dict[str, Any]] = []
        self._pages = self._count = 0
        self._cursor: int | None = None

    @property
    def done(self) -> bool:
        return self._cursor is not None

    @property
    def cursor(self) -> int | None:
        """The change-feed cursor to follow from, once the signed end seal has arrived."""
        return self._cursor

    @property
    def count(self) -> int:
        return self._count

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise ProtocolError("a snapshot chunk must be bytes")
        if self.done and len(chunk):
            raise ProtocolError("data after the end of the snapshot")
        released: list[dict[str, Any]] = []
        try:
            self._unpacker.feed(chunk)
            self._raw += chunk  # the current page's bytes, then what is not decoded yet
            if len(self._raw) > self._max_buffer:
                raise ProtocolError(f"a snapshot page of more than {self._max_buffer} bytes")
            for obj in self._unpacker:
                if self.done:
                    raise ProtocolError("data after the end of the snapshot")
                end = self._unpacker.tell() - self._consumed
                if isinstance(obj, dict) and "mac" in obj:
                    with memoryview(self._raw) as view:
                        digest = hashlib.sha256(view[: self._page_end]).hexdigest()
                    released.extend(self._seal(obj, digest))
                    del self._raw[:end]
                    self._consumed += end
                    self._page_end = 0
                else:
                    where = f"snapshot bill {self._count + len(self._page) + 1}"
                    self._page.append(protocol.validate_bill(obj, where, self._governorate))
                    self._page_end = end
                    if len(self._page) > MAX_PAGE:
                        raise ProtocolError(f"a snapshot page of more than {MAX_PAGE} bills")
        except (ProtocolError, BadAnswer):
            raise
        except Exception as exc:  # msgpack's own errors: buffer full, bad bytes, limits
            raise ProtocolError(f"bad snapshot stream: {type(exc).__name__}: {exc}") from None
        if self.done and self._raw:
            raise ProtocolError("data after the end of the snapshot")
        return released

    def finish(self) -> None:
        """Call when the body has ended: raises unless the signed end seal was seen."""
        if not self.done:
            raise ProtocolError(f"the snapshot stopped after {self._count} bills without its end")

    def _seal(self, obj: dict[str, Any], digest: str) -> list[dict[str, Any]]:
        is_end = "end" in obj
        frame = protocol._frame(obj, _SEAL + (_END if is_end else ()))
        page = protocol._int(frame["page"], "page")
        bills = protocol._int(frame["bills"], "bills")
        mac = protocol._str(frame["mac"], "mac")
        if page != self._pages or bills != len(self._page):
            raise ProtocolError(
                f"seal of page {page} ({bills} bills) where page {self._pages} has"
                f" {len(self._page)}: pages lost, reordered or repeated"
            )
        end: tuple[int, int] | None = None
        if is_end:
            if frame["end"] is not True:
                raise ProtocolError("end must be true")
            end = (protocol._int(frame["cursor"], "cursor"), protocol._int(frame["count"], "count"))
        expected = page_mac(self._secret, self._signature, page, bills, digest, end)
        if not hmac.compare_digest(expected.encode(), mac.lower().encode("utf-8", "replace")):
            raise BadAnswer(f"snapshot page {page} is wrongly signed: ignored")
        released, self._page = self._page, []
        self._pages += 1
        self._count += len(released)
        if end is not None:
            if end[1] != self._count:
                raise ProtocolError(
                    f"the snapshot announced {end[1]} bills but carried {self._count}"
                )
            self._cursor = end[0]
        return released
