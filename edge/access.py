"""Who may do what: the one definition of what each token scope allows (DESIGN 6.3).

No scope implies another. `inquire` reads bills, `pay` takes payments, `admin` runs the node
(replay, the rejected list), `audit` reads every channel's payments (and the audit log).
Clearing's reports (the day's close, reconciliation's result) are for `audit` or `admin`.
"""

from __future__ import annotations

from edge.tokens import Client

# Any of these reads payments; only `audit` reads other channels' (see payment_channel).
READ_PAYMENTS = ("inquire", "pay", "audit")
# The day's close and reconciliation: totals of every channel, no subscriber's data.
REPORTS = ("audit", "admin")


def has_any(client: Client, scopes: tuple[str, ...]) -> bool:
    return not client.scopes.isdisjoint(scopes)


def payment_channel(client: Client) -> str | None:
    """The one channel whose payments `client` may read; None means every channel (audit).

    Routes that list payments filter on this; a single payment of another channel answers
    exactly like an unknown one, so ids cannot be probed across counters.
    """
    return None if "audit" in client.scopes else client.name


def may_read_payment(client: Client, channel: str) -> bool:
    wanted = payment_channel(client)
    return has_any(client, READ_PAYMENTS) and (wanted is None or wanted == channel)
