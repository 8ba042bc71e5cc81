"""Fault matrix row 6, bad input at the node: property-based requests against a real node.

Hypothesis generates arbitrary JSON values, near-valid payment bodies (each field replaced by
any JSON value, keys dropped or added, huge integers, any Unicode including lone surrogates
and control characters), raw bodies (any bytes, huge digit strings, deep nesting), arbitrary
Authorization / Idempotency-Key / Content-Type headers and arbitrary path segments. Requests
are written byte for byte (tests/integration/loophost.py) to a node on loopback, started
once per test function; the examples run against it one after another.

For every response: status < 500; every error is problem+json with exactly the six keys and
a `code` that edge/errors.py defines and edge/web/openapi.json documents for that operation and
status; every refusal leaves the database byte-for-byte unchanged (SHA-256 over every table);
a 201 comes only for a request an independent oracle (below) calls valid, and then adds
exactly one outbox entry, one payment and one idempotency record.

EDGE_FUZZ_EXAMPLES scales the number of examples per test (default 150, derandomized).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from helpers import make_bill
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from loophost import LoopHost, RawResponse, db_digest, hosted_node, raw_request
from nodefixtures import RunningNode

from edge import errors, mirror, payments

EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BIG = "DAM-2026-05-0100234567"  # owes 10^12 piastres: valid payments never exhaust it
PARTIAL = "DAM-2026-05-0100999999"  # owes 50,000
PAID = "DAM-2026-03-0100234567"  # owes nothing
BILLS = [
    make_bill("0100234567", amount=10**12),
    make_bill("0100234567", "2026-03", amount=150_000, paid=150_000),
    make_bill("0100999999", amount=80_000, paid=30_000),
]
KNOWN_BILLS = (BIG, PARTIAL, PAID)
FIELDS = ("bill_id", "amount", "method", "cashier")
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "title_ar"}
MAX_AMOUNT = 10**12
BILL_ID = re.compile(r"[A-Z]{3}-[0-9]{4}-(0[1-9]|1[0-2])-[0-9]{1,20}")
ACCOUNT = re.compile(r"[0-9]{1,20}")
PAYMENT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}_[0-9A-HJKMNP-TV-Z]{26}")
RECEIPT = re.compile(r"DAM-DAM1-[0-9]{8}-[0-9]{6}")

# Every stable code edge/errors.py defines, except the one that means "a bug": internal_error.
CODES = {
    kind.code
    for kind in vars(errors).values()
    if isinstance(kind, type) and issubclass(kind, errors.ApiError) and kind is not errors.ApiError
} - {"internal_error"}
OPENAPI = json.loads(
    (Path(errors.__file__).parent / "web" / "openapi.json").read_text(encoding="utf-8")
)
GENERIC = {404: {"not_found"}, 405: {"method_not_allowed"}}


def documented(path: str, method: str) -> dict[int, set[str]]:
    """status -> the problem codes edge/web/openapi.json lists for this operation (and any path)."""
    out: dict[int, set[str]] = {k: set(v) for k, v in GENERIC.items()}
    for status, response in OPENAPI["paths"][path][method]["responses"].items():
        if "$ref" in response:
            response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        problem = response.get("content", {}).get("application/problem+json")
        if problem is not None:
            out.setdefault(int(status), set()).update(
                problem["schema"]["properties"]["code"]["enum"]
            )
    return out


# --- strategies ------------------------------------------------------------------------

# Any Unicode, lone surrogates and C0/C1 controls included (JSON can carry them as escapes).
any_text = st.text(st.characters(codec=None, categories=None), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, -1, MAX_AMOUNT, MAX_AMOUNT + 1, 2**63 - 1, 2**63, 2**64, -(2**63)])
    | st.integers(min_value=10**18, max_value=10**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
known_bills = st.sampled_from(KNOWN_BILLS)
# Three in four are bills the node holds, so valid payments are common enough to check.
good_bill_ids = st.integers(0, 3).flatmap(
    lambda i: st.from_regex(BILL_ID, fullmatch=True) if i == 0 else known_bills
)
good_amounts = st.integers(1, 60_000) | st.sampled_from([1, 50_000, 50_001, MAX_AMOUNT])
good_methods = st.sampled_from(payments.METHODS)
# Free text (edge.text): no control, format, surrogate, private-use or unassigned
# characters, no line or paragraph separators.
REFUSED_IN_TEXT = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
good_cashiers = st.text(
    st.characters(codec="utf-8", exclude_categories=REFUSED_IN_TEXT), min_size=1, max_size=64
)
good = {"bill_id": good_bill_ids, "amount": good_amounts, "method": good_methods,
        "cashier": good_cashiers}  # fmt: skip
bad = {
    "bill_id": st.sampled_from(
        [
            BIG + "\n",
            " " + BIG,
            BIG.lower(),
            "DAM-2026-13-0100234567",
            "DAM-\u0662\u0660\u0662\u0666-05-1",
        ]
    )
    | any_text,
    "amount": st.sampled_from([0, -5, 100.0, 1e3, "100", True, False, None, MAX_AMOUNT + 1, 2**64])
    | st.floats(),
    "method": st.sampled_from(["CASH", "cash ", "bitcoin", "", ["cash"], {"m": "cash"}]) | any_text,
    "cashier": st.sampled_from(
        [
            "",
            " ",
            "\u3000",
            "a\x00b",
            "ra\u202emi",
            "ra\u200bmi",
            "\ufefframi",
            "a\x85b",
            "tab\there",
            "x" * 65,
            "\ud800",
            "ok\x7f",
            "\x85",
            "\udfff\ud800",
        ]
    )
    | any_text,
}


@st.composite
def payment_bodies(draw: st.DrawFn) -> Any:
    """A valid payment body, then up to two faults: a near-miss value, any JSON, a key dropped
    or added."""
    body: dict[str, Any] = {field: draw(good[field]) for field in FIELDS}
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        how = draw(st.sampled_from(["near", "near", "json", "drop", "add"]))
        field = draw(st.sampled_from(FIELDS))
        if how == "near":
            body[field] = draw(bad[field])
        elif how == "json":
            body[field] = draw(json_values)
        elif how == "drop":
            body.pop(field, None)
        else:
            body[
                draw(any_text | st.sampled_from(["Amount", "tip", "bill_id ", "\ud800", "x\udfff"]))
            ] = draw(json_values)
    return body


def encode(doc: Any, ascii_only: bool) -> bytes:
    text = json.dumps(doc, ensure_ascii=ascii_only)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: send it escaped, as JSON allows
        return json.dumps(doc).encode()


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"amount": 1' + b"0" * 5000 + b"}",  # over Python's int-parsing digit limit
            b'{"bill_id": "'
            + BIG.encode()
            + b'", "amount": 1, "amount": 2, "method": "cash", "cashier": "x"}',
            b'{"bill_id": "'
            + BIG.encode()
            + b'", "amount": NaN, "method": "cash", "cashier": "x"}',
            b'{"bill_id": "'
            + BIG.encode()
            + b'", "amount": 1e400, "method": "cash", "cashier": "x"}',
            b'\xef\xbb\xbf{"bill_id": "'
            + BIG.encode()
            + b'", "amount": 1, "method": "cash", "cashier": "x"}',
            b"[" * 50_000 + b"]" * 50_000,
            b'{"a": "' + b"x" * (65 * 1024) + b'"}',
            b'{"cashier": "\\ud800", "bill_id": "'
            + BIG.encode()
            + b'", "amount": 1, "method": "cash"}',
            '{"bill_id": "DAM-2026-05-0100234567", "amount": 1, "method": "cash", "cashier": "x"}'.encode(
                "utf-16"
            ),
        ]
    ),
)


# --- the oracle ------------------------------------------------------------------------


def valid_cashier(value: Any) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.strip():
        return False
    # A lone surrogate (Cs) is not text: it could not be stored or sent.
    return not any(unicodedata.category(ch) in REFUSED_IN_TEXT for ch in value)


def body_fault(doc: Any) -> tuple[int, str] | None:
    """The refusal the contract requires for this parsed body, or None if its shape is valid."""
    if not isinstance(doc, dict) or set(doc) != set(FIELDS):
        return 400, "invalid_body"
    amount = doc["amount"]
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        return 422, "invalid_amount"
    if not isinstance(doc["bill_id"], str) or not BILL_ID.fullmatch(doc["bill_id"]):
        return 422, "invalid_field"
    if not isinstance(doc["method"], str) or doc["method"] not in payments.METHODS:
        return 422, "invalid_field"
    if not valid_cashier(doc["cashier"]):
        return 422, "invalid_field"
    return None


def parse(raw: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):
        return False, None


class Fuzzer:
    """Sends requests to one running node and checks every answer against the contract."""

    def __init__(self, host: LoopHost, rn: RunningNode) -> None:
        self.host = host
        self.rn = rn
        self.port = int(rn.url.rsplit(":", 1)[1])
        self.keys = 0
        self.seen: Counter[str] = Counter()
        self.refusals_changed_db = 0
        self.accepted = 0
        self.receipts: set[str] = set()

    def digest(self) -> str:
        # When a token was last used is bookkeeping a refused request may update (it did
        # authenticate), and the audit trail records refused reads by design (DESIGN 5.10),
        # flushed whenever its loop's tick comes; everything else must stay as it was.
        return self.host.call(self.rn.node.db.read, lambda c: db_digest(c, self.tables(c)))

    @staticmethod
    def tables(conn: Any) -> tuple[str, ...]:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name NOT IN ('token_last_used', 'audit_log') ORDER BY name"
        )
        return tuple(row[0] for row in rows)

    def counts(self) -> tuple[int, int, int, int]:
        return self.host.call(self.rn.db_counts)

    def due(self, bill_id: str) -> int | None:
        view = self.host.call(self.rn.node.db.read, lambda c: mirror.bill(c, bill_id))
        return None if view is None else view.due

    def fresh_key(self) -> bytes:
        self.keys += 1
        return f"fuzz-{self.keys:08d}".encode()

    def auth(self, who: str = "cashier") -> tuple[bytes, bytes]:
        return b"Authorization", f"Bearer {self.rn.tokens[who]}".encode()

    def send(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        allowed: dict[int, set[str]],
    ) -> RawResponse:
        before_digest, before_counts = self.digest(), self.counts()
        resp = self.host.run(raw_request(self.port, method, target, headers, body))
        label = f"{resp.status}"
        assert resp.status < 500, (resp.status, resp.body[:300])
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json", resp.headers
            problem = json.loads(resp.body)
            assert set(problem) == PROBLEM_KEYS, problem
            assert problem["status"] == resp.status
            assert problem["code"] in CODES, problem
            assert problem["code"] in allowed.get(resp.status, set()), (
                f"{problem['code']} ({resp.status}) is not documented for this operation"
            )
            assert problem["title_ar"] and problem["title"] and problem["detail"]
            label += f" {problem['code']}"
        self.seen[label] += 1
        event(label)
        if resp.status != 201 or resp.headers.get("idempotent-replayed") == "true":
            if self.digest() != before_digest:
                self.refusals_changed_db += 1
                raise AssertionError(f"a {resp.status} answer changed the database")
        else:
            after = self.counts()
            assert after[:3] == tuple(n + 1 for n in before_counts[:3]), (before_counts, after)
            assert after[3] in (before_counts[3], before_counts[3] + 1)
        return resp

    # --- payments ------------------------------------------------------------------------

    def pay(
        self,
        body: bytes,
        *,
        key: bytes | None = None,
        content_type: bytes | None = b"application/json",
        authorization: tuple[bytes, bytes] | None = None,
    ) -> RawResponse:
        headers = [authorization or self.auth()]
        headers.append((b"Idempotency-Key", key if key is not None else self.fresh_key()))
        if content_type is not None:
            headers.append((b"Content-Type", content_type))
        return self.send(b"POST", b"/v1/payments", headers, body, PAYMENT_CODES)

    def expect_payment(self, raw: bytes) -> tuple[int, str | None]:
        """(status, code) the contract requires for this body from an authorized client."""
        if len(raw) > 64 * 1024:
            return 413, "body_too_large"
        ok, doc = parse(raw)
        if not ok:
            return 400, "malformed_json"
        fault = body_fault(doc)
        if fault is not None:
            return fault
        due = self.due(doc["bill_id"])
        if due is None:
            return 404, "unknown_bill"
        if due == 0:
            return 409, "bill_already_paid"
        if doc["amount"] > due:
            return 409, "amount_exceeds_due"
        return 201, None

    def check_payment(self, raw: bytes) -> None:
        status, code = self.expect_payment(raw)
        resp = self.pay(raw)
        got = json.loads(resp.body)
        assert (resp.status, got.get("code")) == (status, code), (raw[:200], got)
        if status == 201:
            self.accepted += 1
            doc = json.loads(raw)
            assert got["amount"] == doc["amount"] and got["bill_id"] == doc["bill_id"]
            assert PAYMENT_ID.fullmatch(got["payment_id"]) and RECEIPT.fullmatch(got["receipt"])
            assert got["receipt"] not in self.receipts
            self.receipts.add(got["receipt"])


PAYMENT_CODES = documented("/v1/payments", "post")


@pytest.fixture
def fuzzer(tmp_path: Path) -> Any:
    with hosted_node(tmp_path, BILLS) as (host, rn):
        yield Fuzzer(host, rn)


# --- tests -----------------------------------------------------------------------------


def test_arbitrary_json_values_as_payment_bodies(fuzzer: Fuzzer) -> None:
    @FUZZ
    @given(doc=json_values, ascii_only=st.booleans())
    def check(doc: Any, ascii_only: bool) -> None:
        fuzzer.check_payment(encode(doc, ascii_only))

    check()
    assert fuzzer.accepted == 0  # no arbitrary value happens to be a whole valid payment
    print(f"\narbitrary JSON: {dict(fuzzer.seen)}")


def test_near_valid_payment_bodies(fuzzer: Fuzzer) -> None:
    @FUZZ
    @given(doc=payment_bodies(), ascii_only=st.booleans())
    def check(doc: Any, ascii_only: bool) -> None:
        fuzzer.check_payment(encode(doc, ascii_only))

    check()
    assert fuzzer.accepted > 0 and len(fuzzer.seen) > 5  # the strategy reaches both sides
    print(f"\nnear-valid bodies: {dict(fuzzer.seen)}; 201s: {fuzzer.accepted}")


def test_raw_payment_bodies(fuzzer: Fuzzer) -> None:
    @FUZZ
    @given(raw=raw_bodies)
    def check(raw: bytes) -> None:
        fuzzer.check_payment(raw)

    check()
    print(f"\nraw bodies: {dict(fuzzer.seen)}")


def test_chunked_body_over_the_limit_is_413(fuzzer: Fuzzer) -> None:
    chunk = b"x" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    headers = [
        fuzzer.auth(),
        (b"Idempotency-Key", b"chunked"),
        (b"Content-Type", b"application/json"),
        (b"Transfer-Encoding", b"chunked"),
    ]
    resp = fuzzer.host.run(
        raw_request(fuzzer.port, b"POST", b"/v1/payments", headers, body, content_length=False)
    )
    assert resp.status == 413 and json.loads(resp.body)["code"] == "body_too_large"


# Header values: any byte a client can legally put in a field value (visible ASCII, space,
# tab inside, obs-text 0x80-0xFF), so every request reaches the application.
def legal(value: bytes) -> bytes:
    """Only the bytes HTTP allows in a field value, without the whitespace a parser trims."""
    return bytes(c for c in value if c == 0x09 or 0x20 <= c != 0x7F).strip(b" \t")


field_bytes = st.binary(max_size=300).map(legal)
UNICODE = st.text(max_size=20).map(lambda s: legal(s.encode("utf-8", "surrogatepass")))


def mostly(common: st.SearchStrategy[Any], *faults: st.SearchStrategy[Any]) -> Any:
    """`common` about half the time, else one of `faults` (one_of alone would pick evenly)."""
    return st.integers(0, 2 * len(faults) - 1).flatmap(
        lambda i: faults[i] if i < len(faults) else common
    )


@st.composite
def header_sets(draw: st.DrawFn) -> dict[str, bytes | None]:
    tokens = ["cashier", "viewer", "admin"]
    auth = draw(
        mostly(
            st.sampled_from(tokens).map(lambda who: f"Bearer {who}".encode()),
            st.none(),
            st.tuples(
                st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"Basic", b"Token", b""]),
                st.sampled_from([b" ", b"  ", b"\t"]),
                st.sampled_from([b"cashier", b"admin", b"viewer", b"nope"]) | field_bytes,
            ).map(b"".join),
            field_bytes,
        )
    )
    key = draw(
        mostly(
            st.from_regex(rb"[\x20-\x7e]{1,255}", fullmatch=True).map(lambda b: b.strip(b" \t")),
            st.none(),
            st.sampled_from([b"", b"k" * 255, b"k" * 256, "مفتاح".encode()]),
            field_bytes,
            UNICODE,
        )
    )
    ctype = draw(
        mostly(
            st.just(b"application/json"),
            st.none(),
            st.sampled_from(
                [
                    b"application/json; charset=utf-8",
                    b"Application/JSON",
                    b"application/json;charset=latin-1",
                    b"text/plain",
                    b"application/x-www-form-urlencoded",
                    b"application/problem+json",
                    b"application/jsonx",
                    b"multipart/form-data; boundary=x",
                    b"",
                ]
            ),
            field_bytes,
        )
    )
    return {"auth": auth, "key": key, "ctype": ctype}


def resolve_token(fuzzer: Fuzzer, value: bytes) -> bytes:
    """Strategy placeholders (cashier/viewer/admin) become the node's real tokens."""
    for who, token in fuzzer.rn.tokens.items():
        value = value.replace(who.encode(), token.encode())
    return value


def test_arbitrary_auth_key_and_content_type_headers(fuzzer: Fuzzer) -> None:
    body = json.dumps({"bill_id": BIG, "amount": 1, "method": "cash", "cashier": "c"}).encode()
    token_scopes = {fuzzer.rn.tokens["cashier"]: "pay", fuzzer.rn.tokens["admin"]: "admin",
                    fuzzer.rn.tokens["viewer"]: "inquire"}  # fmt: skip

    @FUZZ
    @given(h=header_sets())
    def check(h: dict[str, bytes | None]) -> None:
        headers: list[tuple[bytes, bytes]] = []
        auth = None if h["auth"] is None else resolve_token(fuzzer, h["auth"])
        if auth is not None:
            headers.append((b"Authorization", auth))
        if h["key"] is not None:
            headers.append((b"Idempotency-Key", h["key"]))
        if h["ctype"] is not None:
            headers.append((b"Content-Type", h["ctype"]))
        # The oracle, in the documented order: token, key, content type, then the body.
        text = (auth or b"").decode("utf-8", "surrogateescape").strip(" \t")
        scheme, _, token = text.partition(" ")
        scope = token_scopes.get(token.strip()) if scheme.lower() == "bearer" else None
        key = None if h["key"] is None else h["key"].decode("utf-8", "surrogateescape")
        mime = (h["ctype"] or b"").split(b";")[0].strip().lower()
        if scope is None:
            want: tuple[int, str | None] = (401, "unauthorized")
        elif scope != "pay":
            want = (403, "forbidden")
        elif key is None:
            want = (400, "idempotency_key_required")
        elif not re.fullmatch(r"[\x20-\x7e]{1,255}", key):
            want = (400, "invalid_idempotency_key")
        elif mime != b"application/json":
            want = (415, "unsupported_media_type")
        else:
            want = fuzzer.expect_payment(body)
        resp = fuzzer.send(b"POST", b"/v1/payments", headers, body, PAYMENT_CODES)
        got = json.loads(resp.body)
        # A key repeated across examples is a replay (201 again) or a reuse; both are fine.
        if want[0] == 201 and resp.status == 201:
            return
        assert (resp.status, got.get("code")) == want, (h, got)
        if resp.status == 401:
            assert resp.headers.get("www-authenticate") == "Bearer"

    check()
    print(f"\nheaders: {dict(fuzzer.seen)}")


PATHS = {
    "account": ("/v1/accounts/{}/bills", "/v1/accounts/{account}/bills", ACCOUNT),
    "bill_id": ("/v1/bills/{}", "/v1/bills/{bill_id}", BILL_ID),
    "payment_id": ("/v1/payments/{}", "/v1/payments/{payment_id}", PAYMENT_ID),
}
segments = st.one_of(
    st.text(max_size=40).map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
    st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="")),
    st.from_regex(r"[0-9]{1,25}", fullmatch=True),
    st.from_regex(BILL_ID, fullmatch=True),
    st.from_regex(PAYMENT_ID, fullmatch=True),
    st.sampled_from(["0100234567", "0100999999", BIG, PAID]),
    st.sampled_from(
        ["0100234567", BIG, "..", ".", "%2e%2e", "%00", "a%2Fb", "1%0A", "%F0%9F%92%A1"]
    ),
)


def test_arbitrary_path_segments(fuzzer: Fuzzer) -> None:
    allowed = {name: documented(template, "get") for name, (_, template, _) in PATHS.items()}

    @FUZZ
    @given(
        name=st.sampled_from(sorted(PATHS)),
        segment=segments,
        method=st.sampled_from([b"GET", b"GET", b"GET", b"POST", b"DELETE", b"PUT", b"PATCH"]),
    )
    def check(name: str, segment: str, method: bytes) -> None:
        pattern, _, shape = PATHS[name]
        target = pattern.format(segment).encode()
        resp = fuzzer.send(method, target, [fuzzer.auth()], b"", allowed[name])
        if resp.status == 200:
            doc = json.loads(resp.body)
            assert shape.fullmatch(doc.get(name, "")), doc

    check()
    print(f"\npaths: {dict(fuzzer.seen)}")


@pytest.mark.parametrize(
    "header",
    [
        (b"Idempotency-Key", b"a\x00b"),
        (b"Authorization", b"Bearer \x01x"),
        (b"Content-Type", b"\x7f"),
    ],
)
def test_control_bytes_in_headers_are_refused_by_the_parser(
    fuzzer: Fuzzer, header: tuple[bytes, bytes]
) -> None:
    """Control bytes in a header are not HTTP: aiohttp's parser answers 400 before the app,
    in text/plain (the one refusal that is not problem+json). Never a 5xx, nothing written."""
    before = fuzzer.digest()
    body = json.dumps({"bill_id": BIG, "amount": 1, "method": "cash", "cashier": "c"}).encode()
    headers = [fuzzer.auth(), (b"Content-Type", b"application/json"), header]
    resp = fuzzer.host.run(raw_request(fuzzer.port, b"POST", b"/v1/payments", headers, body))
    assert resp.status == 400
    assert fuzzer.digest() == before
