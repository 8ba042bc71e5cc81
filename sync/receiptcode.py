"""Receipt numbers and the receipt QR text: one definition, used by the node that prints them
and by the centre that checks them (PROTOCOL.md section 5.1).

QR text: `EDGE1|<payment_id>|<bill_id>|<amount>|<unix time>|<key id>|<mac>`, where the MAC is
HMAC-SHA256 under the node's receipt key (derived from its shared secret) over everything
before the last `|`, cut to 120 bits and written in base32 (24 characters, no padding).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from outbox.ids import ENTRY_ID
from sync import signing
from sync.bill import BILL_ID

TAG = "EDGE1"
RECEIPT_KEY_LABEL = b"edge receipt v1"
MAC_BYTES = 15  # 120 bits: base32 without padding, and far beyond any guessing at a counter
RECEIPT_CODE = re.compile(r"^[A-Z0-9]{1,8}\Z")
# `{GOV}-{CODE}-{YYYYMMDD}-{n}`; receipts printed before node codes existed have no CODE.
RECEIPT = re.compile(r"^([A-Z]{3})-(?:([A-Z0-9]{1,8})-)?([0-9]{8})-([0-9]{6,})\Z")
_AMOUNT = re.compile(r"^[1-9][0-9]{0,18}\Z")
_TIME = re.compile(r"^[0-9]{1,12}\Z")
_KEY_ID = re.compile(r"^[0-9a-f]{8}\Z")
_MAC = re.compile(r"^[A-Z2-7]{24}\Z")
MAX_TEXT = 256


class BadReceiptText(ValueError):
    """The text is not a receipt QR of this format (nothing about a MAC yet)."""


def default_code(node_id: str) -> str:
    """`dam-1` -> `DAM1`: the node id upper-cased without its other characters (at most 8)."""
    return "".join(ch for ch in node_id.upper() if ch.isascii() and ch.isalnum())[:8]


def receipt_number(governorate: str, code: str, day: str, n: int) -> str:
    return f"{governorate}-{code}-{day}-{n:06d}"


def code_of(receipt: str) -> str | None:
    """The node code in a receipt number; None for an older receipt without one (or junk)."""
    match = RECEIPT.match(receipt)
    return None if match is None else match.group(2)


def receipt_key(secret: bytes) -> bytes:
    """The key receipts are signed with: one-way from the shared secret, so a receipt key
    that leaks (it is all the centre's verify table holds) signs no request."""
    return hmac.new(secret, RECEIPT_KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class ReceiptCode:
    payment_id: str
    bill_id: str
    amount: int
    at: int  # unix seconds of accepted_at
    key_id: str
    mac: str = ""

    @property
    def node(self) -> str:
        return self.payment_id.rsplit("_", 1)[0]

    def signed_part(self) -> str:
        return f"{TAG}|{self.payment_id}|{self.bill_id}|{self.amount}|{self.at}|{self.key_id}"

    def text(self) -> str:
        return f"{self.signed_part()}|{self.mac}"

    def valid_under(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, _mac(key, self.signed_part()))


def _mac(key: bytes, signed_part: str) -> str:
    digest = hmac.new(key, signed_part.encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.b32encode(digest).decode()


def make(secret: bytes, payment_id: str, bill_id: str, amount: int, at: float) -> ReceiptCode:
    """The QR content for one payment, under the receipt key of `secret` (named by its id)."""
    code = ReceiptCode(payment_id, bill_id, amount, int(at), signing.key_id(secret))
    mac = _mac(receipt_key(secret), code.signed_part())
    return ReceiptCode(code.payment_id, code.bill_id, code.amount, code.at, code.key_id, mac)


def parse(text: str) -> ReceiptCode:
    """A QR text read back; BadReceiptText naming the part that is wrong."""
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise BadReceiptText(f"the text is over {MAX_TEXT} characters")
    parts = text.split("|")
    if len(parts) != 7 or parts[0] != TAG:
        raise BadReceiptText(f"not a receipt code: expected {TAG}| and 7 fields")
    _, payment_id, bill_id, amount, at, key, mac = parts
    for name, value, pattern in (
        ("payment id", payment_id, ENTRY_ID), ("bill id", bill_id, BILL_ID),
        ("amount", amount, _AMOUNT), ("time", at, _TIME), ("key id", key, _KEY_ID),
        ("mac", mac, _MAC),
    ):  # fmt: skip
        if not pattern.match(value):
            raise BadReceiptText(f"the {name} {value[:40]!r} is not well formed")
    return ReceiptCode(payment_id, bill_id, int(amount), int(at), key, mac)
