"""The node's settings: one frozen dataclass, loaded from TOML then `EDGE_*` variables.

A field `{section}_{key}` is the TOML key `key` of table `[section]` and the variable
`EDGE_{SECTION}_{KEY}`; a nested table `[a.b]` is the section "a.b", prefix `a_b_`. Unknown
keys and variables are refused (a typo must not silently mean a default), and every problem
is reported at once, each naming its key and the fix (edge.preflight adds the files).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge import settingrules
from edge.errors import ConfigError
from edge.settingrules import GOVERNORATES as GOVERNORATES
from edge.settingrules import MAX_INT
from sync import receiptcode

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
# EDGE_* variables that are not settings, so not refused as typos: the admin token the CLI
# reads (edge/ops/tokencli.py), the crash points (outbox/crashpoints.py), what notify.exec's
# program is given (edge/notifier.py: it may run `edge status`), and the knobs of the test
# suite and CI (docs/RELIABILITY.md, .ci/run), which a node started by a test inherits.
NOT_SETTINGS = frozenset({
    "EDGE_ADMIN_TOKEN", "EDGE_CRASH_AT", "EDGE_EVENT", "EDGE_SEVERITY", "EDGE_NODE",
    "EDGE_GOVERNORATE", "EDGE_TEXT_AR", "EDGE_TEXT_EN", "EDGE_CRASH_SEED", "EDGE_FUZZ_EXAMPLES",
    "EDGE_SCHEMATHESIS_EXAMPLES", "EDGE_SCREENSHOT_DIR", "EDGE_CI_BENCH",
})  # fmt: skip


def config_option(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """`--config FILE`: how every `edge` command that reads the node's settings is given them."""
    parser.add_argument("--config", type=Path, required=required, metavar="FILE",
                        help="the node's settings (TOML), e.g. /etc/edge/edge.toml; EDGE_*"
                        " variables override it")  # fmt: skip


ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names for "every address"


def probe_host(host: str) -> str:
    """Where to reach a server that listens on `host`: loopback when it listens everywhere."""
    return "127.0.0.1" if host in ANY_ADDRESS else host


_FIELDS = {f.name: f for f in fields(Settings)}


def key_of(name: str) -> str:
    """The TOML key a field is written as: `limits_offline_max_count` -> limits.offline.max_count."""
    for section in sorted(SECTIONS, key=len, reverse=True):
        prefix = section.replace(".", "_") + "_"
        if name.startswith(prefix):
            return f"{section}.{name[len(prefix) :]}"
    return name.replace("_", ".", 1)


def variable_of(name: str) -> str:
    return f"EDGE_{name.upper()}"


def where(name: str) -> str:
    """How an operator writes a field: `[http] port` in the file, EDGE_HTTP_PORT outside."""
    section, _, key = key_of(name).rpartition(".")
    return f"[{section}] {key} in the file, or {variable_of(name)}"


class Problems:
    """Every problem found in the settings, each one line naming the key and the fix."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: set[str] = set()

    def add(self, name: str | None, text: str) -> None:
        if name is None:
            self.lines.append(text)
            return
        self.names.add(name)
        self.lines.append(f"{key_of(name)} {text} ({where(name)})")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(*self.lines)


def read(path: Path | None, env: Mapping[str, str] | None = None) -> tuple[Settings, Problems]:
    """Settings from `path` (None: defaults only), then `EDGE_*` variables, with every problem
    found (a key with a bad value keeps its default, so the other keys are checked too)."""
    problems = Problems()
    raw: dict[str, tuple[Any, str | None]] = {}  # field -> (value, variable it came from)
    if path is not None:
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        raw.update((name, (value, None)) for name, value in _flatten(doc, problems).items())
    for variable, value in sorted((os.environ if env is None else env).items()):
        if not variable.startswith("EDGE_") or variable in NOT_SETTINGS:
            continue
        name = ALIASES.get(variable[5:].lower(), variable[5:].lower())
        if name in _FIELDS and raw.get(name, (None, None))[1] is not None:
            problems.add(name, "and its older name are both given: keep one")
        elif name in _FIELDS:
            raw[name] = (value, variable)
        else:
            # Compared without the EDGE_ all share, or every short typo looks alike.
            known = [n.upper() for n in (*_FIELDS, *ALIASES)] + [v[5:] for v in NOT_SETTINGS]
            close = difflib.get_close_matches(variable[5:], known, n=1, cutoff=0.6)
            hint = (f"did you mean EDGE_{close[0]}?" if close else "unset it (a setting's"
                    " variable is EDGE_<SECTION>_<KEY>: deploy/edge.toml.example)")  # fmt: skip
            problems.add(None, f"unknown variable {variable}: {hint}")
    values = {}
    for name, (value, source) in raw.items():
        try:
            values[name] = _coerce(name, value, source)
        except ValueError as exc:
            problems.add(name, str(exc))
    settings = Settings(**values)
    check(settings, problems)
    return settings, problems


def load(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path` then `EDGE_*` variables; ConfigError listing every problem."""
    settings, problems = read(path, env)
    problems.raise_if_any()
    return settings


def flatten(doc: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """`{field: value}` of a TOML document; a ConfigError names every unknown section or key."""
    problems = Problems()
    out = _flatten(doc, problems)
    if problems.lines:
        raise ConfigError(*(f"{path}: {line}" for line in problems.lines))
    return out


def _flatten(doc: Mapping[str, Any], problems: Problems, section: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = f"{section}.{key}" if section else key
        if isinstance(value, dict):
            # A table is a section, or holds one ([limits] holds [limits.offline]).
            if not any(s == dotted or s.startswith(dotted + ".") for s in SECTIONS):
                close = difflib.get_close_matches(dotted, SECTIONS, n=1, cutoff=0.6)
                hint = f"did you mean [{close[0]}]? " if close else ""
                problems.add(None, f"unknown section [{dotted}]: {hint}the sections are"
                             f" [{'], ['.join(SECTIONS)}]")  # fmt: skip
                continue
            for name, item in _flatten(value, problems, dotted).items():
                if name in out:
                    problems.add(name, "and its older name are both given: keep one")
                out[name] = item
            continue
        if section not in SECTIONS:
            problems.add(None, f"{dotted} is outside any section: put it under one of"
                         f" [{'], ['.join(SECTIONS)}]")  # fmt: skip
            continue
        prefix = section.replace(".", "_")
        name = ALIASES.get(f"{prefix}_{key}", f"{prefix}_{key}")
        # key_of: `[limits] offline_max_count` is not limits.offline.max_count's other name.
        if name not in _FIELDS or (name == f"{prefix}_{key}" and key_of(name) != dotted):
            known = [key_of(n) for n in (*_FIELDS, *ALIASES)]
            close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.6)
            here = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section]
            hint = (
                f"did you mean [{close[0].rpartition('.')[0]}] {close[0].rpartition('.')[2]}?"
                if close
                else f"[{section}] has {', '.join(here)}"
            )
            problems.add(None, f"unknown key {dotted} ([{section}] {key}): {hint}")
            continue
        if name in out:
            problems.add(name, "and its older name are both given: keep one")
        out[name] = value
    return out


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false",
          "str": "a string", "Path": "a path (a non-empty string)"}  # fmt: skip
# TOML gives true/false; an EDGE_* variable gives text.
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_INTEGER = re.compile(r"^[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")


def _coerce(name: str, value: Any, variable: str | None) -> Any:
    """The field's value from TOML (its type must be the field's) or from a variable's text."""
    kind = str(_FIELDS[name].type)
    if variable is not None:  # text from the environment: parsed, whatever the kind
        text = value.strip()
        if kind == "bool":
            if text.lower() not in _BOOLS:
                raise ValueError(f"must be true or false (or 1/0, yes/no), not {value!r}"
                                 f" from {variable}")  # fmt: skip
            return _BOOLS[text.lower()]
        if kind == "int":
            if not _INTEGER.match(text):
                raise ValueError(f"must be an integer, not {value!r} from {variable}")
            value = int(text)
        elif kind == "float":
            if not _number(text):
                raise ValueError(f"must be a number, not {value!r} from {variable}")
            value = float(text)
    ok = {"int": type(value) is int, "float": type(value) in (int, float),
          "bool": type(value) is bool, "str": type(value) is str,
          "Path": type(value) is str and value != ""}[kind]  # fmt: skip
    if not ok:
        fix = ""
        if isinstance(value, str) and kind in ("int", "float") and _number(value):
            fix = f": write {key_of(name).rpartition('.')[2]} = {value.strip()}, without quotes"
        elif isinstance(value, float) and kind == "int" and value.is_integer():
            fix = f": write {key_of(name).rpartition('.')[2]} = {int(value)}"
        elif isinstance(value, str) and kind == "bool" and value.lower() in _BOOLS:
            fix = ": write true or false, without quotes"
        shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
        shown = f'the string "{value}"' if isinstance(value, str) else shown
        raise ValueError(f"must be {_KINDS[kind]}, not {shown}{fix}")
    if kind == "int" and abs(value) > MAX_INT:
        raise ValueError(f"must be at most 2^63-1, not {value}")
    if kind == "float":
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value}")
        return float(value)
    return Path(value) if kind == "Path" else value


def _number(text: str) -> bool:
    return _FLOAT.match(text.strip()) is not None


def validate(s: Settings) -> None:
    """Raise ConfigError listing every key with an invalid value (the files: edge.preflight)."""
    problems = Problems()
    check(s, problems)
    problems.raise_if_any()


def check(s: Settings, problems: Problems) -> None:
    """Add a problem for each value, or combination of values, that the node cannot run with."""
    for name, text in settingrules.broken(s):
        problems.add(name, text)
