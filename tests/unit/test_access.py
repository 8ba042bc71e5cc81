"""The scope policy (edge/access.py): no scope implies another; payments by channel."""

from __future__ import annotations

import pytest

from edge import access
from edge.tokens import Client


def client(*scopes: str, name: str = "counter-1") -> Client:
    return Client(name, frozenset(scopes))


@pytest.mark.parametrize(
    ("scopes", "wanted", "allowed"),
    [
        (("admin",), ("pay",), False),
        (("admin",), ("inquire",), False),
        (("admin",), ("admin",), True),
        (("pay",), ("inquire",), False),
        (("inquire",), ("pay",), False),
        (("audit",), ("pay",), False),
        (("audit",), ("admin",), False),
        (("inquire", "pay"), ("pay",), True),
        (("pay",), access.READ_PAYMENTS, True),
        (("admin",), access.READ_PAYMENTS, False),
    ],
)
def test_a_scope_allows_only_itself(
    scopes: tuple[str, ...], wanted: tuple[str, ...], allowed: bool
) -> None:
    assert access.has_any(client(*scopes), wanted) is allowed


def test_counters_read_only_their_own_channel() -> None:
    for scopes in (("pay",), ("inquire",), ("inquire", "pay")):
        me = client(*scopes)
        assert access.payment_channel(me) == "counter-1"
        assert access.may_read_payment(me, "counter-1")
        assert not access.may_read_payment(me, "counter-2")


def test_audit_reads_every_channel_and_admin_none() -> None:
    auditor = client("audit", name="audit-1")
    assert access.payment_channel(auditor) is None
    assert access.may_read_payment(auditor, "counter-1")
    assert access.may_read_payment(auditor, "counter-2")
    # An admin token named like a channel still reads nothing: admin is not a reading scope.
    assert not access.may_read_payment(client("admin", name="counter-1"), "counter-1")
