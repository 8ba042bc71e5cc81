"""Object properties (OWASP API3): what a payment shows and what a client may set.

A payment document names the bill and the account, never the subscriber; a client can set
only the four fields of a payment, never the node's own (channel, receipt, seq, state).
"""

from __future__ import annotations

import pytest
from nodefixtures import RunningNode
from test_api import BILL, pay, payment

# What GET /v1/payments/{id} shows: no name, no address, nothing of the subscriber's (its
# `credit` names the account and bill only).
PAYMENT_KEYS = {
    "payment_id", "receipt", "bill_id", "account", "amount", "currency", "method", "cashier",
    "channel", "accepted_at", "seq", "state", "credit", "verdict", "attempts", "last_error",
    "void", "resolution",
}  # fmt: skip


async def test_a_payment_shows_no_subscriber_data(running: RunningNode) -> None:
    status, body, headers = await pay(running, payment(10_000), "exp-1")
    assert status == 201, body
    async with running.session.get(
        f"{running.url}{headers['Location']}", headers=running.headers()
    ) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert set(got) == PAYMENT_KEYS
    text = str(got) + str(body)
    for bill in running.node.db.read(
        lambda c: c.execute("SELECT name, address FROM bills WHERE bill_id = ?", (BILL,)).fetchall()
    ):
        assert bill[0] not in text and bill[1] not in text


@pytest.mark.parametrize(
    "field", [("channel", "counter-2"), ("receipt", "DAM-X-20260101-000001"), ("seq", 1),
              ("state", "synced"), ("payment_id", "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C")],
)  # fmt: skip
async def test_a_client_cannot_set_the_nodes_own_fields(
    running: RunningNode, field: tuple[str, object]
) -> None:
    before = running.db_counts()
    status, body, _ = await pay(running, payment(10_000) | dict([field]), f"exp-{field[0]}")
    assert (status, body["code"]) == (400, "invalid_body")
    assert field[0] in body["detail"]
    assert running.db_counts() == before
