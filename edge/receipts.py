"""The printable receipt: what it shows, and its fixed-width text for ESC/POS printers.

The text form is plain ASCII (a printer without a driver has no Arabic shaping or code
page we can rely on): English labels, Latin digits, Arabic names transliterated.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.config import GOVERNORATES, Settings
from sync import receiptcode
from sync.timefmt import parse_iso

PAPERS = {"80mm": 42, "58mm": 32, "a4": 80}  # text columns per paper (a4: a plain printer)
METHODS_AR = {"cash": "نقداً", "card": "بطاقة", "transfer": "تحويل"}


@dataclass(frozen=True)
class Receipt:
    receipt: str
    payment_id: str
    node: str
    node_code: str
    governorate: str
    governorate_en: str
    governorate_ar: str
    bill_id: str
    account: str
    subscriber: str  # "" when the bill has left the mirror
    amount: int  # piastres
    method: str
    cashier: str
    local_time: str  # `YYYY-MM-DD HH:MM:SS` in node.timezone
    timezone: str
    state: str
    qr: str  # the QR text; "" when the node has no key (no centre configured)


def build(
    found: dict[str, Any], subscriber: str, settings: Settings, secret: bytes | None
) -> Receipt:
    """A receipt from a payment as `payments.find` shows it."""
    at = parse_iso(found["accepted_at"])
    gov = settings.node_governorate
    en, ar = GOVERNORATES[gov]
    qr = (
        ""
        if secret is None
        else receiptcode.make(
            secret, found["payment_id"], found["bill_id"], found["amount"], at
        ).text()
    )
    local = datetime.fromtimestamp(at, ZoneInfo(settings.node_timezone))
    return Receipt(
        receipt=found["receipt"], payment_id=found["payment_id"], node=settings.node_id,
        node_code=settings.receipt_code, governorate=gov, governorate_en=en, governorate_ar=ar,
        bill_id=found["bill_id"], account=found["account"], subscriber=subscriber,
        amount=found["amount"], method=found["method"], cashier=found["cashier"],
        local_time=local.strftime("%Y-%m-%d %H:%M:%S"), timezone=settings.node_timezone,
        state=found["state"], qr=qr,
    )  # fmt: skip


def syp(piastres: int) -> str:
    """`9960000` -> `99,600.00`: SYP with thousands separators (amounts are piastres)."""
    return f"{piastres // 100:,}.{piastres % 100:02d}"


# A plain letter-for-letter romanisation: enough for a cashier and a subscriber to recognise
# a name on a thermal slip; the HTML receipt prints the Arabic itself.
_ROMAN = {
    "ء": "'", "آ": "a", "أ": "a", "ؤ": "w", "إ": "i", "ئ": "y", "ا": "a", "ب": "b", "ة": "a",
    "ت": "t", "ث": "th", "ج": "j", "ح": "h", "خ": "kh", "د": "d", "ذ": "dh", "ر": "r", "ز": "z",
    "س": "s", "ش": "sh", "ص": "s", "ض": "d", "ط": "t", "ظ": "z", "ع": "'", "غ": "gh", "ف": "f",
    "ق": "q", "ك": "k", "ل": "l", "م": "m", "ن": "n", "ه": "h", "و": "w", "ى": "a", "ي": "y",
    "٠": "0", "١": "1", "٢": "2", "٣": "3", "٤": "4", "٥": "5", "٦": "6", "٧": "7", "٨": "8",
    "٩": "9", "،": ",", "ـ": "",
}  # fmt: skip


def ascii_text(text: str) -> str:
    """`text` as printable ASCII: Arabic romanised, diacritics dropped, anything else `?`."""
    out = []
    for ch in text:
        if " " <= ch <= "~":
            out.append(ch)
        elif ch in _ROMAN:
            out.append(_ROMAN[ch])
        elif "\u064b" <= ch <= "\u0652" or ch == "\u0670":
            continue  # harakat: not written in the Latin form
        elif ch.isspace():
            out.append(" ")
        else:
            out.append("?")
    return "".join(out)


def _rows(r: Receipt, room: int) -> list[tuple[str, str]]:
    zoned = f"{r.local_time} {r.timezone}"
    return [
        ("Receipt", r.receipt),
        ("Node", f"{r.node} ({r.node_code})"),
        ("Bill", r.bill_id),
        ("Account", r.account),
        ("Name", ascii_text(r.subscriber) or "-"),
        ("Amount", f"{syp(r.amount)} SYP"),
        ("Method", r.method),
        ("Cashier", ascii_text(r.cashier)),
        ("Time", zoned if len(zoned) <= room else r.local_time),  # 58 mm: node's local time
        ("Payment", r.payment_id),
    ]


def text(r: Receipt, paper: str = "80mm") -> str:
    """The receipt in `PAPERS[paper]` columns: no line is longer, every line ends in `\\n`."""
    width = PAPERS[paper]
    label = 9
    lines = [
        ascii_text(f"{r.governorate_en} electricity").upper().center(width).rstrip(),
        "Payment receipt / Wasl daf'".center(width).rstrip(),
        "-" * width,
    ]
    for name, value in _rows(r, width - label - 1):
        if len(value) <= width - label - 1:
            lines.append(f"{name:<{label}} {value}")
        else:  # a number is never split if a line of its own can hold it
            lines.append(f"{name}:")
            lines.extend(_wrap(value, width))
    lines.append("-" * width)
    lines.append(f"{'TOTAL':<{label}} {syp(r.amount)} SYP")
    if r.qr:
        lines.append("Verify at the centre:")
        lines.extend(_wrap(r.qr, width))
    else:
        lines.extend(_wrap("No verification code (no centre).", width))
    lines.append("Keep this receipt.")
    return "".join(line.rstrip() + "\n" for line in lines)


def _wrap(value: str, width: int) -> list[str]:
    return textwrap.wrap(value, width, break_long_words=True, break_on_hyphens=False) or [""]
