"""Finding payments: the filters of GET /v1/payments and `edge payments list`, one query.

Newest first by local seq (never wall time) and keyset-paged: the cursor is the seq of the
last row shown, so payments taken while a client pages land before its first page, never in
a later one (no duplicate, no gap). Every filter is an index range (edge.0007).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import outbox
from edge import actions, errors, mirror, payments, text
from sync.receiptcode import RECEIPT

_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_NUMBER = re.compile(r"^[0-9]{1,19}\Z")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
PARAMS = ("receipt", "account", "bill_id", "cashier", "day", "state", "limit", "after")


@dataclass(frozen=True)
class Filters:
    """What to find. `channel` is not a client's filter but its scope (None: every channel)."""

    receipt: str | None = None
    account: str | None = None
    bill_id: str | None = None
    cashier: str | None = None
    day: str | None = None  # YYYYMMDD, as in the receipt
    state: str | None = None
    channel: str | None = None
    limit: int = DEFAULT_LIMIT
    after: int | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next: str | None  # the cursor for the next page; None: this was the last

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next": self.next}


def _bad(name: str, why: str) -> errors.InvalidQuery:
    return errors.InvalidQuery(f"{name}: {why}")


def parse(params: Iterable[tuple[str, str]], channel: str | None) -> Filters:
    """Filters from query parameters; 400 invalid_query names the first bad one."""
    seen: dict[str, str] = {}
    for name, value in params:
        if name not in PARAMS:
            raise _bad(name[:40], f"unknown parameter; known: {', '.join(PARAMS)}")
        if name in seen:
            raise _bad(name, "given twice")
        seen[name] = value
    out: dict[str, Any] = {"channel": channel}
    if "receipt" in seen:
        if not RECEIPT.match(seen["receipt"]):
            raise _bad("receipt", "a receipt like DAM-20261201-000003 or DAM-DAM1-20261201-000003")
        out["receipt"] = seen["receipt"]
    if "account" in seen:
        if not mirror.ACCOUNT.match(seen["account"]):
            raise _bad("account", "an account number of 1-20 digits")
        out["account"] = seen["account"]
    if "bill_id" in seen:
        if not mirror.BILL_ID.match(seen["bill_id"]):
            raise _bad("bill_id", "a bill id like DAM-2026-05-0100234567")
        out["bill_id"] = seen["bill_id"]
    if "cashier" in seen:
        cashier = seen["cashier"]
        if not text.acceptable(cashier, max_chars=payments.CASHIER_MAX):
            raise _bad("cashier", "a cashier's name of 1-64 characters")
        out["cashier"] = cashier
    if "day" in seen:
        out["day"] = _day(seen["day"])
    if "state" in seen:
        if seen["state"] not in payments.STATES:
            raise _bad("state", f"one of {', '.join(payments.STATES)}")
        out["state"] = seen["state"]
    if "limit" in seen:
        limit = int(seen["limit"]) if _NUMBER.match(seen["limit"]) else 0
        if not 1 <= limit <= MAX_LIMIT:
            raise _bad("limit", f"a whole number from 1 to {MAX_LIMIT}")
        out["limit"] = limit
    if "after" in seen:
        after = int(seen["after"]) if _NUMBER.match(seen["after"]) else 0
        if not 1 <= after < 2**63:
            raise _bad("after", "the `next` cursor of an earlier page")
        out["after"] = after
    return Filters(**out)


def _day(value: str) -> str:
    try:
        if not _DAY.match(value):
            raise ValueError
        return date.fromisoformat(value).strftime("%Y%m%d")
    except ValueError:
        raise _bad("day", "a local day YYYY-MM-DD (node.timezone)") from None


def _selective(f: Filters) -> tuple[str | None, ...]:
    return (f.receipt, f.account, f.bill_id, f.cashier, f.day)


def _by_entry(f: Filters) -> bool:
    """Walk the state's partial index (edge.0007) rather than a payments index: when the
    state is the only selective filter (the channel is not: it is most of a node)."""
    return f.state is not None and all(v is None for v in _selective(f))


def where(f: Filters) -> tuple[str, list[Any]]:
    """The WHERE clause over payments `p` joined to their entries `o`, and its parameters."""
    terms: list[str] = []
    args: list[Any] = []
    if f.receipt is not None:
        terms.append("p.receipt = ?")
        args.append(f.receipt)
    if f.bill_id is not None:
        # The account leads payments_account; it is the bill id's last part.
        terms.append("p.account = ? AND p.bill_id = ?")
        args += [f.bill_id.rsplit("-", 1)[1], f.bill_id]
    if f.account is not None:
        terms.append("p.account = ?")
        args.append(f.account)
    if f.cashier is not None:
        terms.append("p.cashier = ?")
        args.append(f.cashier)
    if f.day is not None:
        terms.append("substr(p.receipt, -15, 8) = ?")  # the expression payments_day indexes
        args.append(f.day)
    by_entry = _by_entry(f)
    if f.channel is not None:
        # The channel is most of a node's payments: its index serves it only alone. Beside
        # any other filter, unary plus checks it row by row, so the planner keeps to that
        # filter's range (it would rather walk a counter's whole year in seq order).
        alone = f.state is None and all(v is None for v in _selective(f))
        terms.append("p.channel = ?" if alone else "+p.channel = ?")
        args.append(f.channel)
    if f.state is not None:
        terms.append(payments.STATE_SQL[f.state])  # a literal from our table, never input
    if f.after is not None:
        terms.append("o.seq < ?" if by_entry else "p.seq < ?")
        args.append(f.after)
    return (" WHERE " + " AND ".join(terms)) if terms else "", args


def sql(f: Filters) -> tuple[str, list[Any]]:
    """The seqs of one page (one more than the limit: whether another page follows)."""
    clause, args = where(f)
    # o.seq = p.seq, but the planner only walks an index backwards for the column it orders by.
    order = "o.seq" if _by_entry(f) else "p.seq"
    query = (
        f"SELECT p.seq FROM payments p JOIN {outbox.TABLE} o ON o.seq = p.seq{clause}"
        f" ORDER BY {order} DESC LIMIT ?"
    )
    return query, [*args, f.limit + 1]


def search(conn: sqlite3.Connection, f: Filters) -> Page:
    query, args = sql(f)
    seqs = [int(row[0]) for row in conn.execute(query, args)]
    more = len(seqs) > f.limit
    seqs = seqs[: f.limit]
    entries = outbox.get_many(conn, seqs)
    taken = payments.by_seq(conn, seqs)
    acted = actions.on_payments(conn, seqs)
    items = [payments.document(entries[s], taken[s], acted.get(s)) for s in seqs]
    return Page(items, str(seqs[-1]) if more and seqs else None)


def by_receipt(
    conn: sqlite3.Connection, receipt: str, channel: str | None
) -> dict[str, Any] | None:
    """The payment with this receipt, if `channel` may see it (None: any channel)."""
    page = search(conn, Filters(receipt=receipt, channel=channel, limit=1))
    return page.items[0] if page.items else None
