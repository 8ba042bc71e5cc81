"""What the centre's codes mean, in English and Arabic: every verdict reason and every refusal
or link-failure code a node can meet (the node's own problem codes carry theirs in edge.errors).

The dashboard shows these by code; tests/unit/test_error_texts.py fails when a code the sync
package can emit has no entry here.
"""

from __future__ import annotations

# code -> (English, Arabic). Arabic as a Syrian operator reads it: short, no jargon beyond the
# config key to change (kept in Latin letters; the dashboard isolates it as left-to-right).
REASONS: dict[str, tuple[str, str]] = {
    # Verdict reasons: why the centre rejected one entry (a payment, void, reading, request).
    "bad_payload": ("The centre could not read the entry's content",
                    "تعذّر على المركز قراءة محتوى العملية"),
    "unknown_kind": ("The centre does not know this kind of entry",
                     "نوع العملية غير معروف لدى المركز"),
    "unknown_bill": ("The centre has no such bill", "الفاتورة غير موجودة لدى المركز"),
    "unknown_account": ("The centre has no such account", "رقم الاشتراك غير موجود لدى المركز"),
    "unknown_payment": ("The centre has no such payment", "الدفعة غير موجودة لدى المركز"),
    "governorate_mismatch": ("The bill belongs to another governorate",
                             "الفاتورة تتبع محافظة أخرى"),
    "account_mismatch": ("The bill does not belong to this account",
                         "الفاتورة لا تخص هذا الاشتراك"),
    "amount_implausible": ("The amount is not plausible for this bill",
                           "المبلغ غير معقول لهذه الفاتورة"),
    "credit_over_cap": ("The overpayment is more credit than a subscriber may hold",
                        "الزيادة تتجاوز الرصيد المسموح به للمشترك"),
    "already_voided": ("The payment is voided already at the centre",
                       "الدفعة ملغاة مسبقاً لدى المركز"),
    "already_resolved": ("The rejected payment is resolved already",
                         "عولجت الدفعة المرفوضة مسبقاً"),
    "payment_rejected": ("The centre rejected this payment: refund or retarget it, do not void it",
                         "رفض المركز هذه الدفعة: تُعالج باسترداد أو تحويل، لا بالإلغاء"),
    "payment_credited": ("The payment became the subscriber's credit; the centre corrects it",
                         "أصبحت الدفعة رصيداً للمشترك؛ يصحّحها المركز"),
    "not_rejected": ("Only a payment the centre rejected can be refunded or retargeted",
                     "لا يُسترد أو يُحوَّل إلا ما رفضه المركز"),
    "reversal_failed": ("The centre cannot void it: the bill shows less paid than this payment",
                        "تعذّر على المركز الإلغاء: المدفوع على الفاتورة أقل من مبلغ هذه الدفعة"),
    "fine_mismatch": ("Counted, but the centre split the late fine differently from the node",
                      "احتُسبت الدفعة، لكن المركز وزّع غرامة التأخير بخلاف حساب الخادم"),
    "meter_not_on_account": ("The meter does not belong to this account",
                             "العداد لا يخص هذا الاشتراك"),
    "reading_below_last": ("The reading is below the meter's last reading",
                           "القراءة أقل من آخر قراءة للعداد"),
    # Refusals of a whole request: nothing was recorded; most need an operator.
    "chain_broken": ("The centre holds other entries at these sequence numbers (a restored"
                     " backup?): see chain_broken in deploy/README.md",
                     "لدى المركز عمليات أخرى بأرقام التسلسل نفسها (بعد استعادة نسخة احتياطية؟):"
                     " راجع chain_broken في دليل التشغيل"),
    "chain_gap": ("Entries before these are missing at the centre: see chain_gap in"
                  " deploy/README.md",
                  "عمليات سابقة لهذه مفقودة لدى المركز: راجع chain_gap في دليل التشغيل"),
    "receipt_code_taken": ("Another node uses this receipt code: give this node another"
                           " node.receipt_code",
                           "رمز الإيصالات هذا لعقدة أخرى: اضبط node.receipt_code مختلفاً"),
    "node_mismatch": ("The centre does not know this node under this key",
                      "المركز لا يعرف هذه العقدة بهذا المفتاح"),
    "forbidden_governorate": ("This node may not read that governorate's bills",
                              "لا يحق لهذه العقدة قراءة فواتير تلك المحافظة"),
    "unauthorized": ("The centre does not accept this node's key: check centre.secret_file",
                     "المركز لا يقبل مفتاح هذه العقدة: تحقّق من centre.secret_file"),
    "stale_timestamp": ("The node's clock is too far from the centre's; it corrects and retries",
                        "ساعة الخادم بعيدة عن ساعة المركز؛ يصحّحها ويعيد المحاولة"),
    "busy": ("The centre is busy; the node retries", "المركز مشغول؛ يعيد الخادم المحاولة"),
    "body_too_large": ("The request is larger than the centre takes",
                       "الطلب أكبر مما يقبله المركز"),
    "batch_too_large": ("The batch has more entries than the centre takes",
                        "الدفعة المرسلة تضم عمليات أكثر مما يقبله المركز"),
    "too_large": ("A list in the message is longer than allowed",
                  "قائمة في الرسالة أطول من المسموح"),
    "unsupported_media_type": ("The centre expected another content type",
                               "المركز ينتظر نوع محتوى آخر"),
    "bad_query": ("The centre refused a query parameter", "رفض المركز أحد معاملات الطلب"),
    "bad_request": ("The centre refused the request as malformed", "رفض المركز الطلب لسوء صيغته"),
    "not_found": ("No such address at the centre: check centre.url",
                  "العنوان غير موجود لدى المركز: تحقّق من centre.url"),
    "method_not_allowed": ("The centre does not take this method at this address",
                           "المركز لا يقبل هذا النوع من الطلبات على هذا العنوان"),
    "http_error": ("The centre answered with an HTTP error", "ردّ المركز بخطأ HTTP"),
    "storage_error": ("The centre cannot write to its disk; the node retries",
                      "تعذّر على المركز الكتابة على قرصه؛ يعيد الخادم المحاولة"),
    "storage_unavailable": ("The centre's database is unavailable; the node retries",
                            "قاعدة بيانات المركز غير متاحة؛ يعيد الخادم المحاولة"),
    "internal_error": ("Internal error at the centre; the node retries",
                       "خطأ داخلي لدى المركز؛ يعيد الخادم المحاولة"),
    # Failures the node finds itself on the link (sync.errors and sync.protocol codes).
    "centre_unavailable": ("The centre did not answer (network, timeout or its own error);"
                           " the node retries",
                           "لم يستجب المركز (الشبكة أو انتهاء المهلة أو خطأ لديه)؛"
                           " يعيد الخادم المحاولة"),
    "tls_untrusted": ("The centre's certificate is not trusted (authority, name or date):"
                      " check centre.ca_file and centre.url",
                      "شهادة المركز غير موثوقة (الجهة أو الاسم أو التاريخ): تحقّق من"
                      " centre.ca_file و centre.url"),
    "bad_answer": ("An answer at the centre's address was not signed by the centre: ignored",
                   "ردّ على عنوان المركز غير موقّع منه: أُهمل"),
    "bad_frame": ("A message to or from the centre was malformed",
                  "رسالة مشوّهة بين الخادم والمركز"),
    "unsupported_version": ("The centre speaks another protocol version: upgrade the node",
                            "المركز يستخدم إصداراً آخر من البروتوكول: يلزم تحديث الخادم"),
    "foreign_bill": ("The centre sent a bill of another governorate: ignored",
                     "أرسل المركز فاتورة لمحافظة أخرى: أُهملت"),
    "bad_bill": ("A bill from the centre is malformed: ignored",
                 "فاتورة مشوّهة وصلت من المركز: أُهملت"),
    "unknown": ("Something that is not the centre answered at its address (a proxy?)",
                "ردّ على عنوان المركز جهاز ليس المركز (وسيط شبكة؟)"),
    "sync_error": ("The exchange with the centre failed", "فشل التبادل مع المركز"),
    "bad_secret": ("The shared secret file cannot be used: check centre.secret_file",
                   "ملف المفتاح المشترك غير صالح: تحقّق من centre.secret_file"),
    "bad_config": ("The centre's configuration is invalid", "إعدادات المركز غير صالحة"),
    "bad_tls_config": ("A certificate, key or CA file cannot be loaded",
                       "تعذّر تحميل ملف شهادة أو مفتاح أو جهة تصديق"),
    "import_failed": ("The import cannot run; nothing was written",
                      "تعذّر الاستيراد؛ لم يُكتب شيء"),
    "transfer_refused": ("The transfer file is refused; nothing was changed",
                         "رُفض ملف النقل؛ لم يتغيّر شيء"),
}  # fmt: skip
