"""The bill schema: its fields, their types and patterns, and the one validator of a bill.

The centre's feeds, the wire decoder, the node's mirror and the billing importer all check
bills here, so a bill one of them accepts is a bill all of them accept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sync.errors import ProtocolError

FIELDS = (
    "bill_id", "account", "governorate", "cycle", "name", "address", "meter", "kwh",
    "amount", "paid", "due_date", "version", "updated_at", "credit", "fine_paid",
)  # fmt: skip
# `credit` (protocol 3): piastres paid on this bill beyond its amount, the subscriber's money.
# `fine_paid` (protocol 4): piastres paid towards late fines on it, apart from `paid`.
INT_FIELDS = frozenset({"kwh", "amount", "paid", "version", "credit", "fine_paid"})
MAX_INT = 2**63 - 1  # SQLite's integer range: anything larger cannot be stored anyway
MAX_TEXT = 1024
# \Z, never $: `$` also matches before a trailing newline, so "123\n" would pass.
ACCOUNT = re.compile(r"^[0-9]{1,20}\Z")
GOVERNORATE = re.compile(r"^[A-Z]{3}\Z")
CYCLE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])\Z")
BILL_ID = re.compile(r"^[A-Z]{3}-[0-9]{4}-(0[1-9]|1[0-2])-[0-9]{1,20}\Z")

_INT_AT = tuple(i for i, f in enumerate(FIELDS) if f in INT_FIELDS)
_STR_AT = tuple(i for i, f in enumerate(FIELDS) if f not in INT_FIELDS)
_BILL_ID, _ACCOUNT, _GOV, _CYCLE = (
    FIELDS.index(f) for f in ("bill_id", "account", "governorate", "cycle")
)


class BadBill(ProtocolError):
    """A bill that breaks the schema; the message names the field."""

    code = "bad_bill"


def bill_id(governorate: str, cycle: str, account: str) -> str:
    return f"{governorate}-{cycle}-{account}"


def validate(raw: Mapping[str, Any], where: str = "bill") -> tuple[Any, ...]:
    """The bill as a row in FIELDS order; raises BadBill naming the field.

    Runs for every bill of a million-bill bootstrap: the happy path is a few type checks,
    and the messages are built only on failure. Keys other than FIELDS are the caller's
    business (the wire decoder refuses them; a stored row has none).
    """
    if not isinstance(raw, Mapping):
        raise BadBill(f"{where} must be a map")
    row: tuple[Any, ...] = tuple(raw.get(field) for field in FIELDS)
    for i in _INT_AT:
        value = row[i]
        # type() and not isinstance(): True is an int to Python but never a number here.
        if type(value) is not int or not 0 <= value <= MAX_INT:
            raise BadBill(f"{where}.{FIELDS[i]} must be an integer in [0, 2^63-1]")
    for i in _STR_AT:
        value = row[i]
        if type(value) is not str or len(value) > MAX_TEXT:
            raise BadBill(f"{where}.{FIELDS[i]} must be a string of at most {MAX_TEXT} characters")
    for i, pattern in (
        (_BILL_ID, BILL_ID),
        (_ACCOUNT, ACCOUNT),
        (_GOV, GOVERNORATE),
        (_CYCLE, CYCLE),
    ):
        if not pattern.match(row[i]):
            raise BadBill(f"{where}.{FIELDS[i]} is not well formed: {row[i][:80]!r}")
    return row


def as_map(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(FIELDS, row, strict=True))
