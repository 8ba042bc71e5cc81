"""The node's HTTP API through a real server on loopback: inquiries, payments, auth, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nodefixtures import RunningNode

BILL = "DAM-2026-05-0100234567"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "title_ar"}


async def pay(
    rn: RunningNode, body: dict[str, Any], key: str, who: str = "cashier"
) -> tuple[int, dict[str, Any], Any]:
    async with rn.session.post(
        f"{rn.url}/v1/payments", json=body, headers=rn.headers(who, **{"Idempotency-Key": key})
    ) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def payment(amount: int = 50_000, bill_id: str = BILL) -> dict[str, Any]:
    return {"bill_id": bill_id, "amount": amount, "method": "cash", "cashier": "rami"}


async def inquire(rn: RunningNode, account: str = "0100234567") -> dict[str, Any]:
    async with rn.session.get(
        f"{rn.url}/v1/accounts/{account}/bills", headers=rn.headers("viewer")
    ) as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def test_inquiry_of_seeded_mirror(running: RunningNode) -> None:
    doc = await inquire(running)
    assert doc["account"] == "0100234567"
    assert doc["governorate"] == "DAM"
    assert doc["subscriber"]["name"] == "سمير الحلبي"
    assert [b["cycle"] for b in doc["bills"]] == ["2026-03", "2026-05"]
    old, new = doc["bills"]
    assert (old["status"], old["due"]) == ("paid", 0)
    assert (new["status"], new["due"], new["pending_local"]) == ("unpaid", 150_000, 0)
    assert doc["total_due"] == 150_000
    assert doc["currency"] == "SYP"
    assert doc["as_of"] is not None and doc["stale"] is False


async def test_partly_paid_bill_shows_partial(running: RunningNode) -> None:
    async with running.session.get(
        f"{running.url}/v1/bills/DAM-2026-05-0100999999", headers=running.headers()
    ) as resp:
        doc = await resp.json()
    assert resp.status == 200
    assert (doc["amount"], doc["paid"], doc["due"], doc["status"]) == (
        80_000,
        30_000,
        50_000,
        "partial",
    )


async def test_payment_happy_path_reduces_due_at_once(running: RunningNode) -> None:
    status, body, headers = await pay(running, payment(50_000), "k-1")
    assert status == 201, body
    assert body["bill_id"] == BILL and body["amount"] == 50_000
    assert body["due_after"] == 100_000
    assert body["state"] == "pending_sync"
    assert body["receipt"].startswith("DAM-") and body["receipt"].endswith("-000001")
    assert headers["Location"] == f"/v1/payments/{body['payment_id']}"
    assert "Idempotent-Replayed" not in headers
    doc = await inquire(running)
    bill = doc["bills"][1]
    assert (bill["pending_local"], bill["due"], bill["status"]) == (50_000, 100_000, "partial")
    async with running.session.get(
        f"{running.url}{headers['Location']}", headers=running.headers()
    ) as resp:
        got = await resp.json()
    assert resp.status == 200
    assert (
        got["state"] == "pending_sync"
        and got["receipt"] == body["receipt"]
        and got["verdict"] is None
    )


async def test_receipts_are_unique_and_counted(running: RunningNode) -> None:
    receipts = set()
    for i in range(3):
        status, body, _ = await pay(running, payment(1_000), f"r-{i}")
        assert status == 201
        receipts.add(body["receipt"])
    assert len(receipts) == 3
    assert sorted(r.rsplit("-", 1)[1] for r in receipts) == ["000001", "000002", "000003"]


async def test_idempotent_replay_returns_first_response(running: RunningNode) -> None:
    first = await pay(running, payment(20_000), "same-key")
    second = await pay(running, payment(20_000), "same-key")
    assert first[0] == second[0] == 201
    assert first[1] == second[1]
    assert second[2]["Idempotent-Replayed"] == "true"
    assert second[2]["Location"] == first[2]["Location"] == f"/v1/payments/{first[1]['payment_id']}"
    assert running.db_counts()[:2] == (1, 1)
    assert (await inquire(running))["bills"][1]["due"] == 130_000


async def test_idempotency_keys_are_per_client(running: RunningNode) -> None:
    a = await pay(running, payment(1_000), "shared")
    b = await pay(running, payment(1_000), "shared", who="cashier2")
    assert a[0] == b[0] == 201
    assert a[1]["payment_id"] != b[1]["payment_id"]


async def test_key_reused_with_other_body_is_422_and_writes_nothing(running: RunningNode) -> None:
    assert (await pay(running, payment(20_000), "k"))[0] == 201
    before = running.db_counts()
    status, body, headers = await pay(running, payment(20_001), "k")
    assert status == 422 and body["code"] == "idempotency_key_reused"
    assert headers["Content-Type"].startswith("application/problem+json")
    assert running.db_counts() == before


async def test_concurrent_requests_with_same_key_make_one_payment(running: RunningNode) -> None:
    results = await asyncio.gather(*(pay(running, payment(10_000), "race") for _ in range(20)))
    assert {r[0] for r in results} == {201}
    assert len({r[1]["payment_id"] for r in results}) == 1
    assert sum(1 for r in results if "Idempotent-Replayed" not in r[2]) == 1
    assert running.db_counts()[:2] == (1, 1)
    assert (await inquire(running))["bills"][1]["due"] == 140_000


async def test_concurrent_payments_never_overpay(running: RunningNode) -> None:
    results = await asyncio.gather(*(pay(running, payment(40_000), f"c-{i}") for i in range(8)))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(201) == 3  # 3 x 40,000 fit in 150,000; the rest would overpay
    assert all(r[1]["code"] == "amount_exceeds_due" for r in results if r[0] == 409)
    assert (await inquire(running))["bills"][1]["due"] == 30_000


async def test_overpay_is_409(running: RunningNode) -> None:
    before = running.db_counts()
    status, body, _ = await pay(running, payment(150_001), "over")
    assert status == 409 and body["code"] == "amount_exceeds_due"
    assert set(body) == PROBLEM_KEYS and body["title_ar"]
    assert running.db_counts() == before


async def test_paid_bill_is_409(running: RunningNode) -> None:
    status, body, _ = await pay(running, payment(1, "DAM-2026-03-0100234567"), "paid")
    assert status == 409 and body["code"] == "bill_already_paid"
    assert (await pay(running, payment(150_000), "full"))[0] == 201
    status, body, _ = await pay(running, payment(1), "after-full")
    assert status == 409 and body["code"] == "bill_already_paid"


async def test_unknown_bill_account_and_payment_are_404(running: RunningNode) -> None:
    status, body, _ = await pay(running, payment(1, "DAM-2026-05-0999999999"), "nobill")
    assert status == 404 and body["code"] == "unknown_bill"
    for path, code in (
        ("/v1/accounts/0999999999/bills", "unknown_account"),
        ("/v1/bills/DAM-2026-05-0999999999", "unknown_bill"),
        ("/v1/payments/dam-1_01JD0000000000000000000000", "unknown_payment"),
        ("/v1/nothing-here", "not_found"),
    ):
        async with running.session.get(running.url + path, headers=running.headers()) as resp:
            assert resp.status == 404, path
            assert (await resp.json(content_type=None))["code"] == code


AUTH_CASES = [
    ("GET", "/v1/accounts/0100234567/bills", None, 401, "unauthorized"),
    ("GET", "/v1/accounts/0100234567/bills", "Bearer wrong-token", 401, "unauthorized"),
    ("GET", "/v1/accounts/0100234567/bills", "Basic dXNlcjpwYXNz", 401, "unauthorized"),
    ("GET", "/v1/accounts/0100234567/bills", "Bearer ", 401, "unauthorized"),
    ("GET", "/v1/bills/" + BILL, None, 401, "unauthorized"),
    ("GET", "/v1/payments/dam-1_01JD0000000000000000000000", None, 401, "unauthorized"),
    ("POST", "/v1/payments", None, 401, "unauthorized"),
    ("POST", "/v1/payments", "viewer", 403, "forbidden"),
]


@pytest.mark.parametrize(("method", "path", "auth", "status", "code"), AUTH_CASES)
async def test_auth(
    running: RunningNode, method: str, path: str, auth: str | None, status: int, code: str
) -> None:
    headers = {"Idempotency-Key": "auth-case"}
    if auth in running.tokens:
        headers.update(running.headers(auth))
    elif auth is not None:
        headers["Authorization"] = auth
    async with running.session.request(
        method, running.url + path, json=payment(), headers=headers
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == status
        assert body["code"] == code
        if status == 401:
            assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert running.db_counts()[:2] == (0, 0)


async def test_scopes_allow_what_they_name(running: RunningNode) -> None:
    assert (await inquire(running))["account"] == "0100234567"  # inquire-only token reads
    assert (await pay(running, payment(1), "cashier-pays"))[0] == 201  # a pay token pays
    # admin runs the node; it neither pays nor inquires (tests/integration/test_scopes.py)
    assert (await pay(running, payment(1), "admin-pays", who="admin"))[0] == 403


@pytest.mark.parametrize("path", ["/v1/status", "/healthz", "/readyz", "/openapi.json"])
async def test_operational_views_need_no_token(running: RunningNode, path: str) -> None:
    async with running.session.get(running.url + path) as resp:
        assert resp.status == 200


async def test_status_document(running: RunningNode) -> None:
    assert (await pay(running, payment(5_000), "s"))[0] == 201
    async with running.session.get(f"{running.url}/v1/status") as resp:
        doc = await resp.json()
    assert doc["node"] == "dam-1" and doc["governorate"] == "DAM"
    assert doc["outbox"]["pending"] == 1 and doc["outbox"]["delivered"] == 0
    assert doc["outbox"]["oldest_pending_age_s"] >= 0
    assert doc["mirror"]["bills"] == 3 and doc["mirror"]["cursor"] == 1
    assert doc["power"]["state"] == "unknown"
    assert set(doc["link"]) >= {"state", "last_ok_at", "last_error", "clock_skew_s"}
    assert "0100234567" not in json.dumps(doc)  # no personal data


def _bad(**kw: Any) -> dict[str, Any]:
    return payment() | kw


# (description, headers, raw body or json, expected status, expected code)
BAD_REQUESTS: list[tuple[str, dict[str, str], Any, int, str]] = [
    ("no key", {}, payment(), 400, "idempotency_key_required"),
    ("empty key", {"Idempotency-Key": ""}, payment(), 400, "invalid_idempotency_key"),
    ("long key", {"Idempotency-Key": "k" * 256}, payment(), 400, "invalid_idempotency_key"),
    ("non-ascii key", {"Idempotency-Key": "مفتاح"}, payment(), 400, "invalid_idempotency_key"),
    ("not json", {}, b"{bill_id:", 400, "malformed_json"),
    ("empty body", {}, b"", 400, "malformed_json"),
    ("json array", {}, [payment()], 400, "invalid_body"),
    ("json string", {}, "pay", 400, "invalid_body"),
    ("json null", {}, None, 400, "invalid_body"),
    (
        "missing amount",
        {},
        {k: v for k, v in payment().items() if k != "amount"},
        400,
        "invalid_body",
    ),
    (
        "missing bill_id",
        {},
        {k: v for k, v in payment().items() if k != "bill_id"},
        400,
        "invalid_body",
    ),
    ("extra field", {}, _bad(tip=5), 400, "invalid_body"),
    ("amount zero", {}, _bad(amount=0), 422, "invalid_amount"),
    ("amount negative", {}, _bad(amount=-100), 422, "invalid_amount"),
    ("amount float", {}, _bad(amount=100.5), 422, "invalid_amount"),
    ("amount whole float", {}, _bad(amount=100.0), 422, "invalid_amount"),
    ("amount string", {}, _bad(amount="100"), 422, "invalid_amount"),
    ("amount bool", {}, _bad(amount=True), 422, "invalid_amount"),
    ("amount huge", {}, _bad(amount=10**30), 422, "invalid_amount"),
    ("amount null", {}, _bad(amount=None), 422, "invalid_amount"),
    ("bill_id number", {}, _bad(bill_id=123), 422, "invalid_field"),
    ("bill_id malformed", {}, _bad(bill_id="DAM-05-1"), 422, "invalid_field"),
    ("bill_id injection", {}, _bad(bill_id="DAM-2026-05-1' OR 1=1 --"), 422, "invalid_field"),
    ("method unknown", {}, _bad(method="bitcoin"), 422, "invalid_field"),
    ("method list", {}, _bad(method=["cash"]), 422, "invalid_field"),
    ("cashier empty", {}, _bad(cashier=""), 422, "invalid_field"),
    ("cashier control chars", {}, _bad(cashier="a\x00b"), 422, "invalid_field"),
    ("cashier too long", {}, _bad(cashier="x" * 65), 422, "invalid_field"),
    ("text/plain", {"Content-Type": "text/plain"}, b'{"a":1}', 415, "unsupported_media_type"),
    ("oversized", {}, b'{"bill_id": "' + b"x" * (70 * 1024) + b'"}', 413, "body_too_large"),
    ("deep nesting", {}, b"[" * 100_000 + b"]" * 100_000, 413, "body_too_large"),
    ("nested 20k", {}, b"[" * 20_000 + b"]" * 20_000, 400, "malformed_json"),
]


@pytest.mark.parametrize(
    ("name", "headers", "body", "status", "code"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
async def test_bad_payment_requests(
    running: RunningNode, name: str, headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    before = running.db_counts()
    h = running.headers() | {"Idempotency-Key": f"bad-{name}"} | headers
    if "Idempotency-Key" in h and name == "no key":
        del h["Idempotency-Key"]
    if isinstance(body, bytes):
        h.setdefault("Content-Type", "application/json")
        kwargs: dict[str, Any] = {"data": body}
    else:
        kwargs = {"data": json.dumps(body)}
        h.setdefault("Content-Type", "application/json")
    async with running.session.post(f"{running.url}/v1/payments", headers=h, **kwargs) as resp:
        doc = await resp.json(content_type=None)
        assert resp.status == status, doc
        assert doc["code"] == code
        assert set(doc) == PROBLEM_KEYS
        assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert running.db_counts() == before


BAD_PATHS = [
    ("GET", "/v1/accounts/12ab/bills", 400, "invalid_account"),
    ("GET", "/v1/accounts/" + "1" * 21 + "/bills", 400, "invalid_account"),
    ("GET", "/v1/accounts/%00/bills", 400, "invalid_account"),
    ("GET", "/v1/bills/not-a-bill", 400, "invalid_bill_id"),
    ("GET", "/v1/bills/DAM-2026-13-0100234567", 400, "invalid_bill_id"),
    ("GET", "/v1/payments/../../etc/passwd", 404, "not_found"),
    ("GET", "/v1/payments/xyz", 400, "invalid_payment_id"),
    ("DELETE", "/v1/payments/dam-1_01JD0000000000000000000000", 405, "method_not_allowed"),
    ("PUT", "/v1/payments", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "status", "code"), BAD_PATHS)
async def test_bad_paths(
    running: RunningNode, method: str, path: str, status: int, code: str
) -> None:
    before = running.db_counts()
    async with running.session.request(
        method, running.url + path, headers=running.headers()
    ) as resp:
        doc = await resp.json(content_type=None)
        assert resp.status == status, doc
        assert doc["code"] == code
    assert running.db_counts() == before


async def test_shutting_down_refuses_payments_but_answers_inquiries(running: RunningNode) -> None:
    running.node.refuse_payments("battery low")
    status, body, headers = await pay(running, payment(1_000), "late")
    assert status == 503 and body["code"] == "node_shutting_down"
    assert int(headers["Retry-After"]) > 0
    assert (await inquire(running))["account"] == "0100234567"
    async with running.session.get(f"{running.url}/readyz") as resp:
        assert resp.status == 503


async def test_retry_of_a_taken_payment_gets_its_receipt_while_shutting_down(
    running: RunningNode,
) -> None:
    first = await pay(running, payment(1_000), "before-stop")
    running.node.refuse_payments("battery low")
    again = await pay(running, payment(1_000), "before-stop")
    assert again[0] == 201 and again[1] == first[1]
    assert again[2]["Idempotent-Replayed"] == "true"
    other = await pay(running, payment(1_001), "before-stop")
    assert other[0] == 422 and other[1]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("field", "value"), [("cashier", "rami\n"), ("bill_id", BILL + "\n"), ("method", "cash\n")]
)
async def test_trailing_newline_is_not_accepted(
    running: RunningNode, field: str, value: str
) -> None:
    status, body, _ = await pay(running, payment() | {field: value}, f"nl-{field}")
    assert status == 422 and body["code"] == "invalid_field"
    assert running.db_counts()[:2] == (0, 0)
