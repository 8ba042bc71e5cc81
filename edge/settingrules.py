"""What values the node's settings may take: the ranges of its numbers, the words it knows,
and the keys that only go together (edge.config applies them, edge.preflight the files').
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outbox.ids import NODE_ID
from sync import receiptcode

GOVERNORATES = {
    "DAM": ("Damascus", "دمشق"), "RDA": ("Rural Damascus", "ريف دمشق"),
    "ALE": ("Aleppo", "حلب"), "HMS": ("Homs", "حمص"), "HAM": ("Hama", "حماة"),
    "LAT": ("Latakia", "اللاذقية"), "TAR": ("Tartus", "طرطوس"), "IDL": ("Idlib", "إدلب"),
    "RAQ": ("Raqqa", "الرقة"), "DEZ": ("Deir ez-Zor", "دير الزور"),
    "HAS": ("Hasakah", "الحسكة"), "DAR": ("Daraa", "درعا"), "SWE": ("As-Suwayda", "السويداء"),
    "QUN": ("Quneitra", "القنيطرة"),
}  # fmt: skip
MAX_INT = 2**63 - 1  # what SQLite stores

# What each number may be: (low, high, the rule as the operator reads it).
RANGES: dict[str, tuple[float, float, str]] = {
    "http_port": (0, 65535, "must be a TCP port, 0-65535"),
    "ups_port": (0, 65535, "must be a TCP port, 0-65535"),
    "centre_batch_size": (1, 5000, "must be between 1 and 5000"),
    "centre_pull_limit": (1, 10000, "must be between 1 and 10000"),
    "http_max_connections_per_address": (1, MAX_INT, "must be at least 1"),
    "power_retry_after_s": (0, 86400, "must be between 0 and 86400 (seconds)"),
    "audit_keep_days": (0, 36500, "must be between 0 (keep for ever) and 36500"),
    "limits_hold_s": (0, 10, "must be between 0 (answer at once) and 10 seconds"),
    "payments_void_window_h": (1e-9, 24 * 365, "must be positive (hours), at most a year"),
    "readings_jump_factor": (1, 1000, "must be between 1 and 1000"),
    "limits_offline_max_total": (0, 2**62, "must be 0 (off) or positive, at most 2^62 piastres"),
}
RANGES |= dict.fromkeys(("http_shutdown_timeout_s", "http_header_timeout_s",
    "http_body_timeout_s", "http_keepalive_timeout_s", "centre_timeout_s", "centre_retry_base_s",
    "centre_config_fault_retry_s", "centre_pull_interval_s", "centre_pull_interval_battery_s",
    "ups_poll_s", "ups_poll_battery_s", "ups_timeout_s", "mirror_stale_after_s",
), (1e-9, math.inf, "must be positive (seconds)"))  # fmt: skip
RANGES |= dict.fromkeys(("notify_timeout_s", "notify_check_s"),
                        (1e-9, math.inf, "must be positive (seconds)"))  # fmt: skip
RANGES |= dict.fromkeys(("notify_min_interval_s", "notify_battery_after_s",
    "notify_link_down_after_s", "notify_oldest_pending_h"),
    (0, math.inf, "must be 0 (at once) or positive"))  # fmt: skip
RANGES["notify_disk_free_percent"] = (0, 100, "must be between 0 (off) and 100 (percent)")
RANGES["notify_offline_limit_ratio"] = (1e-9, 1, "must be above 0 and at most 1")
RANGES |= dict.fromkeys(("storage_min_free_mb", "power_runtime_floor_s", "power_dead_time_s",
    "power_final_replay_s"), (0, math.inf, "must not be negative"))  # fmt: skip
RANGES |= dict.fromkeys(("limits_inquiries_per_s", "limits_inquiry_burst",
    "limits_payments_per_s", "limits_payment_burst", "limits_per_address_per_s",
    "limits_per_address_burst", "limits_auth_failures", "limits_offline_max_payment",
    "limits_offline_max_count", "limits_offline_max_age_h", "limits_offline_mirror_max_age_h",
), (0, math.inf, "must be 0 (off) or positive"))  # fmt: skip
# A choice among words: (the words, why).
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "node_governorate": (tuple(GOVERNORATES), ""),
    "storage_synchronous": (("FULL", "EXTRA"), ": payments need durable commits"),
    "ups_source": (("nut", "psutil", "none"), ""),
    "power_on_low": (("shutdown", "read_only"), ""),
}


def broken(s: Any) -> Iterator[tuple[str, str]]:
    """(field, what is wrong and the fix) for each rule the settings `s` break (an
    edge.config.Settings, which this module cannot name: config imports it)."""
    for name, (low, high, rule) in RANGES.items():
        value = getattr(s, name)
        if not low <= value <= high:  # also refuses nan
            yield (name, f"{rule}, not {value}")
    for name, (words, why) in CHOICES.items():
        if getattr(s, name) not in words:
            yield (name, f"must be one of {', '.join(words)}{why}, not {getattr(s, name)!r}")
    if not NODE_ID.match(s.node_id):
        yield ("node_id", f"{s.node_id!r}: use lowercase letters, digits and '-', 1-32 chars")
    if s.node_receipt_code and not receiptcode.RECEIPT_CODE.match(s.node_receipt_code):
        yield ("node_receipt_code", f"{s.node_receipt_code!r}: 1-8 upper-case letters and"
               " digits, or empty for one made from node.id")  # fmt: skip
    try:
        ZoneInfo(s.node_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        yield ("node_timezone", f"{s.node_timezone!r} is not a known time zone"
               " (an IANA name like Asia/Damascus)")  # fmt: skip
    if s.centre_url and not s.centre_url.startswith(("http://", "https://")):
        yield ("centre_url", f"{s.centre_url!r}: http://… or https://…, or empty for none")
    if s.centre_key_file and not s.centre_cert_file:
        yield ("centre_key_file", "is set without centre.cert_file: give both, or neither")
    if s.centre_retry_cap_s < s.centre_retry_base_s:
        yield ("centre_retry_cap_s", "must be at least centre.retry_base_s")
    if s.limits_auth_failures and not 1 <= s.limits_auth_block_max_s < math.inf:
        yield ("limits_auth_block_max_s", "must be at least 1 (second)")
    yield from _http_tls(s)
    yield from _notify(s)


def _http_tls(s: Any) -> Iterator[tuple[str, str]]:
    """Both of cert_file and key_file or neither; each file given must exist. The PEM itself
    is loaded by edge.preflight: `edge status` loads this file too, without the key's read
    permission."""
    if bool(s.http_cert_file) != bool(s.http_key_file):
        given, missing = ("key_file", "cert_file") if s.http_key_file else ("cert_file", "key_file")
        yield (f"http_{given}", f"is set without http.{missing}: give both, or neither")
    if s.http_client_ca_file and not s.http_cert_file:
        yield ("http_client_ca_file", "is set without http.cert_file and http.key_file:"
               " client certificates are only checked over https")  # fmt: skip
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(s, f"http_{key}")
        if value and not Path(value).is_file():
            yield (f"http_{key}", f"{value}: no such file")


def _notify(s: Any) -> Iterator[tuple[str, str]]:
    program = Path(s.notify_exec)
    if s.notify_exec and not (
        program.is_absolute() and program.is_file() and os.access(program, os.X_OK)
    ):
        yield ("notify_exec", f"{s.notify_exec}: not an executable file (give an absolute path)")
    if s.notify_webhook_url and not s.notify_webhook_url.startswith(("http://", "https://")):
        yield ("notify_webhook_url", f"{s.notify_webhook_url!r}: http://… or https://…, or empty"
               " for none")  # fmt: skip
    if s.notify_ca_file and not Path(s.notify_ca_file).is_file():
        yield ("notify_ca_file", f"{s.notify_ca_file}: no such file")
