"""Who may do what: the one definition of what each token scope allows (DESIGN 6.3).

No scope implies another. `inquire` reads bills, `pay` takes payments, `admin` runs the node
(replay, the rejected list and resolving it), `audit` reads every channel's payments (and the
audit log), `supervise` voids payments: a supervisor supervises every counter of the node.
Clearing's reports (the day's close, reconciliation's result) are for `audit` or `admin`.
`read_meter` takes meter readings and `request` takes and follows subscribers' requests.
"""

from __future__ import annotations

from edge.tokens import Client

# Any of these reads payments; only `audit` and `supervise` read other channels'.
READ_PAYMENTS = ("inquire", "pay", "audit", "supervise")
EVERY_CHANNEL = frozenset({"audit", "supervise"})
VOID = ("supervise",)  # the scopes that may void a payment, of any channel of this node
# The day's close and reconciliation: totals of every channel, no subscriber's data.
REPORTS = ("audit", "admin")
READ_METER = ("read_meter",)
REQUEST = ("request",)
# Routes that take a new subscriber's write draw on the payments' bucket (DESIGN 5.7): a
# flood of inquiries cannot starve them, and a flood of them is held to the writes' rate.
WRITES = frozenset({"pay", *READ_METER, *REQUEST})


def has_any(client: Client, scopes: tuple[str, ...]) -> bool:
    return not client.scopes.isdisjoint(scopes)


def payment_channel(client: Client) -> str | None:
    """The one channel whose payments `client` may read; None means every channel.

    Routes that list payments filter on this; a single payment of another channel answers
    exactly like an unknown one, so ids cannot be probed across counters.
    """
    return None if not client.scopes.isdisjoint(EVERY_CHANNEL) else client.name


def may_read_payment(client: Client, channel: str) -> bool:
    wanted = payment_channel(client)
    return has_any(client, READ_PAYMENTS) and (wanted is None or wanted == channel)
