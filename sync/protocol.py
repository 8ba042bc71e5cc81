"""The wire protocol between a node and the centre: msgpack frames and their strict decoding.

Every decoder raises ProtocolError and nothing else on any input. Signing lives in
sync.signing and sync.answers, the snapshot stream in sync.snapshot; sync/PROTOCOL.md is the
human-readable contract.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from outbox.chain import Linked
from outbox.ids import ENTRY_ID, NODE_ID
from sync.bill import FIELDS as BILL_FIELDS
from sync.bill import GOVERNORATE, MAX_INT, MAX_TEXT
from sync.bill import validate as check_bill
from sync.errors import ProtocolError
from sync.fines import MAX_GRACE_DAYS, Rule, due_day
from sync.signing import NODE_HEADER as NODE_HEADER
from sync.signing import SIGNATURE_HEADER as SIGNATURE_HEADER
from sync.signing import TIMESTAMP_HEADER as TIMESTAMP_HEADER
from sync.signing import read_secret as read_secret
from sync.signing import sign as sign

PROTOCOL_VERSION = 4  # 4: late fines, meter readings and requests
CONTENT_TYPE = "application/msgpack"
MAX_BATCH = 5_000
MAX_CHANGES = 10_000
MAX_PAYLOAD = 64 * 1024
VERDICTS = ("applied", "duplicate", "credited", "rejected")
REQUEST_FIELDS = ("request_id", "status", "note", "version", "updated_at")
REQUEST_STATUSES = ("received", "in_review", "accepted", "refused", "done")

_HASH = re.compile(r"^[0-9a-f]{64}\Z")
_BILL_KEYS = frozenset(BILL_FIELDS)
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
# Caps on every container and string while unpacking, so a hostile length prefix cannot make
# the decoder allocate before validation even starts.
_LIMITS: dict[str, int] = {
    "max_map_len": 32,
    "max_str_len": 4 * MAX_TEXT,
    "max_bin_len": MAX_PAYLOAD,
    "max_ext_len": 0,
}


class VerdictLike(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def version(self) -> int | None: ...
    @property
    def credit(self) -> int: ...
    @property
    def fine(self) -> int | None: ...


@dataclass(frozen=True)
class WireEntry:
    seq: int
    id: str
    kind: str
    payload: bytes
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Batch:
    node: str
    entries: list[WireEntry]


@dataclass(frozen=True)
class Verdict:
    seq: int
    id: str
    verdict: str
    reason: str | None
    version: int | None
    credit: int = 0  # piastres of this entry that became the subscriber's credit (protocol 3)
    fine: int | None = None  # piastres the centre counted to the bill's late fine (protocol 4)


@dataclass(frozen=True)
class Reply:
    results: list[Verdict]
    acked_seq: int


@dataclass(frozen=True)
class Changes:
    changes: list[dict[str, Any]]
    cursor: int
    more: bool
    requests: list[dict[str, Any]] = field(default_factory=list)  # protocol 4: statuses


# --- decoding helpers ------------------------------------------------------------------


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _unpack(body: object, max_array_len: int) -> Any:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ProtocolError("a frame must be bytes")
    try:
        return msgpack.unpackb(
            body, raw=False, strict_map_key=True, max_array_len=max_array_len, **_LIMITS
        )
    except Exception as exc:  # msgpack raises many types; all mean "not a frame"
        raise ProtocolError(f"not a msgpack frame: {type(exc).__name__}: {exc}") from None


def _map(obj: object, where: str, required: Iterable[str], optional: Iterable[str] = ()) -> Any:
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where} must be a map")
    need, may = set(required), set(optional)
    missing = need - obj.keys()
    if missing:
        raise ProtocolError(f"{where} lacks {', '.join(sorted(missing))}")
    extra = [key for key in obj if key not in need and key not in may]
    if extra:
        raise ProtocolError(f"{where} has unexpected keys {sorted(map(str, extra))}")
    return obj


def _frame(obj: object, required: Iterable[str], optional: Iterable[str] = ()) -> Any:
    frame = _map(obj, "the frame", ("v", *required), optional)
    version = frame["v"]
    if type(version) is not int:
        raise ProtocolError("v must be an integer")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version} is not supported (this side speaks {PROTOCOL_VERSION})",
            code="unsupported_version",
        )
    return frame


def _int(value: object, where: str, *, low: int = 0) -> int:
    # type() and not isinstance(): True is an int to Python but never a number on the wire.
    if type(value) is not int or not low <= value <= MAX_INT:
        raise ProtocolError(f"{where} must be an integer in [{low}, 2^63-1]")
    return value


def _str(value: object, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ProtocolError(f"{where} must be a string of at most {MAX_TEXT} characters")
    if pattern is not None and not pattern.match(value):
        raise ProtocolError(f"{where} is not well formed: {value[:80]!r}")
    return value


def _list(value: object, where: str, limit: int, code: str = "too_large") -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where} must be an array")
    if len(value) > limit:
        raise ProtocolError(f"{where} has {len(value)} items; the limit is {limit}", code=code)
    return value


def validate_bill(
    obj: object, where: str = "bill", governorate: str | None = None
) -> dict[str, Any]:
    """A bill map with exactly the schema's fields, each valid (sync.bill); with
    `governorate`, of that governorate only (else ProtocolError `foreign_bill`)."""
    # The usual case in one C-level comparison (a million bills in a bootstrap); `_map` says
    # what is wrong otherwise.
    exact = type(obj) is dict and obj.keys() == _BILL_KEYS
    bill: dict[str, Any] = obj if exact else _map(obj, where, BILL_FIELDS)  # type: ignore[assignment]
    check_bill(bill, where)
    if governorate is not None and (
        bill["governorate"] != governorate or not bill["bill_id"].startswith(governorate + "-")
    ):
        raise ProtocolError(
            f"{where} is a bill of {bill['governorate'][:8]!r}, not of this node's"
            f" governorate {governorate}",
            code="foreign_bill",
        )
    return dict(bill)


# --- outbox batch and reply ------------------------------------------------------------


def encode_batch(node: str, entries: Sequence[Linked]) -> bytes:
    return _pack(
        {
            "v": PROTOCOL_VERSION,
            "node": node,
            "entries": [
                {"seq": e.seq, "id": e.id, "kind": e.kind, "payload": bytes(e.payload),
                 "prev_hash": e.prev_hash, "hash": e.hash}
                for e in entries
            ],
        }
    )  # fmt: skip


def decode_batch(body: bytes) -> Batch:
    frame = _frame(_unpack(body, 1 << 18), ("node", "entries"))
    node = _str(frame["node"], "node", NODE_ID)
    raw = _list(frame["entries"], "entries", MAX_BATCH, "batch_too_large")
    entries = []
    for i, item in enumerate(raw):
        where = f"entries[{i}]"
        e = _map(item, where, ("seq", "id", "kind", "payload", "prev_hash", "hash"))
        if not isinstance(e["payload"], bytes) or len(e["payload"]) > MAX_PAYLOAD:
            raise ProtocolError(f"{where}.payload must be binary of at most {MAX_PAYLOAD} bytes")
        entries.append(
            WireEntry(
                seq=_int(e["seq"], f"{where}.seq", low=1),
                id=_str(e["id"], f"{where}.id", ENTRY_ID),
                kind=_str(e["kind"], f"{where}.kind", _KIND),
                payload=e["payload"],
                prev_hash=_str(e["prev_hash"], f"{where}.prev_hash", _HASH),
                hash=_str(e["hash"], f"{where}.hash", _HASH),
            )
        )
    return Batch(node=node, entries=entries)


def encode_reply(results: Iterable[VerdictLike], acked_seq: int) -> bytes:
    return _pack(
        {
            "v": PROTOCOL_VERSION,
            "results": [
                {"seq": r.seq, "id": r.id, "verdict": r.verdict, "reason": r.reason,
                 "version": r.version, "credit": r.credit, "fine": r.fine}
                for r in results
            ],
            "acked_seq": acked_seq,
        }
    )  # fmt: skip


def decode_reply(body: bytes) -> Reply:
    frame = _frame(_unpack(body, 1 << 18), ("results", "acked_seq"))
    results = []
    for i, item in enumerate(_list(frame["results"], "results", MAX_BATCH)):
        where = f"results[{i}]"
        r = _map(item, where, ("seq", "id", "verdict", "reason", "version", "credit"), ("fine",))
        verdict = r["verdict"]
        if verdict not in VERDICTS:
            raise ProtocolError(f"{where}.verdict must be one of {', '.join(VERDICTS)}")
        reason = None if r["reason"] is None else _str(r["reason"], f"{where}.reason", _CODE)
        version = None if r["version"] is None else _int(r["version"], f"{where}.version")
        if verdict == "rejected" and reason is None:
            raise ProtocolError(f"{where}: a rejected verdict needs a reason")
        if verdict in ("applied", "credited") and version is None:
            raise ProtocolError(f"{where}: an {verdict} verdict needs a version")
        credit = _int(r["credit"], f"{where}.credit")
        if credit and verdict == "rejected":
            raise ProtocolError(f"{where}: a rejected entry credits nothing")
        if verdict == "credited" and not credit:
            raise ProtocolError(f"{where}: a credited verdict needs its credit")
        results.append(
            Verdict(
                seq=_int(r["seq"], f"{where}.seq", low=1),
                id=_str(r["id"], f"{where}.id"),
                verdict=verdict,
                reason=reason,
                version=version,
                credit=credit,
                fine=None if r.get("fine") is None else _int(r["fine"], f"{where}.fine"),
            )
        )
    return Reply(results=results, acked_seq=_int(frame["acked_seq"], "acked_seq"))


# --- change feed and snapshot ----------------------------------------------------------


def bill_map(bill: Mapping[str, Any]) -> dict[str, Any]:
    return {field: bill[field] for field in BILL_FIELDS}


def encode_changes(
    changes: Sequence[Mapping[str, Any]], cursor: int, more: bool,
    requests: Sequence[Mapping[str, Any]] = (),
) -> bytes:  # fmt: skip
    frame: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "changes": [bill_map(bill) for bill in changes],
        "cursor": cursor,
        "more": more,
    }
    if requests:  # only when there are any: a page of bills alone is as in version 3
        frame["requests"] = [request_map(r) for r in requests]
    return _pack(frame)


def request_map(record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in REQUEST_FIELDS}


def validate_request(item: object, where: str) -> dict[str, Any]:
    """A request's status record of a changes page (PROTOCOL 4.3, version 4)."""
    r = _map(item, where, REQUEST_FIELDS)
    _str(r["request_id"], f"{where}.request_id", ENTRY_ID)
    if r["status"] not in REQUEST_STATUSES:
        raise ProtocolError(f"{where}.status must be one of {', '.join(REQUEST_STATUSES)}")
    if r["note"] is not None:
        _str(r["note"], f"{where}.note")
    _int(r["version"], f"{where}.version", low=1)
    _str(r["updated_at"], f"{where}.updated_at")
    return dict(r)


def decode_changes(body: bytes, governorate: str | None = None) -> Changes:
    """A changes frame; with `governorate`, a bill of any other is a ProtocolError
    (`foreign_bill`): the whole page is refused."""
    frame = _frame(_unpack(body, MAX_CHANGES), ("changes", "cursor", "more"), ("requests",))
    raw = _list(frame["changes"], "changes", MAX_CHANGES)
    changes = [validate_bill(item, f"changes[{i}]", governorate) for i, item in enumerate(raw)]
    if not isinstance(frame["more"], bool):
        raise ProtocolError("more must be a boolean")
    raw_requests = _list(frame.get("requests", []), "requests", MAX_CHANGES)
    statuses = [validate_request(item, f"requests[{i}]") for i, item in enumerate(raw_requests)]
    return Changes(
        changes=changes, cursor=_int(frame["cursor"], "cursor"), more=frame["more"],
        requests=statuses,
    )  # fmt: skip


# --- late-fine rules (protocol 4) -------------------------------------------------------

MAX_RULES = 1_000
_RULE_FIELDS = ("governorate", "version", "effective", "grace_days", "fixed", "percent_bp", "cap")


def rule_map(rule: Rule) -> dict[str, Any]:
    return {
        "governorate": rule.governorate, "version": rule.version,
        "effective": rule.effective.isoformat(), "grace_days": rule.grace_days,
        "fixed": rule.fixed, "percent_bp": rule.percent_bp, "cap": rule.cap,
    }  # fmt: skip


def encode_fine_rules(rules: Iterable[Rule]) -> bytes:
    return _pack({"v": PROTOCOL_VERSION, "rules": [rule_map(r) for r in rules]})


def _rule(obj: object, where: str, governorate: str | None) -> Rule:
    r = _map(obj, where, _RULE_FIELDS)
    effective = due_day(_str(r["effective"], f"{where}.effective"))
    if effective is None:
        raise ProtocolError(f"{where}.effective must be a YYYY-MM-DD day")
    gov = _str(r["governorate"], f"{where}.governorate", GOVERNORATE)
    if governorate is not None and gov != governorate:
        raise ProtocolError(
            f"{where} is a rule of {gov}, not of this node's governorate {governorate}",
            code="foreign_bill",
        )
    rule = Rule(
        governorate=gov,
        version=_int(r["version"], f"{where}.version", low=1),
        effective=effective,
        grace_days=_int(r["grace_days"], f"{where}.grace_days"),
        fixed=_int(r["fixed"], f"{where}.fixed"),
        percent_bp=_int(r["percent_bp"], f"{where}.percent_bp"),
        cap=None if r["cap"] is None else _int(r["cap"], f"{where}.cap"),
    )
    if rule.grace_days > MAX_GRACE_DAYS:
        raise ProtocolError(f"{where}.grace_days must be at most {MAX_GRACE_DAYS}")
    try:
        rule.check()
    except ValueError as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    return rule


def decode_fine_rules(body: bytes, governorate: str | None = None) -> list[Rule]:
    """The rules of a fine_rules frame; with `governorate`, a rule of another governorate
    refuses the frame (`foreign_bill`, as for bills)."""
    frame = _frame(_unpack(body, MAX_RULES), ("rules",))
    raw = _list(frame["rules"], "rules", MAX_RULES)
    rules = [_rule(item, f"rules[{i}]", governorate) for i, item in enumerate(raw)]
    if len({(r.governorate, r.version) for r in rules}) != len(rules):
        raise ProtocolError("rules has a version twice")
    return rules


# --- a node's ledger at the centre (reconciliation) ----------------------------------

MAX_LEDGER = 250_000  # entries of one node's day: 2.5 times the busiest day benched
CENTRE_VERDICTS = ("applied", "credited", "rejected")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


@dataclass(frozen=True)
class LedgerEntry:
    """One entry the centre recorded from the node, as reconciliation compares it."""

    seq: int
    id: str
    kind: str
    amount: int | None  # a payment's (or a correction's) amount; None when it had none
    verdict: str
    reason: str | None


def encode_ledger(node: str, day: str, entries: Sequence[LedgerEntry]) -> bytes:
    return _pack(
        {
            "v": PROTOCOL_VERSION, "node": node, "day": day,
            "entries": [[e.seq, e.id, e.kind, e.amount, e.verdict, e.reason] for e in entries],
        }
    )  # fmt: skip


def decode_ledger(body: bytes, node: str, day: str) -> list[LedgerEntry]:
    """The ledger frame for `node`'s `day`; anything else (another node, day) is refused."""
    frame = _frame(_unpack(body, MAX_LEDGER), ("node", "day", "entries"))
    if frame["node"] != node or frame["day"] != day:
        raise ProtocolError("the ledger is not of the node and day asked for")
    out = []
    for i, item in enumerate(_list(frame["entries"], "entries", MAX_LEDGER)):
        where = f"entries[{i}]"
        if not isinstance(item, list) or len(item) != 6:
            raise ProtocolError(f"{where} must be an array of 6")
        seq, entry_id, kind, amount, verdict, reason = item
        if verdict not in CENTRE_VERDICTS:
            raise ProtocolError(f"{where}: verdict must be one of {', '.join(CENTRE_VERDICTS)}")
        out.append(
            LedgerEntry(
                seq=_int(seq, f"{where}.seq", low=1),
                id=_str(entry_id, f"{where}.id", ENTRY_ID),
                kind=_str(kind, f"{where}.kind", _KIND),
                amount=None if amount is None else _int(amount, f"{where}.amount"),
                verdict=verdict,
                reason=None if reason is None else _str(reason, f"{where}.reason", _CODE),
            )
        )
    return out


def valid_day(value: str) -> bool:
    return bool(_DAY.match(value))


# --- error frames ----------------------------------------------------------------------


def encode_error(code: str, detail: str) -> bytes:
    return _pack({"v": PROTOCOL_VERSION, "error": code, "detail": detail})


def decode_error(body: bytes) -> tuple[str, str]:
    """(code, detail) of an error frame; ("unknown", text) for anything else (a proxy's page)."""
    try:
        frame = _frame(_unpack(body, 0), ("error", "detail"))
        return _str(frame["error"], "error"), _str(frame["detail"], "detail")
    except ProtocolError:
        text = bytes(body).decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else ""
        return "unknown", text[:MAX_TEXT]
