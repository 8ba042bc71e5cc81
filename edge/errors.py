"""The node's errors: one root; each HTTP-facing error declares its status, code and titles.

One middleware (edge.web.problems) renders any `ApiError` as problem+json with Arabic and
English text; the code is stable and is what clients should branch on.
"""

from __future__ import annotations

from typing import Any


class EdgeError(Exception):
    """Root of every error the edge package raises."""


class ConfigError(EdgeError):
    """The configuration is invalid; each problem (a line of the message) names the key."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DatabaseError(EdgeError):
    """The database cannot be opened or migrated; the node refuses to start."""


class ApiError(EdgeError):
    # Class attributes each error sets; HttpError alone sets status and titles per instance.
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    title_ar: str = "طلب غير صالح"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        # Extension members of the problem body (RFC 9457 3.2), e.g. which limit and its Arabic.
        self.extra = extra or {}


class HttpError(ApiError):
    """An HTTP status aiohttp raised that has no code of ours (status set per instance)."""

    code = "http_error"

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.title = self.title_ar = reason


# Request shape
class MalformedJson(ApiError):
    status = 400
    code = "malformed_json"
    title = "The body is not valid JSON"
    title_ar = "جسم الطلب ليس JSON صالحاً"


class BodyIncomplete(ApiError):
    """The connection ended (the client left, or edge.web.connections cut a slow body) mid-body."""

    status = 400
    code = "body_incomplete"
    title = "The body did not arrive in full"
    title_ar = "لم يصل جسم الطلب كاملاً"


class InvalidBody(ApiError):
    status = 400
    code = "invalid_body"
    title = "The body does not have the expected fields"
    title_ar = "حقول الطلب غير صحيحة"


class InvalidField(ApiError):
    status = 422
    code = "invalid_field"
    title = "A field has an invalid value"
    title_ar = "قيمة أحد الحقول غير صالحة"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"
    title = "The body must be application/json"
    title_ar = "يجب أن يكون جسم الطلب بصيغة JSON"


class BodyTooLarge(ApiError):
    status = 413
    code = "body_too_large"
    title = "The body is larger than 64 KiB"
    title_ar = "جسم الطلب أكبر من 64 كيلوبايت"


class InvalidAccount(ApiError):
    status = 400
    code = "invalid_account"
    title = "The account number must be 1-20 digits"
    title_ar = "رقم الاشتراك يجب أن يتكون من 1 إلى 20 رقماً"


class InvalidBillId(ApiError):
    status = 400
    code = "invalid_bill_id"
    title = "The bill id is not well formed"
    title_ar = "رقم الفاتورة غير صحيح الصيغة"


class InvalidPaymentId(ApiError):
    status = 400
    code = "invalid_payment_id"
    title = "The payment id is not well formed"
    title_ar = "رقم الدفعة غير صحيح الصيغة"


class InvalidQuery(ApiError):
    status = 400
    code = "invalid_query"
    title = "A query parameter is invalid"
    title_ar = "أحد معاملات الاستعلام غير صالح"


class InvalidReceipt(ApiError):
    status = 400
    code = "invalid_receipt"
    title = "The receipt number is not well formed"
    title_ar = "رقم الإيصال غير صحيح الصيغة"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    title = "No such resource"
    title_ar = "المورد غير موجود"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"
    title_ar = "الطريقة غير مسموحة"


# Auth
class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    title = "A valid bearer token is required"
    title_ar = "مطلوب رمز دخول صالح"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    title = "The token does not have the required scope"
    title_ar = "الرمز لا يملك الصلاحية المطلوبة"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"
    title = "Too many requests; retry after the seconds in Retry-After"
    title_ar = "طلبات كثيرة جداً؛ أعد المحاولة بعد الثواني المذكورة في Retry-After"


# Bills and payments
class UnknownAccount(ApiError):
    status = 404
    code = "unknown_account"
    title = "No bills for this account"
    title_ar = "لا توجد فواتير لهذا الاشتراك"


class UnknownBill(ApiError):
    status = 404
    code = "unknown_bill"
    title = "No such bill"
    title_ar = "الفاتورة غير موجودة"


class UnknownPayment(ApiError):
    status = 404
    code = "unknown_payment"
    title = "No such payment"
    title_ar = "الدفعة غير موجودة"


class InvalidAmount(ApiError):
    status = 422
    code = "invalid_amount"
    title = "The amount must be a positive integer in piastres"
    title_ar = "المبلغ يجب أن يكون عدداً صحيحاً موجباً بالقروش"


class AmountExceedsDue(ApiError):
    status = 409
    code = "amount_exceeds_due"
    title = "The amount is more than the amount due"
    title_ar = "المبلغ أكبر من المبلغ المستحق"


class BillAlreadyPaid(ApiError):
    status = 409
    code = "bill_already_paid"
    title = "The bill is already paid"
    title_ar = "الفاتورة مدفوعة مسبقاً"


class IdempotencyKeyRequired(ApiError):
    status = 400
    code = "idempotency_key_required"
    title = "The Idempotency-Key header is required"
    title_ar = "ترويسة Idempotency-Key مطلوبة"


class InvalidIdempotencyKey(ApiError):
    status = 400
    code = "invalid_idempotency_key"
    title = "The Idempotency-Key must be 1-255 printable ASCII characters"
    title_ar = "مفتاح عدم التكرار يجب أن يكون من 1 إلى 255 محرفاً مطبوعاً"


class IdempotencyKeyReused(ApiError):
    status = 422
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used for a different request"
    title_ar = "مفتاح عدم التكرار استُخدم لطلب مختلف"


# Corrections (void, refund, retarget: edge/corrections.py)
class AlreadyVoided(ApiError):
    status = 409
    code = "already_voided"
    title = "The payment is voided already (or is a void itself)"
    title_ar = "الدفعة ملغاة مسبقاً (أو هي إلغاء بذاتها)"


class PaymentRejected(ApiError):
    status = 409
    code = "payment_rejected"
    title = "The centre rejected this payment: resolve it (refund or retarget), do not void it"
    title_ar = "رفض المركز هذه الدفعة: تُعالج باسترداد أو تحويل، لا بالإلغاء"


class PaymentCredited(ApiError):
    status = 409
    code = "payment_credited"
    title = "The payment became the subscriber's credit at the centre; the centre corrects it"
    title_ar = "أصبحت الدفعة رصيداً للمشترك في المركز؛ يصحّحها المركز"


class VoidWindowPassed(ApiError):
    status = 409
    code = "void_window_passed"
    title = "The payment is older than the void window"
    title_ar = "انقضت مهلة إلغاء هذه الدفعة"


class NotRejected(ApiError):
    status = 409
    code = "not_rejected"
    title = "Only a payment the centre rejected can be resolved"
    title_ar = "لا تُعالج إلا دفعة رفضها المركز"


class MeterNotOnAccount(ApiError):
    status = 422
    code = "meter_not_on_account"
    title = "The meter does not belong to this account"
    title_ar = "العداد لا يخص هذا الحساب"


class ReadingBelowLast(ApiError):
    status = 409
    code = "reading_below_last"
    title = "The reading is below the meter's last known reading"
    title_ar = "القراءة أقل من آخر قراءة معروفة للعداد"


class UnknownRequest(ApiError):
    status = 404
    code = "unknown_request"
    title = "No such request"
    title_ar = "الطلب غير موجود"


class InvalidRequestId(ApiError):
    status = 400
    code = "invalid_request_id"
    title = "The request id is not valid"
    title_ar = "معرّف الطلب غير صالح"


class AlreadyResolved(ApiError):
    status = 409
    code = "already_resolved"
    title = "The rejected payment is resolved already"
    title_ar = "عولجت الدفعة المرفوضة مسبقاً"


# Node state
class NodeShuttingDown(ApiError):
    status = 503
    code = "node_shutting_down"
    title = "The node is stopping and takes no payments now"
    title_ar = "الخادم يتوقف الآن ولا يقبل الدفعات"


class OfflineLimit(ApiError):
    status = 503
    code = "offline_limit"
    title = "The node holds too much money the centre has not confirmed; no new payments now"
    title_ar = "لدى الخادم مبالغ كثيرة لم يؤكدها المركز بعد؛ لا تُقبل دفعات جديدة الآن"


class StorageFull(ApiError):
    status = 507
    code = "storage_full"
    title = "The node's disk is full; the payment was not taken"
    title_ar = "قرص الخادم ممتلئ؛ لم تُقبل الدفعة"


class StorageFailed(ApiError):
    status = 507
    code = "storage_error"
    title = "The node could not write to its disk; the payment was not taken"
    title_ar = "تعذّر على الخادم الكتابة على القرص؛ لم تُقبل الدفعة"


class MirrorBootstrapping(ApiError):
    status = 503
    code = "mirror_bootstrapping"
    title = "The node is still loading its bills from the centre; try again shortly"
    title_ar = "ما زال الخادم يحمّل الفواتير من المركز؛ أعد المحاولة بعد قليل"


class NotReady(ApiError):
    status = 503
    code = "not_ready"
    title = "The node is not ready"
    title_ar = "الخادم غير جاهز"


class NoCentre(ApiError):
    status = 409
    code = "no_centre"
    title = "No centre is configured on this node"
    title_ar = "لم يُضبط المركز على هذا الخادم"


class InternalError(ApiError):
    status = 500
    code = "internal_error"
    title = "Internal error"
    title_ar = "خطأ داخلي"


class CentreUnreachable(ApiError):
    status = 503
    code = "centre_unreachable"
    title = "The centre did not answer"
    title_ar = "لم يستجب المركز"
