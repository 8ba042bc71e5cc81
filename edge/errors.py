"""The node's errors: one root; each HTTP-facing error declares its status, code and titles.

One middleware (edge.problems) renders any `ApiError` as problem+json with Arabic and
English text; the code is stable and is what clients should branch on.
"""

from __future__ import annotations

from typing import ClassVar


class EdgeError(Exception):
    """Root of every error the edge package raises."""


class ConfigError(EdgeError):
    """The configuration is invalid; the message names the key."""


class DatabaseError(EdgeError):
    """The database cannot be opened or migrated; the node refuses to start."""


class ApiError(EdgeError):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"
    title_ar: ClassVar[str] = "طلب غير صالح"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}


def _error(status: int, code: str, title: str, title_ar: str) -> type[ApiError]:
    return type(
        "".join(part.capitalize() for part in code.split("_")),
        (ApiError,),
        {
            "status": status,
            "code": code,
            "title": title,
            "title_ar": title_ar,
            "__module__": __name__,
        },
    )


def http_error(status: int, reason: str) -> type[ApiError]:
    """An error class for an HTTP status aiohttp raised that has no code of ours."""
    return _error(status, "http_error", reason, reason)


# Request shape
MalformedJson = _error(
    400, "malformed_json", "The body is not valid JSON", "جسم الطلب ليس JSON صالحاً"
)
InvalidBody = _error(
    400, "invalid_body", "The body does not have the expected fields", "حقول الطلب غير صحيحة"
)
InvalidField = _error(
    422, "invalid_field", "A field has an invalid value", "قيمة أحد الحقول غير صالحة"
)
UnsupportedMediaType = _error(
    415,
    "unsupported_media_type",
    "The body must be application/json",
    "يجب أن يكون جسم الطلب بصيغة JSON",
)
BodyTooLarge = _error(
    413, "body_too_large", "The body is larger than 64 KiB", "جسم الطلب أكبر من 64 كيلوبايت"
)
InvalidAccount = _error(
    400,
    "invalid_account",
    "The account number must be 1-20 digits",
    "رقم الاشتراك يجب أن يتكون من 1 إلى 20 رقماً",
)
InvalidBillId = _error(
    400, "invalid_bill_id", "The bill id is not well formed", "رقم الفاتورة غير صحيح الصيغة"
)
InvalidPaymentId = _error(
    400, "invalid_payment_id", "The payment id is not well formed", "رقم الدفعة غير صحيح الصيغة"
)
InvalidQuery = _error(
    400, "invalid_query", "A query parameter is invalid", "أحد معاملات الاستعلام غير صالح"
)
NotFound = _error(404, "not_found", "No such resource", "المورد غير موجود")
MethodNotAllowed = _error(405, "method_not_allowed", "Method not allowed", "الطريقة غير مسموحة")

# Auth
Unauthorized = _error(
    401, "unauthorized", "A valid bearer token is required", "مطلوب رمز دخول صالح"
)
Forbidden = _error(
    403,
    "forbidden",
    "The token does not have the required scope",
    "الرمز لا يملك الصلاحية المطلوبة",
)

# Bills and payments
UnknownAccount = _error(
    404, "unknown_account", "No bills for this account", "لا توجد فواتير لهذا الاشتراك"
)
UnknownBill = _error(404, "unknown_bill", "No such bill", "الفاتورة غير موجودة")
UnknownPayment = _error(404, "unknown_payment", "No such payment", "الدفعة غير موجودة")
InvalidAmount = _error(
    422,
    "invalid_amount",
    "The amount must be a positive integer in piastres",
    "المبلغ يجب أن يكون عدداً صحيحاً موجباً بالقروش",
)
AmountExceedsDue = _error(
    409,
    "amount_exceeds_due",
    "The amount is more than the amount due",
    "المبلغ أكبر من المبلغ المستحق",
)
BillAlreadyPaid = _error(
    409, "bill_already_paid", "The bill is already paid", "الفاتورة مدفوعة مسبقاً"
)
IdempotencyKeyRequired = _error(
    400,
    "idempotency_key_required",
    "The Idempotency-Key header is required",
    "ترويسة Idempotency-Key مطلوبة",
)
InvalidIdempotencyKey = _error(
    400,
    "invalid_idempotency_key",
    "The Idempotency-Key must be 1-255 printable ASCII characters",
    "مفتاح عدم التكرار يجب أن يكون من 1 إلى 255 محرفاً مطبوعاً",
)
IdempotencyKeyReused = _error(
    422,
    "idempotency_key_reused",
    "This Idempotency-Key was used for a different request",
    "مفتاح عدم التكرار استُخدم لطلب مختلف",
)

# Node state
NodeShuttingDown = _error(
    503,
    "node_shutting_down",
    "The node is stopping and takes no payments now",
    "الخادم يتوقف الآن ولا يقبل الدفعات",
)
StorageFull = _error(
    507,
    "storage_full",
    "The node's disk is full; the payment was not taken",
    "قرص الخادم ممتلئ؛ لم تُقبل الدفعة",
)
StorageFailed = _error(
    507,
    "storage_error",
    "The node could not write to its disk; the payment was not taken",
    "تعذّر على الخادم الكتابة على القرص؛ لم تُقبل الدفعة",
)
NotReady = _error(503, "not_ready", "The node is not ready", "الخادم غير جاهز")
NoCentre = _error(
    409, "no_centre", "No centre is configured on this node", "لم يُضبط المركز على هذا الخادم"
)
InternalError = _error(500, "internal_error", "Internal error", "خطأ داخلي")
