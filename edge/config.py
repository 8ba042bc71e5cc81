"""The node's settings: one frozen dataclass, loaded from TOML then `EDGE_*` variables.

A field `{section}_{key}` is the TOML key `key` of table `[section]` and the variable
`EDGE_{SECTION}_{KEY}`; a nested table `[a.b]` is the section "a.b", prefix `a_b_`. Unknown
keys are refused (a typo must not silently mean a default).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.errors import ConfigError
from outbox.ids import NODE_ID
from sync import receiptcode

GOVERNORATES = {
    "DAM": ("Damascus", "دمشق"),
    "RDA": ("Rural Damascus", "ريف دمشق"),
    "ALE": ("Aleppo", "حلب"),
    "HMS": ("Homs", "حمص"),
    "HAM": ("Hama", "حماة"),
    "LAT": ("Latakia", "اللاذقية"),
    "TAR": ("Tartus", "طرطوس"),
    "IDL": ("Idlib", "إدلب"),
    "RAQ": ("Raqqa", "الرقة"),
    "DEZ": ("Deir ez-Zor", "دير الزور"),
    "HAS": ("Hasakah", "الحسكة"),
    "DAR": ("Daraa", "درعا"),
    "SWE": ("As-Suwayda", "السويداء"),
    "QUN": ("Quneitra", "القنيطرة"),
}
SECTIONS = (
    "node", "http", "auth", "centre", "mirror", "storage", "ups", "power", "limits",
    "limits.offline", "audit", "payments", "readings", "notify",
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    node_id: str = "dam-1"
    node_governorate: str = "DAM"
    node_data_dir: Path = Path("/var/lib/edge")
    node_timezone: str = "Asia/Damascus"
    node_receipt_code: str = ""  # empty: derived from node.id (see receipt_code)
    http_host: str = "0.0.0.0"  # noqa: S104 - the node serves the governorate's LAN
    http_port: int = 8080
    http_shutdown_timeout_s: float = 20.0
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_keepalive_timeout_s: float = 15.0
    http_max_connections_per_address: int = 64
    http_cert_file: str = ""  # set (with key_file): serve https; empty: plain http
    http_key_file: str = ""
    http_client_ca_file: str = ""  # set: refuse counters without a certificate it issued
    auth_tokens_file: Path = Path("/etc/edge/tokens.toml")
    centre_url: str = "http://127.0.0.1:9090"
    centre_secret_file: Path = Path("/etc/edge/centre.secret")
    centre_batch_size: int = 500
    centre_timeout_s: float = 30.0
    centre_retry_base_s: float = 1.0
    centre_retry_cap_s: float = 300.0
    centre_config_fault_retry_s: float = 300.0
    centre_pull_interval_s: float = 30.0
    centre_pull_interval_battery_s: float = 300.0
    centre_pull_limit: int = 1000
    centre_ca_file: str = ""
    centre_cert_file: str = ""
    centre_key_file: str = ""
    mirror_stale_after_s: float = 3600.0
    storage_min_free_mb: int = 64
    storage_synchronous: str = "FULL"
    ups_source: str = "nut"
    ups_host: str = "127.0.0.1"
    ups_port: int = 3493
    ups_name: str = "ups"
    ups_username: str = ""
    ups_password_file: str = ""
    ups_poll_s: float = 2.0
    ups_poll_battery_s: float = 2.0
    ups_timeout_s: float = 3.0
    power_on_low: str = "shutdown"
    power_runtime_floor_s: int = 180
    power_dead_time_s: float = 15.0
    power_final_replay_s: float = 20.0
    power_retry_after_s: int = 600
    # Rate limits (DESIGN 5.7); a rate or a burst of 0 turns that limit off.
    limits_inquiries_per_s: float = 2.0
    limits_inquiry_burst: int = 60
    limits_payments_per_s: float = 1.0
    limits_payment_burst: int = 60
    limits_per_address_per_s: float = 20.0
    limits_per_address_burst: int = 200
    limits_auth_failures: int = 10
    limits_auth_block_max_s: float = 300.0
    limits_hold_s: float = 1.0
    # Offline limits (edge/offline.py; 0 = off), sized for a 72-hour outage: edge.toml.example.
    limits_offline_max_payment: int = 1_000_000_000
    limits_offline_max_total: int = 1_500_000_000_000
    limits_offline_max_count: int = 150_000
    limits_offline_max_age_h: float = 96.0
    limits_offline_mirror_max_age_h: float = 96.0
    audit_enabled: bool = True
    audit_keep_days: int = 400  # a year of disputes plus a billing cycle; 0 keeps for ever
    payments_void_window_h: float = 24.0  # a supervisor may void a payment this long after
    readings_jump_factor: float = 10.0  # flag a reading above this many times the usual daily use
    # Alert notifications (edge/notifier.py; deploy/README.md "Alerts"): none unless set.
    notify_exec: str = ""  # a program run per event, the JSON on stdin (like NOTIFYCMD)
    notify_webhook_url: str = ""  # POSTed the same JSON; redirects are refused
    notify_ca_file: str = (
        ""  # the CA that issued an https webhook's certificate (else the system's)
    )
    notify_timeout_s: float = 10.0  # per exec run (killed after it) and per webhook request
    notify_min_interval_s: float = 300.0  # at most one notification per event kind this often
    notify_check_s: float = 2.0  # how often the node's state is looked at
    notify_battery_after_s: float = 300.0  # on battery this long before it is told (0: at once)
    notify_link_down_after_s: float = 600.0  # link down or degraded this long before it is told
    notify_oldest_pending_h: float = 4.0  # an undelivered entry older than this is told
    notify_disk_free_percent: float = 10.0  # less free space on the data disk than this is told
    notify_offline_limit_ratio: float = 0.8  # an offline limit this much used is told

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.node_timezone)

    @property
    def receipt_code(self) -> str:
        """The node's code in its receipt numbers: set, or the node id's letters and digits."""
        return self.node_receipt_code or receiptcode.default_code(self.node_id)

    @property
    def db_path(self) -> Path:
        return self.node_data_dir / "edge.db"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# Older names still accepted (TOML key and EDGE_* variable); check-config shows the new one.
ALIASES = {"centre_client_cert": "centre_cert_file", "centre_client_key": "centre_key_file"}

ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names for "every address"


def probe_host(host: str) -> str:
    """Where to reach a server that listens on `host`: loopback when it listens everywhere."""
    return "127.0.0.1" if host in ANY_ADDRESS else host


def load(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path` (None: defaults only), then `EDGE_*` variables, validated."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        raw.update(flatten(doc, path))
    for key, value in (os.environ if env is None else env).items():
        name = ALIASES.get(key[5:].lower(), key[5:].lower())
        if key.startswith("EDGE_") and name in _FIELDS:
            raw[name] = value
    values = {name: _coerce(name, value) for name, value in raw.items()}
    settings = Settings(**values)
    validate(settings)
    return settings


_FIELDS = {f.name: f for f in fields(Settings)}


def key_of(name: str) -> str:
    """The TOML key a field is written as: `limits_offline_max_count` -> limits.offline.max_count."""
    for section in sorted(SECTIONS, key=len, reverse=True):
        prefix = section.replace(".", "_") + "_"
        if name.startswith(prefix):
            return f"{section}.{name[len(prefix) :]}"
    return name.replace("_", ".", 1)


def flatten(doc: Mapping[str, Any], path: Path, section: str = "") -> dict[str, Any]:
    """`{field: value}` of a TOML document; a ConfigError names an unknown section or key."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = f"{section}.{key}" if section else key
        if isinstance(value, dict):
            # A table is a section, or holds one ([limits] holds [limits.offline]).
            if not any(s == dotted or s.startswith(dotted + ".") for s in SECTIONS):
                raise ConfigError(
                    f"{path}: unknown section [{dotted}]; known: {', '.join(SECTIONS)}"
                )
            for name, item in flatten(value, path, dotted).items():
                if name in out:
                    raise ConfigError(f"{path}: {key_of(name)} and its other name both given")
                out[name] = item
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}: unknown section [{section or key}]; known: {', '.join(SECTIONS)}"
            )
        prefix = section.replace(".", "_")
        name = ALIASES.get(f"{prefix}_{key}", f"{prefix}_{key}")
        # key_of: `[limits] offline_max_count` is not limits.offline.max_count's other name.
        if name not in _FIELDS or (name == f"{prefix}_{key}" and key_of(name) != dotted):
            raise ConfigError(f"{path}: unknown key {dotted}")
        if name in out:
            raise ConfigError(f"{path}: {dotted} and its other name both given")
        out[name] = value
    return out


# TOML gives true/false; an EDGE_* variable gives text.
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    key = key_of(name)
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _BOOLS:
                return _BOOLS[value.lower()]
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "Path":
            if not isinstance(value, str) or not value:
                raise ValueError
            return Path(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a {kind}, got {value!r}") from None


def validate(s: Settings) -> None:
    """Raise ConfigError naming the first key with an invalid value."""
    if not NODE_ID.match(s.node_id):
        raise ConfigError(
            f"node.id {s.node_id!r}: use lowercase letters, digits and '-', 1-32 chars"
        )
    if s.node_governorate not in GOVERNORATES:
        raise ConfigError(
            f"node.governorate {s.node_governorate!r}: one of {', '.join(GOVERNORATES)}"
        )
    if s.node_receipt_code and not receiptcode.RECEIPT_CODE.match(s.node_receipt_code):
        raise ConfigError(
            f"node.receipt_code {s.node_receipt_code!r}: 1-8 upper-case letters and digits"
        )
    try:
        ZoneInfo(s.node_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"node.timezone {s.node_timezone!r} is not a known time zone") from None
    if not 0 <= s.http_port <= 65535:
        raise ConfigError(f"http.port {s.http_port} is not a TCP port")
    _validate_http_tls(s)
    if not 0 <= s.ups_port <= 65535:
        raise ConfigError(f"ups.port {s.ups_port} is not a TCP port")
    if s.centre_url and not s.centre_url.startswith(("http://", "https://")):
        raise ConfigError(f"centre.url {s.centre_url!r}: http://… or https://…, or empty for none")
    if s.centre_key_file and not s.centre_cert_file:
        raise ConfigError("centre.key_file is set without centre.cert_file")
    if not 1 <= s.centre_batch_size <= 5000:
        raise ConfigError("centre.batch_size must be between 1 and 5000")
    if not 1 <= s.centre_pull_limit <= 10000:
        raise ConfigError("centre.pull_limit must be between 1 and 10000")
    if s.http_max_connections_per_address < 1:
        raise ConfigError("http.max_connections_per_address must be at least 1")
    for name in ("http_shutdown_timeout_s", "http_header_timeout_s", "http_body_timeout_s",
                 "http_keepalive_timeout_s", "centre_timeout_s", "centre_retry_base_s",
                 "centre_pull_interval_s", "centre_pull_interval_battery_s", "ups_poll_s",
                 "ups_poll_battery_s", "ups_timeout_s", "mirror_stale_after_s"):  # fmt: skip
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name.replace('_', '.', 1)} must be positive")
    if s.centre_retry_cap_s < s.centre_retry_base_s:
        raise ConfigError("centre.retry_cap_s must be at least centre.retry_base_s")
    if s.storage_min_free_mb < 0:
        raise ConfigError("storage.min_free_mb must not be negative")
    if s.storage_synchronous not in ("FULL", "EXTRA"):
        raise ConfigError(
            "storage.synchronous must be FULL or EXTRA: payments need durable commits"
        )
    if s.ups_source not in ("nut", "psutil", "none"):
        raise ConfigError(f"ups.source {s.ups_source!r}: one of nut, psutil, none")
    if s.power_on_low not in ("shutdown", "read_only"):
        raise ConfigError(f"power.on_low {s.power_on_low!r}: one of shutdown, read_only")
    if s.power_runtime_floor_s < 0:
        raise ConfigError("power.runtime_floor_s must not be negative")
    if not 0 <= s.audit_keep_days <= 36500:
        raise ConfigError("audit.keep_days must be between 0 (keep for ever) and 36500")
    _validate_limits(s)
    if not 0 < s.payments_void_window_h <= 24 * 365:  # also refuses nan
        raise ConfigError("payments.void_window_h must be positive (hours), at most a year")
    if not 1 <= s.readings_jump_factor <= 1000:  # also refuses nan
        raise ConfigError("readings.jump_factor must be between 1 and 1000")
    for name in ("limits_offline_max_payment", "limits_offline_max_total",
                 "limits_offline_max_count", "limits_offline_max_age_h",
                 "limits_offline_mirror_max_age_h"):  # fmt: skip
        if not 0 <= getattr(s, name) < float("inf"):  # also refuses nan
            raise ConfigError(f"{key_of(name)} must be 0 (off) or positive")
    if s.limits_offline_max_total > 2**62:
        raise ConfigError("limits.offline.max_total must be at most 2^62 piastres")
    _validate_notify(s)


def _validate_http_tls(s: Settings) -> None:
    """Both of cert_file and key_file or neither; each file given must exist. The PEM itself
    is loaded at start (edge.serving): `edge status` loads this file too, without the key's
    read permission."""
    if bool(s.http_cert_file) != bool(s.http_key_file):
        given, missing = ("key_file", "cert_file") if s.http_key_file else ("cert_file", "key_file")
        raise ConfigError(f"http.{given} is set without http.{missing}: give both, or neither")
    if s.http_client_ca_file and not s.http_cert_file:
        raise ConfigError(
            "http.client_ca_file is set without http.cert_file and http.key_file:"
            " client certificates are only checked over https"
        )
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = getattr(s, f"http_{key}")
        if value and not Path(value).is_file():
            raise ConfigError(f"http.{key} {value}: no such file")


def _validate_limits(s: Settings) -> None:
    for name in ("limits_inquiries_per_s", "limits_inquiry_burst", "limits_payments_per_s",
                 "limits_payment_burst", "limits_per_address_per_s", "limits_per_address_burst",
                 "limits_auth_failures"):  # fmt: skip
        value = getattr(s, name)
        if not 0 <= value < float("inf"):  # also refuses nan
            raise ConfigError(f"{name.replace('_', '.', 1)} must be 0 (off) or positive")
    if s.limits_auth_failures and not 1 <= s.limits_auth_block_max_s < float("inf"):
        raise ConfigError("limits.auth_block_max_s must be at least 1 (second)")
    if not 0 <= s.limits_hold_s <= 10:
        raise ConfigError("limits.hold_s must be between 0 (answer at once) and 10 seconds")


def _validate_notify(s: Settings) -> None:
    program = Path(s.notify_exec)
    if s.notify_exec and not (
        program.is_absolute() and program.is_file() and os.access(program, os.X_OK)
    ):
        raise ConfigError(f"notify.exec {s.notify_exec}: not an executable file (an absolute path)")
    if s.notify_webhook_url and not s.notify_webhook_url.startswith(("http://", "https://")):
        raise ConfigError("notify.webhook_url: http://… or https://…, or empty for none")
    if s.notify_ca_file and not Path(s.notify_ca_file).is_file():
        raise ConfigError(f"notify.ca_file {s.notify_ca_file}: no such file")
    for name in ("notify_timeout_s", "notify_check_s"):
        if not 0 < getattr(s, name) < float("inf"):  # also refuses nan
            raise ConfigError(f"{key_of(name)} must be positive")
    for name in ("notify_min_interval_s", "notify_battery_after_s", "notify_link_down_after_s",
                 "notify_oldest_pending_h", "notify_disk_free_percent"):  # fmt: skip
        if not 0 <= getattr(s, name) < float("inf"):
            raise ConfigError(f"{key_of(name)} must be 0 or positive")
    if not 0 < s.notify_offline_limit_ratio <= 1:
        raise ConfigError("notify.offline_limit_ratio must be above 0 and at most 1")
