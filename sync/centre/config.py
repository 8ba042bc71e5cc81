"""The reference centre's settings: a frozen dataclass, loaded from TOML (DESIGN 6.2).

Secrets are read from each node's `secret_file` at load time (see sync.signing.read_secret:
the stripped text as UTF-8 bytes, never hex-decoded). Relative paths are taken from the
config file's directory. For programmatic use build `CentreSettings(...)` directly.
"""

from __future__ import annotations

import difflib
import math
import ssl
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from outbox.ids import NODE_ID
from sync import tls
from sync.bill import GOVERNORATE, MAX_INT
from sync.errors import CentreConfigError, SyncError
from sync.receiptcode import RECEIPT_CODE
from sync.signing import check_private, key_id, read_secret

GOVERNORATES = (
    "DAM", "RDA", "ALE", "HMS", "HAM", "LAT", "TAR", "IDL", "RAQ", "DEZ", "HAS", "DAR", "SWE",
    "QUN",
)  # fmt: skip
DB_NAME = "centre.db"
CENTRE_KEYS = ("data_dir", "host", "port", "governorate", "max_skew_s", "cert_file", "key_file",
               "client_ca_file", "max_credit", "database", "database_pool_size")  # fmt: skip
NODE_KEYS = ("governorate", "secret_file", "next_secret_file", "max_payment", "max_credit",
             "duplicate_receipt_codes")  # fmt: skip
T = TypeVar("T")


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
        """The server context when `cert_file` is set (else None: plain http, for loopback):
        what serve and check-config load; each file must exist, the key be mode 0600 and the
        centre's (or root's)."""
        if self.cert_file is None:
            return None
        missing = [
            f"centre.{name} {path}: no such file"
            for name, path in (("cert_file", self.cert_file), ("key_file", self.key_file),
                               ("client_ca_file", self.client_ca_file))
            if path is not None and not path.is_file()
        ]  # fmt: skip
        if missing:
            raise CentreConfigError("\n".join(missing))
        if self.key_file is not None:
            _private(self.key_file, "centre.key_file")
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


class _Problems:
    """Every problem in the file, each naming its key: a helper's CentreConfigError is kept
    and its key's default used, so the keys after it are checked too."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def get(self, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except CentreConfigError as exc:
            self.lines.append(exc.detail)
            return default

    def unknown(self, given: Iterable[str], known: Iterable[str], where: str) -> None:
        known = list(known)
        for key in sorted(set(given) - set(known)):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"{where} has {', '.join(known)}"
            self.lines.append(f"unknown key {key} in {where}: {hint}")


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
        raise CentreConfigError(f"{key} must be a non-empty path (a string), not {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _piastres(table: Mapping[str, Any], name: str, key: str, low: int) -> int | None:
    value = table.get(name)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= MAX_INT:
        raise CentreConfigError(
            f"{key} must be an integer number of piastres in [{low}, 2^63-1], not {value!r}"
        )
    return value


def _codes(table: Mapping[str, Any], key: str) -> frozenset[str]:
    value = table.get("duplicate_receipt_codes", [])
    if not isinstance(value, list) or not all(
        isinstance(code, str) and RECEIPT_CODE.match(code) for code in value
    ):
        raise CentreConfigError(f"{key} must be a list of receipt codes (1-8 of A-Z 0-9)")
    return frozenset(value)


def _tls(centre: Mapping[str, Any], base: Path, problems: _Problems) -> dict[str, Path | None]:
    paths: dict[str, Path | None] = {}
    for name in ("cert_file", "key_file", "client_ca_file"):
        key = f"centre.{name}"
        given = name in centre
        paths[name] = (
            problems.get(partial(_path, centre.get(name), key, base), None) if given else None
        )
    if paths["cert_file"] is None and (paths["key_file"] or paths["client_ca_file"]):
        problems.lines.append("centre.key_file and centre.client_ca_file need centre.cert_file")
    return paths


def _private(path: Path, key: str) -> None:
    try:
        check_private(path, path.stat(), "private key")
    except (OSError, SyncError) as exc:
        raise CentreConfigError(f"{key}: {getattr(exc, 'detail', exc)}") from exc


def _secret(value: object, key: str, base: Path) -> bytes:
    try:
        return read_secret(_path(value, key, base))
    except SyncError as exc:
        raise CentreConfigError(f"{key}: {exc.detail}") from exc


def _port(value: object) -> int:
    if type(value) is not int or not 0 <= value <= 65535:
        shown = f'the string "{value}"' if isinstance(value, str) else repr(value)
        raise CentreConfigError(f"centre.port must be an integer in 0-65535, not {shown}")
    return value


def _host(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise CentreConfigError(f"centre.host must be a non-empty string, not {value!r}")
    return value


def _skew(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CentreConfigError(f"centre.max_skew_s must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise CentreConfigError(f"centre.max_skew_s must be a positive number, not {value!r}")
    return float(value)


def _database(url: object) -> str:
    if not isinstance(url, str) or (url and not url.startswith(("postgresql://", "postgres://"))):
        raise CentreConfigError("centre.database must be empty (SQLite) or a postgresql:// URL")
    if url and "@" in url and ":" in urlsplit(url).netloc.rpartition("@")[0]:
        # The file is readable by whoever runs the centre's tools; a password goes to ~/.pgpass.
        raise CentreConfigError(
            "centre.database must not carry a password: put it in ~/.pgpass (mode 600)"
        )
    return url


def _pool(value: object) -> int:
    if type(value) is not int or not 1 <= value <= 100:
        raise CentreConfigError(f"centre.database_pool_size must be 1-100, not {value!r}")
    return value


def _node(node: str, table: object, base: Path, problems: _Problems) -> NodeSettings | None:
    key = f"nodes.{node}"
    if not NODE_ID.match(node):
        problems.lines.append(f"[{key}]: a node id is 1-32 lowercase letters, digits or '-'")
        return None
    if not isinstance(table, dict):
        problems.lines.append(f"[{key}] must be a table")
        return None
    problems.unknown(table, NODE_KEYS, f"[{key}]")
    if "secret_file" not in table:
        problems.lines.append(f"{key}.secret_file is required (a file made by edge secret new)")
    gov = problems.get(lambda: _governorate(table.get("governorate"), f"{key}.governorate"), "")
    secret = problems.get(
        lambda: _secret(table["secret_file"], f"{key}.secret_file", base), b""
    ) if "secret_file" in table else b""  # fmt: skip
    upcoming = table.get("next_secret_file")
    next_secret = None if upcoming is None else problems.get(
        lambda: _secret(upcoming, f"{key}.next_secret_file", base), None
    )  # fmt: skip
    return NodeSettings(
        governorate=gov, secret=secret, next_secret=next_secret,
        max_payment=problems.get(partial(_piastres, table, "max_payment", f"{key}.max_payment", 1),
                                 None),
        max_credit=problems.get(partial(_piastres, table, "max_credit", f"{key}.max_credit", 0),
                                None),
        duplicate_receipt_codes=problems.get(
            lambda: _codes(table, f"{key}.duplicate_receipt_codes"), frozenset()
        ),
    )  # fmt: skip


def parse(raw: Mapping[str, Any], base: Path) -> CentreSettings:
    """Settings from an already-parsed TOML document; relative paths resolve against `base`.
    A CentreConfigError lists every problem, one a line."""
    problems = _Problems()
    problems.unknown(raw, ("centre", "nodes"), "the file")
    empty: Mapping[str, Any] = {}
    centre = problems.get(lambda: _table(raw, "centre"), empty)
    defaults = CentreSettings()
    problems.unknown(centre, CENTRE_KEYS, "[centre]")
    data_dir = problems.get(
        lambda: _path(centre.get("data_dir", str(defaults.data_dir)), "centre.data_dir", base),
        defaults.data_dir,
    )
    host = problems.get(lambda: _host(centre.get("host", defaults.host)), defaults.host)
    port = problems.get(lambda: _port(centre.get("port", defaults.port)), defaults.port)
    governorate = centre.get("governorate")
    if governorate is not None:
        governorate = problems.get(lambda: _governorate(governorate, "centre.governorate"), None)
    skew = problems.get(
        lambda: _skew(centre.get("max_skew_s", defaults.max_skew_s)), defaults.max_skew_s
    )
    nodes: dict[str, NodeSettings] = {}
    for node, table in problems.get(lambda: _table(raw, "nodes"), empty).items():
        settings = _node(node, table, base, problems)
        if settings is not None:
            nodes[node] = settings
    tls_paths = _tls(centre, base, problems)
    max_credit = problems.get(lambda: _piastres(centre, "max_credit", "centre.max_credit", 0), None)
    database = problems.get(lambda: _database(centre.get("database", "")), "")
    pool = problems.get(
        lambda: _pool(centre.get("database_pool_size", defaults.database_pool_size)),
        defaults.database_pool_size,
    )
    if problems.lines:
        raise CentreConfigError("\n".join(problems.lines))
    return CentreSettings(
        data_dir=data_dir,
        host=host,
        port=port,
        governorate=governorate,
        max_skew_s=skew,
        nodes=nodes,
        max_credit=max_credit,
        database=database,
        database_pool_size=pool,
        **tls_paths,
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
