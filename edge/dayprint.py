"""The day's close as a spreadsheet (CSV) and as a printable A4 page (Arabic, RTL).

Both render edge.dayreport's numbers and nothing else, so the JSON, the CSV and the page
always agree. Money is edge.receipts.syp's (SYP with thousands separators).
"""

from __future__ import annotations

import csv
import html
import io
from typing import Any

from edge.dayreport import NAMES, DayReport, net
from edge.receipts import syp

# Excel reads a CSV without a byte-order mark in the machine's ANSI code page, which turns
# Arabic names into mojibake; with the UTF-8 BOM it opens them correctly. Other tools
# (LibreOffice, Python's csv with encoding="utf-8-sig") skip it.
BOM = "\ufeff"
CSV_KEYS = ("channel", "cashier", "method", "kind")
LABELS_AR = {
    "taken": "المقبوض", "pending": "بانتظار الإرسال", "delivered": "مُسلَّم", "credited": "رصيد",
    "rejected": "مرفوض", "voided": "ملغى", "refunded": "مُعاد", "retargeted": "محوَّل", "moved_in": "محوَّل إليه",
}  # fmt: skip
KEYS_AR = {"channel": "القناة", "cashier": "أمين الصندوق", "method": "طريقة الدفع",
           "kind": "النوع"}  # fmt: skip
METHODS_AR = {"cash": "نقداً", "card": "بطاقة", "transfer": "تحويل"}


def csv_text(report: DayReport) -> str:
    """One row per group and a last `TOTAL` row; counts and amounts (piastres) per figure."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    figures = [f"{name}_{part}" for name in NAMES for part in ("count", "amount")]
    writer.writerow(["day", *CSV_KEYS, *figures, "first_receipt", "last_receipt"])
    day = report.day.isoformat()
    for row in report.rows:
        writer.writerow([day, *(row[k] for k in CSV_KEYS), *_cells(row)])
    writer.writerow([day, "TOTAL", "", "", "", *_cells(report.totals)])
    return BOM + out.getvalue()


def _cells(figures: dict[str, Any]) -> list[Any]:
    cells: list[Any] = []
    for name in NAMES:
        cells += [figures[name]["count"], figures[name]["amount"]]
    return [*cells, figures["first_receipt"] or "", figures["last_receipt"] or ""]


_STYLE = """
@page { size: A4; margin: 15mm; }
body { font-family: "Noto Naskh Arabic", "DejaVu Sans", sans-serif; font-size: 10pt; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #444; padding: 2px 4px; }
td.n, td.id { direction: ltr; unicode-bidi: embed; white-space: nowrap; }
td.n { text-align: left; }
tr.total td { font-weight: bold; }
.sign { margin-top: 25mm; display: flex; justify-content: space-between; }
.sign div { border-top: 1px solid #000; width: 70mm; padding-top: 2mm; text-align: center; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _money_cells(figures: dict[str, Any]) -> str:
    cells = []
    for name in ("taken", "voided", "refunded", "pending", "delivered", "credited", "rejected"):
        fig = figures[name]
        cells.append(f'<td class="n">{fig["count"]}</td><td class="n">{syp(fig["amount"])}</td>')
    return "".join(cells)


def html_page(report: DayReport, governorate_ar: str) -> str:
    """The A4 page a cashier signs at the end of a shift: every group, the totals, the day's
    first and last receipt, and signature lines."""
    names = ("taken", "voided", "refunded", "pending", "delivered", "credited", "rejected")
    head = "".join(f'<th colspan="2">{_e(LABELS_AR[n])}</th>' for n in names)
    sub = "<th>العدد</th><th>المبلغ (ل.س)</th>" * len(names)
    keys = "".join(f'<th rowspan="2">{_e(KEYS_AR[k])}</th>' for k in CSV_KEYS)
    body = []
    for row in report.rows:
        method = METHODS_AR.get(row["method"], row["method"])
        body.append(
            f'<tr><td class="id">{_e(row["channel"])}</td><td>{_e(row["cashier"])}</td>'
            f'<td>{_e(method)}</td><td class="id">{_e(row["kind"])}</td>{_money_cells(row)}</tr>'
        )
    t = report.totals
    body.append(f'<tr class="total"><td colspan="4">المجموع</td>{_money_cells(t)}</tr>')
    first, last = t["first_receipt"] or "-", t["last_receipt"] or "-"
    return f"""<!DOCTYPE html>
<html lang="ar" dir="rtl">
<head><meta charset="utf-8"><title>إغلاق اليوم {_e(report.day.isoformat())}</title>
<style>{_STYLE}</style></head>
<body>
<h1>إغلاق اليوم: كهرباء {_e(governorate_ar)}</h1>
<p>العقدة <bdi>{_e(report.node)}</bdi> &middot; اليوم <bdi>{_e(report.day.isoformat())}</bdi>
({_e(report.timezone)}) &middot; أُعدّ في <bdi>{_e(report.as_dict()["generated_at"])}</bdi></p>
<p>أول إيصال <bdi>{_e(first)}</bdi> &middot; آخر إيصال <bdi>{_e(last)}</bdi></p>
<table>
<thead><tr>{keys}{head}</tr><tr>{sub}</tr></thead>
<tbody>
{"".join(body)}
</tbody>
</table>
<p>صافي النقد (المقبوض ناقص الملغى والمُعاد والمحوَّل إليه):
<bdi>{syp(net(t))}</bdi> ل.س</p>
<div class="sign"><div>توقيع أمين الصندوق</div><div>توقيع المشرف</div></div>
</body>
</html>
"""
