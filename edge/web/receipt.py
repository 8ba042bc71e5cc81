"""The printable receipt route: `GET /v1/payments/{id}/receipt?format=html|text&paper=...`.

HTML is one self-contained page (inline CSS, the QR as inline SVG, nothing fetched), Arabic
first and right to left with English beside, sized by `@page` for the chosen paper.
"""

from __future__ import annotations

import html

import segno
from aiohttp import web

from edge import errors, mirror, receipts
from edge.node import NODE
from edge.web.audit import RECEIPT_READ, audited
from edge.web.cashier import readable_payment

routes = web.RouteTableDef()
FORMATS = ("html", "text")
QUERY = {"format", "paper"}
# Paper width and the body's width on it; a4 keeps a receipt-sized block at the top.
PAGES = {"80mm": ("80mm auto", "72mm", "12px"), "58mm": ("58mm auto", "50mm", "10px"),
         "a4": ("A4", "120mm", "14px")}  # fmt: skip
STATES_AR = {"pending_sync": "بانتظار الإرسال", "synced": "مسجّلة لدى المركز",
             "credited": "رصيد للمشترك", "rejected": "مرفوضة"}  # fmt: skip

CSS = """
@page { size: %(page)s; margin: 3mm; }
* { box-sizing: border-box; }
body { margin: 0 auto; padding: 2mm 0; width: %(width)s; font: %(font)s/1.35 "DejaVu Sans",
  "Noto Naskh Arabic", Tahoma, sans-serif; color: #000; background: #fff; }
h1 { font-size: 1.3em; margin: 0; }
.en { direction: ltr; unicode-bidi: isolate; color: #222; font-size: .8em; font-weight: normal; }
.head, .number, .qr, .foot { text-align: center; }
.head { border-bottom: 1px dashed #000; padding-bottom: 1.5mm; }
.number { font-size: 1.15em; font-weight: bold; direction: ltr; margin: 1.5mm 0 0; }
table { width: 100%%; border-collapse: collapse; margin: 1.5mm 0; }
td { padding: .5mm 0; vertical-align: top; }
td.l { width: 28%%; }
td.l .en { display: block; text-align: right; }
td.v { font-weight: 600; font-size: .95em; direction: ltr; unicode-bidi: isolate;
  text-align: right; overflow-wrap: anywhere; }
td.v.ar { direction: rtl; }
tr.total td { border-top: 1px dashed #000; padding-top: 1mm; font-size: 1.25em; }
.mono { font: .72em/1.3 "DejaVu Sans Mono", monospace; direction: ltr; overflow-wrap: anywhere;
  text-align: center; }
.qr svg { width: 62%%; height: auto; }
.foot { font-size: .85em; border-top: 1px dashed #000; padding-top: 1mm; margin-top: 1mm; }
@media print { body { width: auto; } }
"""


def _row(ar: str, value: str, en: str, *, arabic_value: bool = False) -> str:
    cls = "v ar" if arabic_value else "v"
    return (
        f'<tr><td class="l">{html.escape(ar)}<span class="en">{html.escape(en)}</span></td>'
        f'<td class="{cls}">{html.escape(value)}</td></tr>'
    )


def page(r: receipts.Receipt, paper: str = "80mm") -> str:
    """The whole receipt as one HTML document (UTF-8), nothing to fetch."""
    size, width, font = PAGES[paper]
    amount = f"{receipts.syp(r.amount)} SYP"
    rows = "".join([
        _row("المركز", f"{r.node} ({r.node_code})", "Node"),
        _row("الفاتورة", r.bill_id, "Bill"),
        _row("الحساب", r.account, "Account"),
        _row("المشترك", r.subscriber or "-", "Subscriber", arabic_value=True),
        _row("طريقة الدفع", f"{receipts.METHODS_AR.get(r.method, r.method)} ({r.method})",
             "Method", arabic_value=True),
        _row("أمين الصندوق", r.cashier, "Cashier", arabic_value=True),
        _row("الوقت", f"{r.local_time} ({r.timezone})", "Time"),
        _row("الحالة", f"{STATES_AR.get(r.state, r.state)} ({r.state})", "State",
             arabic_value=True),
        f'<tr class="total"><td class="l">المبلغ<span class="en">Amount</span></td>'
        f'<td class="v">{amount}</td></tr>',
    ])  # fmt: skip
    if r.qr:
        svg = segno.make(r.qr, error="m").svg_inline(scale=4, border=2, omitsize=True)
        qr = (
            f'<div class="qr">{svg}</div><div class="mono">{html.escape(r.qr)}</div>'
            '<div class="foot">امسح الرمز للتحقق من الإيصال لدى المركز'
            '<div class="en">Scan to verify this receipt at the centre</div></div>'
        )
    else:
        qr = (
            '<div class="foot">لا رمز تحقق: العقدة غير مرتبطة بمركز'
            '<div class="en">No verification code: this node has no centre</div></div>'
        )
    return (
        '<!DOCTYPE html><html lang="ar" dir="rtl"><head><meta charset="utf-8">'
        f"<title>{html.escape(r.receipt)}</title>"
        '<meta name="viewport" content="width=device-width">'
        f"<style>{CSS % {'page': size, 'width': width, 'font': font}}</style></head><body>"
        f'<div class="head"><h1>كهرباء {html.escape(r.governorate_ar)}</h1>'
        f'<div class="en">{html.escape(r.governorate_en)} electricity</div>'
        '<div>إيصال دفع <span class="en">Payment receipt</span></div>'
        f'<div class="number">{html.escape(r.receipt)}</div></div>'
        f"<table>{rows}</table>"
        f'<div class="mono">رقم الدفعة / Payment id<br>{html.escape(r.payment_id)}</div>'
        f"{qr}</body></html>"
    )


@routes.get("/v1/payments/{payment_id}/receipt")
@audited(RECEIPT_READ)
async def payment_receipt(request: web.Request) -> web.Response:
    found = readable_payment(request)  # the same scope and lookup as reading the payment
    node = request.app[NODE]
    unknown = set(request.query) - QUERY
    if unknown:
        raise errors.InvalidQuery(f"unknown parameter(s): {', '.join(sorted(unknown))[:80]}")
    fmt = request.query.get("format", "html")
    paper = request.query.get("paper", "80mm")
    if fmt not in FORMATS:
        raise errors.InvalidQuery("format must be html or text")
    if paper not in receipts.PAPERS:
        raise errors.InvalidQuery(f"paper must be one of {', '.join(receipts.PAPERS)}")
    view = node.db.read(lambda c: mirror.bill(c, found["bill_id"]))
    keyring = node.replication.keyring
    receipt = receipts.build(
        found, "" if view is None else view.name, node.settings,
        None if keyring is None else keyring(),
    )  # fmt: skip
    if fmt == "text":
        return web.Response(text=receipts.text(receipt, paper), content_type="text/plain")
    return web.Response(
        text=page(receipt, paper),
        content_type="text/html",
        # Inline styles only, nothing fetched: a strict policy costs nothing here.
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline';"
                 " img-src data:", "Cache-Control": "no-store"},
    )  # fmt: skip
