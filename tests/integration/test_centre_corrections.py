"""Void, refund and retarget entries at the reference centre (real server, on
SQLite and on PostgreSQL).

Each decision of sync/centre/corrections.py: a void reverses an applied payment (in the same
batch or a later one) and a second void of it is refused; voids of credited, rejected,
unknown or another node's payments are refused and change nothing; a refund is recorded
only for a rejected payment; a retarget is a payment of the same money. A resent chain
changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from test_centre import ALEPPO, PAID, UNPAID, Centre, Chain, bid, centre, centre_settings  # noqa: F401

import outbox
from sync.protocol import WireEntry

pytestmark = pytest.mark.both_stores


def correct(chain: Chain, kind: str, target: WireEntry, **over: Any) -> WireEntry:
    """A void or refund of `target` as a node writes it (edge.corrections)."""
    paid = msgpack.unpackb(target.payload)
    payload = {
        "payment_id": target.id, "bill_id": paid["bill_id"], "account": paid["account"],
        "amount": paid["amount"], "reason": "typed wrong", "by": "super-1",
        "at": "2026-06-01T09:00:00.000Z",
    }  # fmt: skip
    payload.update(over)
    return chain.add(kind, msgpack.packb(payload, use_bin_type=True))


def retarget(chain: Chain, target: WireEntry, account: str) -> WireEntry:
    """A payment of `target`'s money to `account`'s bill, linked to it (edge.corrections)."""
    eid = outbox.new_entry_id(chain.node)
    payload = {
        "payment_id": eid, "bill_id": bid(account), "account": account,
        "amount": msgpack.unpackb(target.payload)["amount"], "channel": "counter-1",
        "idempotency_key": "r", "method": "cash", "cashier": "c1",
        "accepted_at": "2026-06-01T09:00:00.000Z", "receipt": "DAM-DAM1-20260601-000009",
        "original": target.id, "reason": "right bill", "by": "ops",
    }  # fmt: skip
    return chain.add("retarget", msgpack.packb(payload, use_bin_type=True), eid)


def verdicts(reply: Any) -> list[tuple[str, str | None]]:
    return [(r.verdict, r.reason) for r in reply.results]


async def test_voids_reverse_applied_payments_once_and_refuse_the_rest(centre: Centre) -> None:  # noqa: F811
    chain = Chain()
    first = chain.pay(UNPAID, 30_000)
    correct(chain, "void", first)  # in the same batch: applied, then reversed
    correct(chain, "void", first)  # a second void of it
    credited = chain.pay(PAID, 10_000)  # the bill is paid: all credit
    correct(chain, "void", credited)
    wrong = chain.pay("0999999999", 5_000)  # no such bill: rejected
    correct(chain, "void", wrong)
    correct(chain, "void", first, amount=1)  # does not match the payment
    reply = await centre.send(chain.entries)
    assert verdicts(reply) == [
        ("applied", None), ("applied", None), ("rejected", "already_voided"),
        ("credited", None), ("rejected", "payment_credited"),
        ("rejected", "unknown_bill"), ("rejected", "payment_rejected"),
        ("rejected", "bad_payload"),
    ]  # fmt: skip
    assert reply.results[1].version == 3  # the payment's version 2, then the reversal's
    assert ((await centre.bill(UNPAID))["paid"], (await centre.bill(UNPAID))["version"]) == (0, 3)
    assert [r[5] for r in (await centre.ledger())][:2] == ["applied", "reversed"]
    # A later batch: pay again, void it there.
    later = chain.pay(UNPAID, 20_000)
    again = await centre.send(chain.entries[-1:])
    assert verdicts(again) == [("applied", None)]
    correct(chain, "void", later)
    assert verdicts(await centre.send(chain.entries[-1:])) == [("applied", None)]
    assert ((await centre.bill(UNPAID))["paid"], (await centre.bill(UNPAID))["version"]) == (0, 5)
    # The whole chain again: nothing changes, the first verdicts are repeated.
    before = await centre.ledger()
    resent = await centre.send(chain.entries)
    assert [r.verdict for r in resent.results] == [
        "duplicate", "duplicate", "rejected", "duplicate", "rejected", "rejected", "rejected",
        "rejected", "duplicate", "duplicate",
    ]  # fmt: skip
    assert (await centre.ledger()) == before
    assert ((await centre.bill(UNPAID))["paid"], (await centre.bill(UNPAID))["version"]) == (0, 5)


async def test_refund_and_retarget_only_of_rejected_payments(centre: Centre) -> None:  # noqa: F811
    chain = Chain()
    applied = chain.pay(UNPAID, 10_000)
    lost = chain.pay("0999999999", 20_000)
    moved = chain.pay("0999999998", 15_000)
    correct(chain, "refund", applied)  # not rejected
    correct(chain, "refund", lost)
    correct(chain, "refund", lost)  # twice
    foreign = Chain(node="ale-1")
    alien = foreign.pay(ALEPPO, 1_000, gov="ALE")
    correct(chain, "void", alien)  # another node's payment: unknown here
    reply = await centre.send(chain.entries)
    assert verdicts(reply) == [
        ("applied", None), ("rejected", "unknown_bill"), ("rejected", "unknown_bill"),
        ("rejected", "not_rejected"), ("applied", None), ("rejected", "already_resolved"),
        ("rejected", "unknown_payment"),
    ]  # fmt: skip
    rows = await centre.ledger()
    assert [(r[3], r[4], r[5]) for r in rows][4] == (bid("0999999999"), 20_000, "refunded")
    new = retarget(chain, moved, UNPAID)
    reply = await centre.send(chain.entries[-1:])
    assert verdicts(reply) == [("applied", None)]
    assert (await centre.bill(UNPAID))["paid"] == 25_000
    again = retarget(chain, moved, UNPAID)  # a second retarget of the same payment
    reply = await centre.send(chain.entries[-1:])
    assert verdicts(reply) == [("rejected", "already_resolved")]
    assert (await centre.bill(UNPAID))["paid"] == 25_000
    assert [r[0] for r in (await centre.ledger())][-2:] == [new.id, again.id]
