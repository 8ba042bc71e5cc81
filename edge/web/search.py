"""Finding payments over HTTP: the filtered list and the lookup by receipt (DESIGN 6.3).

Both are scoped by `access.payment_channel`: a counter's token (`inquire` or `pay`) sees
only what its channel took, an `audit` token sees every channel. The query itself is edge.paymentquery's, shared with
`edge payments list`.
"""

from __future__ import annotations

from aiohttp import web

from edge import access, errors, paymentquery
from edge.node import NODE
from edge.web import audit
from edge.web.http import client_of, json_response
from sync import receiptcode

routes = web.RouteTableDef()


@routes.get("/v1/payments")
@audit.audited(audit.PAYMENT_LIST)
async def list_payments(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client = client_of(request, *access.READ_PAYMENTS)
    filters = paymentquery.parse(request.query.items(), access.payment_channel(client))
    if filters.account is not None:
        request[audit.ACCOUNT] = filters.account  # whose payments were listed is recorded
    # Index ranges, but up to 500 documents: off the event loop.
    page = await node.db.read_slow(lambda c: paymentquery.search(c, filters))
    return json_response(page.as_dict())


@routes.get("/v1/payments/by-receipt/{receipt}")
@audit.audited(audit.PAYMENT_BY_RECEIPT)
async def payment_by_receipt(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client = client_of(request, *access.READ_PAYMENTS)
    receipt = request.match_info["receipt"]
    if not receiptcode.RECEIPT.match(receipt):
        raise errors.InvalidReceipt(
            f"{receipt[:60]!r} is not a receipt like DAM-20261201-000003 or DAM-DAM1-20261201-000003"
        )
    channel = access.payment_channel(client)
    found = node.db.read(lambda c: paymentquery.by_receipt(c, receipt, channel))
    if found is None:
        # The same answer whether it does not exist or belongs to another channel.
        raise errors.UnknownPayment(f"no payment with receipt {receipt} that this token may see")
    request[audit.ACCOUNT] = found["account"]
    return json_response(found)
