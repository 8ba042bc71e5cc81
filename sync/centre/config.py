"""The reference centre's settings: a frozen dataclass, loaded from TOML (DESIGN 6.2).

Secrets are read from each node's `secret_file` at load time (see sync.signing.read_secret:
the stripped text as UTF-8 bytes, never hex-decoded). Relative paths are taken from the
config file's directory. For programmatic use build `CentreSettings(...)` directly.
"""

from __future__ import annotations

import math
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from outbox.ids import NODE_ID
from sync import tls
from sync.bill import GOVERNORATE, MAX_INT
from sync.errors import CentreConfigError, SyncError
from sync.receiptcode import RECEIPT_CODE
from sync.signing import key_id, read_secret

GOVERNORATES = (
    "DAM", "RDA", "ALE", "HMS", "HAM", "LAT", "TAR", "IDL", "RAQ", "DEZ", "HAS", "DAR", "SWE",
    "QUN",
)  # fmt: skip
DB_NAME = "centre.db"
CENTRE_KEYS = ("cert_file", "key_file", "client_ca_file", "max_credit", "database",
               "database_pool_size")  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What one payment may carry (piastres; None: no ceiling beyond the bill's amount)."""

    max_payment: int | None = None
    max_credit: int | None = None


@dataclass(frozen=True)
class NodeSettings:
    governorate: str
    secret: bytes = field(repr=False)
    max_payment: int | None = None  # this node's ceiling per payment
    max_credit: int | None = None  # overrides [centre] max_credit for this node
    # A second live key during a rotation (`next_secret_file`); requests name theirs by id.
    next_secret: bytes | None = field(default=None, repr=False)
    # Codes another node holds that this node printed before it was renamed: its entries with
    # them are recorded (their payment ids tell them apart) instead of refusing its batches.
    duplicate_receipt_codes: frozenset[str] = frozenset()

    @property
    def keys(self) -> dict[str, bytes]:
        """Key id -> secret, for every live key of the node."""
        live = [self.secret] if self.next_secret is None else [self.secret, self.next_secret]
        return {key_id(secret): secret for secret in live}


@dataclass(frozen=True)
class CentreSettings:
    data_dir: Path = Path("/var/lib/edge-centre")
    host: str = "127.0.0.1"
    port: int = 9090
    governorate: str | None = None  # the governorate that `import`, `seed` and `cycle` act on
    max_skew_s: float = 300.0
    nodes: Mapping[str, NodeSettings] = field(default_factory=dict)
    cert_file: Path | None = None  # set: serve https (with key_file, or the key in this PEM)
    key_file: Path | None = None
    client_ca_file: Path | None = None  # set: refuse clients without a certificate it issued
    max_credit: int | None = None  # credit one payment may leave; None: up to the bill's amount
    # "": SQLite in data_dir (embedded, one process); "postgresql://user@host/db": PostgreSQL,
    # shared by any number of centre processes. Never a password in it (use ~/.pgpass).
    database: str = ""
    database_pool_size: int = 10  # PostgreSQL connections per centre process

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_NAME

    @property
    def secrets(self) -> dict[str, bytes]:
        return {node: settings.secret for node, settings in self.nodes.items()}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server context when `cert_file` is set (else None: plain http, for loopback)."""
        if self.cert_file is None:
            return None
        try:
            return tls.server_context(self.cert_file, self.key_file, self.client_ca_file)
        except SyncError as exc:
            raise CentreConfigError(
                f"centre.cert_file/key_file/client_ca_file: {exc.detail}"
            ) from exc

    def limits(self, node: str) -> Limits:
        own = self.nodes[node]
        credit = self.max_credit if own.max_credit is None else own.max_credit
        return Limits(max_payment=own.max_payment, max_credit=credit)

    @property
    def keys(self) -> dict[str, dict[str, bytes]]:
        """Node -> key id -> secret: what a request's signature is checked against."""
        return {node: settings.keys for node, settings in self.nodes.items()}

    def require_governorate(self) -> str:
        if self.governorate is None:
            raise CentreConfigError("[centre] governorate is required for this command")
        return self.governorate


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise CentreConfigError(f"[{key}] must be a table")
    return value


def _governorate(value: object, key: str) -> str:
    if not isinstance(value, str) or not GOVERNORATE.match(value) or value not in GOVERNORATES:
        raise CentreConfigError(f"{key} must be one of {', '.join(GOVERNORATES)}, not {value!r}")
    return value


def _path(value: object, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise CentreConfigError(f"{key} must be a non-empty path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _piastres(table: Mapping[str, Any], name: str, key: str, low: int) -> int | None:
    value = table.get(name)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= MAX_INT:
        raise CentreConfigError(f"{key} must be whole piastres in [{low}, 2^63-1], not {value!r}")
    return value


def _codes(table: Mapping[str, Any], key: str) -> frozenset[str]:
    value = table.get("duplicate_receipt_codes", [])
    if not isinstance(value, list) or not all(
        isinstance(code, str) and RECEIPT_CODE.match(code) for code in value
    ):
        raise CentreConfigError(f"{key} must be a list of receipt codes (1-8 of A-Z 0-9)")
    return frozenset(value)


def _tls(centre: Mapping[str, Any], base: Path) -> dict[str, Path | None]:
    paths = {
        name: _path(centre[name], f"centre.{name}", base) if name in centre else None
        for name in ("cert_file", "key_file", "client_ca_file")
    }
    if paths["cert_file"] is None and (paths["key_file"] or paths["client_ca_file"]):
        raise CentreConfigError("centre.key_file and centre.client_ca_file need centre.cert_file")
    return paths


def _database(centre: Mapping[str, Any]) -> tuple[str, int]:
    url = centre.get("database", "")
    if not isinstance(url, str) or (url and not url.startswith(("postgresql://", "postgres://"))):
        raise CentreConfigError("centre.database must be empty (SQLite) or a postgresql:// URL")
    if url and "@" in url and ":" in urlsplit(url).netloc.rpartition("@")[0]:
        # The file is readable by whoever runs the centre's tools; a password goes to ~/.pgpass.
        raise CentreConfigError(
            "centre.database must not carry a password: put it in ~/.pgpass (mode 600)"
        )
    pool = centre.get("database_pool_size", CentreSettings.database_pool_size)
    if type(pool) is not int or not 1 <= pool <= 100:
        raise CentreConfigError(f"centre.database_pool_size must be 1-100, not {pool!r}")
    return url, pool


def _secret(value: object, key: str, base: Path) -> bytes:
    try:
        return read_secret(_path(value, key, base))
    except SyncError as exc:
        raise CentreConfigError(f"{key}: {exc.detail}") from exc


def parse(raw: Mapping[str, Any], base: Path) -> CentreSettings:
    """Settings from an already-parsed TOML document; relative paths resolve against `base`."""
    unknown = set(raw) - {"centre", "nodes"}
    if unknown:
        raise CentreConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    centre = _table(raw, "centre")
    defaults = CentreSettings()
    unknown = set(centre) - {"data_dir", "host", "port", "governorate", "max_skew_s", *CENTRE_KEYS}
    if unknown:
        raise CentreConfigError(f"unknown key(s) in [centre]: {', '.join(sorted(unknown))}")
    data_dir = _path(centre.get("data_dir", str(defaults.data_dir)), "centre.data_dir", base)
    host = centre.get("host", defaults.host)
    if not isinstance(host, str) or not host:
        raise CentreConfigError("centre.host must be a non-empty string")
    port = centre.get("port", defaults.port)
    if type(port) is not int or not 0 <= port <= 65535:
        raise CentreConfigError(f"centre.port must be an integer in 0-65535, not {port!r}")
    governorate = centre.get("governorate")
    if governorate is not None:
        governorate = _governorate(governorate, "centre.governorate")
    skew = centre.get("max_skew_s", defaults.max_skew_s)
    if type(skew) not in (int, float) or not math.isfinite(skew) or skew <= 0:
        raise CentreConfigError(f"centre.max_skew_s must be a positive number, not {skew!r}")

    database, pool = _database(centre)
    nodes: dict[str, NodeSettings] = {}
    for node, table in _table(raw, "nodes").items():
        key = f"nodes.{node}"
        if not NODE_ID.match(node):
            raise CentreConfigError(f"[{key}]: a node id is 1-32 lowercase letters, digits or '-'")
        if not isinstance(table, dict):
            raise CentreConfigError(f"[{key}] must be a table")
        unknown = set(table) - {
            "governorate", "secret_file", "next_secret_file", "max_payment", "max_credit",
            "duplicate_receipt_codes",
        }  # fmt: skip
        if unknown:
            raise CentreConfigError(f"unknown key(s) in [{key}]: {', '.join(sorted(unknown))}")
        if "secret_file" not in table:
            raise CentreConfigError(f"{key}.secret_file is required")
        gov = _governorate(table.get("governorate"), f"{key}.governorate")
        secret = _secret(table["secret_file"], f"{key}.secret_file", base)
        upcoming = table.get("next_secret_file")
        next_secret = (
            None if upcoming is None else _secret(upcoming, f"{key}.next_secret_file", base)
        )
        nodes[node] = NodeSettings(
            governorate=gov, secret=secret, next_secret=next_secret,
            max_payment=_piastres(table, "max_payment", f"{key}.max_payment", 1),
            max_credit=_piastres(table, "max_credit", f"{key}.max_credit", 0),
            duplicate_receipt_codes=_codes(table, f"{key}.duplicate_receipt_codes"),
        )  # fmt: skip
    return CentreSettings(
        data_dir=data_dir,
        host=host,
        port=port,
        governorate=governorate,
        max_skew_s=float(skew),
        nodes=nodes,
        max_credit=_piastres(centre, "max_credit", "centre.max_credit", 0),
        database=database,
        database_pool_size=pool,
        **_tls(centre, base),
    )


def load_settings(path: Path) -> CentreSettings:
    """Read and check the centre's TOML file; raises CentreConfigError naming the key."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise CentreConfigError(f"cannot read the config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CentreConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    return parse(raw, path.resolve().parent)
