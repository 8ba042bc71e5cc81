"""The audit trail on the web side: `@audited` routes record who asked, and `GET /v1/audit`.

Rows are recorded for authenticated clients only, for the statuses in KEPT, and only for a
well-formed object (DESIGN 5.10): a guess shows as a 404, and junk cannot fill the buffer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from edge import audit, errors, mirror
from edge.node import NODE
from edge.tokens import NAME
from edge.web.http import CLIENT, client_of, json_response
from outbox.ids import ENTRY_ID
from sync import receiptcode

# Read, refused for scope, not found (guessing), admin accepted or refused for state.
KEPT = frozenset({200, 202, 403, 404, 409})
# Set by a handler that learns which subscriber an object belongs to (a payment's account).
ACCOUNT = web.RequestKey("audit_account", str)
# Set by a handler whose action the body decides (a resolution: refund or retarget).
ACTION = web.RequestKey("audit_action", str)
LIMIT, MAX_LIMIT = 100, 1000

routes = web.RouteTableDef()


@dataclass(frozen=True)
class Audited:
    action: str
    param: str | None = None  # the path parameter that names the object
    pattern: re.Pattern[str] | None = None  # what a well-formed object looks like
    account_of: Callable[[str], str] | None = None
    told: bool = False  # the handler may set ACCOUNT on the request
    urgent: bool = False  # admin actions: flushed at once, not on the next tick

    def note(self, request: web.Request, status: int) -> None:
        # Runs on every audited answer: plain lookups only (a Mapping's .get() on a request
        # that lacks the key costs a raised KeyError).
        if status not in KEPT or CLIENT not in request:
            return
        obj = account = None
        if self.param is not None:
            obj = request.match_info[self.param]
            # A 200 or 404 passed the handler's own check; a 403 came before it.
            if status == 403 and self.pattern is not None and not self.pattern.match(obj):
                return
            if self.account_of is not None:
                account = self.account_of(obj)
        if self.told and ACCOUNT in request:
            account = request[ACCOUNT]
        action = self.action
        if ACTION in request:  # not .get(): see above
            action = request[ACTION]
        request.app[NODE].audit.record(
            request[CLIENT].name, request.remote or "", action, obj, account, status,
            urgent=self.urgent,
        )  # fmt: skip


def audited(spec: Audited) -> Callable[[Handler], Handler]:
    """Record `spec.action` for every answer of the handler (inside the problem middleware)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except errors.ApiError as exc:
                spec.note(request, exc.status)
                raise
            spec.note(request, response.status)
            return response

        return run

    return wrap


def account_of_bill(bill_id: str) -> str:
    return bill_id.rsplit("-", 1)[1]  # {GOV}-{YYYY}-{MM}-{account}


ACCOUNT_READ = Audited(audit.ACCOUNT_READ, "account", mirror.ACCOUNT, str)
BILL_READ = Audited(audit.BILL_READ, "bill_id", mirror.BILL_ID, account_of_bill)
PAYMENT_READ = Audited(audit.PAYMENT_READ, "payment_id", ENTRY_ID, told=True)
PAYMENT_LIST = Audited(audit.PAYMENT_LIST, told=True)  # account: the filter's, if any
PAYMENT_BY_RECEIPT = Audited(audit.PAYMENT_READ, "receipt", receiptcode.RECEIPT, told=True)
RECEIPT_READ = Audited(audit.RECEIPT_READ, "payment_id", ENTRY_ID, told=True)
ADMIN_REPLAY = Audited(audit.ADMIN_REPLAY, urgent=True)
ADMIN_REJECTED = Audited(audit.ADMIN_REJECTED, urgent=True)
PAYMENT_VOID = Audited(audit.PAYMENT_VOID, "payment_id", ENTRY_ID, told=True, urgent=True)
ADMIN_RESOLVE = Audited(audit.ADMIN_RESOLVE, "payment_id", ENTRY_ID, told=True, urgent=True)
REPORT_READ = Audited(audit.REPORT_READ)
ADMIN_RECONCILE = Audited(audit.ADMIN_RECONCILE, urgent=True)


def _query(request: web.Request) -> audit.Query:
    q = request.query
    unknown = set(q) - {"since", "until", "token", "account", "limit", "after"}
    if unknown:
        raise errors.InvalidQuery(f"unknown parameter(s): {', '.join(sorted(unknown))[:100]}")
    tz = request.app[NODE].settings.tz
    try:
        since = audit.parse_time(q["since"], tz) if "since" in q else audit.Query.since
        until = audit.parse_time(q["until"], tz, end=True) if "until" in q else audit.Query.until
    except ValueError:
        raise errors.InvalidQuery("since and until are YYYY-MM-DD or ISO 8601 times") from None
    token, account = q.get("token"), q.get("account")
    if token is not None and not NAME.match(token):
        raise errors.InvalidQuery("token is a token's name: letters, digits, '.', '_', '-'")
    if account is not None and not mirror.ACCOUNT.match(account):
        raise errors.InvalidQuery("account is 1-20 digits")
    limit, after = q.get("limit", str(LIMIT)), q.get("after", "0")
    if not re.fullmatch(r"[0-9]{1,4}", limit) or not 1 <= int(limit) <= MAX_LIMIT:
        raise errors.InvalidQuery(f"limit is 1-{MAX_LIMIT}")
    if not re.fullmatch(r"[0-9]{1,19}", after) or int(after) > audit.MAX_SEQ:
        raise errors.InvalidQuery("after is a sequence number (0 or more)")
    return audit.Query(since, until, token, account, int(after), int(limit))


@routes.get("/v1/audit")
@audited(Audited(audit.AUDIT_READ, told=True, urgent=True))
async def read_audit(request: web.Request) -> web.Response:
    client_of(request, "audit")  # admin alone may not: no scope implies another (edge/access.py)
    query = _query(request)
    if query.account is not None:
        request[ACCOUNT] = query.account  # whose trail was read is itself recorded
    rows = await request.app[NODE].db.read_slow(lambda c: list(audit.select(c, query)))
    entries = [row.as_json() for row in rows]
    full = query.limit is not None and len(entries) == query.limit
    return json_response({"entries": entries, "next_after": entries[-1]["seq"] if full else None})
