"""Subscribers' requests (POST/GET /v1/requests) on a real node with a real centre behind the
fault proxy, and `edge centre request set-status` as a subprocess on the centre's database:
each kind taken while the centre is down is replayed once and recorded `received`; a status
set at the centre reaches the node in one pull, with its history; an accepted correction or
installment changes the bill, which reaches the mirror; bad input writes nothing (DESIGN 5.16).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link
from nodefixtures import RunningNode, make_bill

import edge
from edge import mirror, tokens
from edge.audit import Entry, Query, select

pytestmark = pytest.mark.both_stores

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = ACCOUNTS[0]
BILL = f"{GOV}-{CYCLE}-{ACCOUNT}"  # 100,000 piastres, nothing paid
OPENAPI = json.loads((Path(edge.__file__).parent / "web" / "openapi.json").read_text("utf-8"))
COMPLAINT = "الفاتورة أعلى من المعتاد\nرغم أن البيت كان مغلقاً شهراً"


@pytest.fixture
async def lk(tmp_path: Path) -> AsyncIterator[Link]:
    (tmp_path / "node").mkdir()
    desk = tokens.add_token(tmp_path / "node" / "tokens.toml", "desk-1", ["request"])
    link, close = await start_link(tmp_path)
    link.node.tokens["desk"] = desk

    async def bootstrapped() -> bool:
        return link.node.node.db.read(mirror.state).bills == len(ACCOUNTS)

    try:
        await eventually(bootstrapped, what="the mirror's bootstrap")
        yield link
    finally:
        await close()


def conforms(body: Any, schema: str) -> None:
    root = {"$ref": f"#/components/schemas/{schema}", "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(root).validate(body)


async def call(
    rn: RunningNode, method: str, path: str, body: Any = None, key: str | None = None,
    who: str = "desk",
) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
    headers = rn.headers(who, **({"Idempotency-Key": key} if key else {}))
    async with rn.session.request(method, rn.url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def centre_cli(tmp_path: Path, link: Link, *args: str) -> subprocess.CompletedProcess[str]:
    settings = link.centre.settings
    config = tmp_path / "centre-cli.toml"
    config.write_text(
        f'[centre]\ndata_dir = "{settings.data_dir}"\ngovernorate = "{GOV}"\n'
        f'database = "{settings.database}"\n'
        f'[nodes.dam-1]\ngovernorate = "{GOV}"\nsecret_file = "{tmp_path / "dam-1.secret"}"\n',
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "centre", "request", *args[:1], "--config",
         str(config), *args[1:]],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


def node_rows(rn: RunningNode) -> tuple[int, int, int]:
    return rn.node.db.read(
        lambda c: tuple(
            c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("outbox_entries", "requests", "outbox_idempotency")
        )
    )


async def at_centre(lk: Link) -> list[tuple[Any, ...]]:
    return await lk.centre.db.query(
        "SELECT id, kind, status, version FROM requests ORDER BY updated_at, id"
    )


async def synced(rn: RunningNode, request_id: str) -> None:
    async def there() -> bool:
        status, doc, _ = await call(rn, "GET", f"/v1/requests/{request_id}")
        return status == 200 and doc["sync"] == "synced" and doc["status"] == "received"

    await eventually(there, what=f"request {request_id} received at the centre")


async def test_each_kind_taken_while_the_centre_is_down_is_replayed_once(lk: Link) -> None:
    rn = lk.node
    lk.proxy.mode = "refuse"
    bodies = {
        "complaint": {"kind": "complaint", "account": ACCOUNT, "text": COMPLAINT,
                      "contact_phone": "+963944123456"},
        "installment": {"kind": "installment", "account": ACCOUNT, "bill_id": BILL,
                        "text": "أرجو التقسيط على ثلاث دفعات", "amount": 40_000},
        "correction": {"kind": "correction", "account": ACCOUNT, "bill_id": BILL,
                       "text": "القراءة خاطئة", "amount": 60_000},
    }  # fmt: skip
    filed = {}
    for kind, body in bodies.items():
        status, doc, headers = await call(rn, "POST", "/v1/requests", body, f"k-{kind}")
        assert status == 201, doc
        conforms(doc, "ServiceRequest")
        assert (doc["status"], doc["sync"], doc["history"]) == ("submitted", "pending_sync", [])
        assert headers["Location"] == f"/v1/requests/{doc['request_id']}"
        again = await call(rn, "POST", "/v1/requests", body, f"k-{kind}")
        assert (again[0], again[1], again[2].get("Idempotent-Replayed")) == (201, doc, "true")
        filed[kind] = doc
    assert node_rows(rn)[:2] == (3, 3)
    numbers = [doc["number"] for doc in filed.values()]
    assert len(set(numbers)) == 3 and all(n.startswith("DAM-DAM1-R") for n in numbers)
    assert await at_centre(lk) == []

    lk.proxy.mode = "pass"
    for doc in filed.values():
        await synced(rn, doc["request_id"])
    rows = await at_centre(lk)
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows) == sorted(
        (doc["request_id"], kind, "received", 1) for kind, doc in filed.items()
    )
    status, listed, _ = await call(rn, "GET", f"/v1/requests?account={ACCOUNT}")
    assert status == 200
    conforms(listed, "ServiceRequests")
    assert [d["request_id"] for d in listed["items"]] == [
        filed[k]["request_id"] for k in ("correction", "installment", "complaint")
    ]
    assert listed["items"][2]["text"] == COMPLAINT  # the line break kept
    assert node_rows(rn)[:2] == (3, 3)


async def test_a_status_set_at_the_centre_reaches_the_node_in_one_pull(
    lk: Link, tmp_path: Path
) -> None:
    rn = lk.node
    body = {"kind": "correction", "account": ACCOUNT, "bill_id": BILL, "text": "القراءة خاطئة",
            "amount": 60_000}  # fmt: skip
    doc = (await call(rn, "POST", "/v1/requests", body, "c-1"))[1]
    rid = doc["request_id"]
    await synced(rn, rid)
    puller = rn.node.replication.puller
    assert puller is not None

    review = centre_cli(
        tmp_path, lk, "set-status", doc["number"], "in_review", "--note", "قيد الدراسة"
    )
    assert review.returncode == 0, review.stderr
    assert json.loads(review.stdout)["version"] == 2
    await puller.step()  # one pull
    shown = (await call(rn, "GET", f"/v1/requests/{rid}"))[1]
    assert (shown["status"], shown["note"]) == ("in_review", "قيد الدراسة")

    accepted = centre_cli(tmp_path, lk, "set-status", rid, "accepted", "--note", "صُحّحت الفاتورة")
    assert accepted.returncode == 0, accepted.stderr
    await puller.step()
    shown = (await call(rn, "GET", f"/v1/requests/{rid}"))[1]
    assert [h["status"] for h in shown["history"]] == ["received", "in_review", "accepted"]
    # The accepted correction is a new version of the bill at the centre, and in the mirror.
    assert await lk.centre.bill(BILL) == (0, 2)
    bill = (await call(rn, "GET", f"/v1/bills/{BILL}", who="cashier"))[1]
    assert (bill["amount"], bill["due"], bill["version"]) == (60_000, 60_000, 2)

    refused = centre_cli(tmp_path, lk, "set-status", rid, "refused")
    assert refused.returncode == 1 and "accepted" in refused.stderr  # only `done` follows
    unknown = centre_cli(tmp_path, lk, "set-status", "DAM-DAM1-R20260101-0001", "done")
    assert unknown.returncode == 1


async def test_an_accepted_installment_defers_the_rest_of_the_bill(
    lk: Link, tmp_path: Path
) -> None:
    rn = lk.node
    body = {"kind": "installment", "account": ACCOUNT, "bill_id": BILL, "text": "تقسيط",
            "amount": 25_000}  # fmt: skip
    rid = (await call(rn, "POST", "/v1/requests", body, "i-1"))[1]["request_id"]
    await synced(rn, rid)
    done = centre_cli(tmp_path, lk, "set-status", rid, "accepted")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deferred"] == 75_000

    async def mirrored() -> bool:
        bill = (await call(rn, "GET", f"/v1/bills/{BILL}", who="cashier"))[1]
        return bool(bill["amount"] == 25_000 and bill["version"] == 2)

    await eventually(mirrored, what="the installment's bill in the mirror")


async def test_bad_requests_get_a_clear_4xx_and_write_nothing(lk: Link) -> None:
    rn = lk.node
    before = node_rows(rn)
    other_bill = f"{GOV}-{CYCLE}-{ACCOUNTS[1]}"
    base = {"kind": "complaint", "account": ACCOUNT, "text": "شكوى"}
    cases = [
        (base | {"text": "ش" * 2001}, 422, "invalid_field"),
        (base | {"text": "شكوى\u200bمخفية"}, 422, "invalid_field"),
        (base | {"text": "شكوى\u202e"}, 422, "invalid_field"),
        (base | {"text": "   "}, 422, "invalid_field"),
        (base | {"kind": "praise"}, 422, "invalid_field"),
        (base | {"amount": 5}, 422, "invalid_field"),
        (base | {"account": "0999999999"}, 404, "unknown_account"),
        (base | {"bill_id": other_bill}, 404, "unknown_bill"),
        (base | {"contact_phone": "call me"}, 422, "invalid_field"),
        (base | {"kind": "installment", "bill_id": BILL}, 422, "invalid_amount"),
        (base | {"kind": "correction", "amount": 5}, 422, "invalid_field"),
        (base | {"extra": 1}, 400, "invalid_body"),
    ]
    for i, (body, status, code) in enumerate(cases):
        got, problem, _ = await call(rn, "POST", "/v1/requests", body, f"bad-{i}")
        assert (got, problem["code"]) == (status, code), (body, problem)
        assert problem["title"] and problem["title_ar"] and problem["title"] != problem["title_ar"]
    assert (await call(rn, "POST", "/v1/requests", base, "p", who="cashier"))[0] == 403
    assert (await call(rn, "GET", f"/v1/requests?account={ACCOUNT}", who="cashier"))[0] == 403
    assert (await call(rn, "GET", "/v1/requests/nope"))[1]["code"] == "invalid_request_id"
    missing = await call(rn, "GET", "/v1/requests/dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C")
    assert (missing[0], missing[1]["code"]) == (404, "unknown_request")
    assert node_rows(rn) == before


async def test_reading_requests_is_audited_with_the_account(lk: Link) -> None:
    rn = lk.node
    body = {"kind": "complaint", "account": ACCOUNT, "text": "شكوى"}
    doc = (await call(rn, "POST", "/v1/requests", body, "a-1"))[1]
    assert (await call(rn, "GET", f"/v1/requests/{doc['number']}"))[0] == 200
    assert (await call(rn, "GET", f"/v1/requests?account={ACCOUNT}"))[0] == 200
    assert (await call(rn, "GET", "/v1/requests/dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C"))[0] == 404

    def rows() -> list[Entry]:
        return rn.node.db.read(lambda c: list(select(c, Query(token="desk-1"))))

    await eventually(lambda: len(rows()) >= 3, what="three audit rows")
    shown = [(e.action, e.object, e.account, e.status) for e in rows()]
    assert shown == [
        ("request.read", doc["number"], ACCOUNT, 200),
        ("request.list", None, ACCOUNT, 200),
        ("request.read", "dam-1_01JXQ4ZK2M8D3V5T7R9W1Y3B5C", None, 404),
    ]


async def test_requests_and_readings_draw_on_the_writes_bucket(tmp_path: Path) -> None:
    """A token that inquires a lot can still file; one that files a lot is held to the
    writes' rate (DESIGN 5.7, 5.15)."""
    (tmp_path / "node").mkdir()
    both = tokens.add_token(tmp_path / "node" / "tokens.toml", "desk-2", ["request", "inquire"])
    link, close = await start_link(
        tmp_path, limits_payments_per_s=0.01, limits_payment_burst=2,
        limits_inquiries_per_s=0.01, limits_inquiry_burst=3,
    )  # fmt: skip
    try:
        rn = link.node
        rn.tokens["both"] = both
        for _ in range(3):  # the inquiries' bucket, emptied (503: the mirror still loading)
            assert (await call(rn, "GET", f"/v1/accounts/{ACCOUNT}/bills", who="both"))[0] in (
                200, 404, 503,
            )  # fmt: skip
        assert (await call(rn, "GET", f"/v1/accounts/{ACCOUNT}/bills", who="both"))[0] == 429
        body = {"kind": "complaint", "account": ACCOUNT, "text": "شكوى"}
        statuses = [
            (await call(rn, "POST", "/v1/requests", body, f"w-{i}", who="both"))[1].get("code")
            for i in range(3)
        ]
        assert statuses[2] == "rate_limited" and "rate_limited" not in statuses[:2]
    finally:
        await close()


async def test_the_centre_rejects_a_request_for_an_account_it_does_not_hold(lk: Link) -> None:
    """The node's mirror holds a bill the centre does not (here: written in by hand): the
    centre answers `rejected` with `unknown_account`, and the node shows it so."""
    rn = lk.node
    orphan = make_bill("0999999999")
    await rn.node.db.write(lambda c: mirror.apply_changes(c, [orphan], None, now=0.0))
    body = {"kind": "complaint", "account": "0999999999", "text": "شكوى"}
    rid = (await call(rn, "POST", "/v1/requests", body, "o-1"))[1]["request_id"]

    async def answered() -> Any:
        doc = (await call(rn, "GET", f"/v1/requests/{rid}"))[1]
        return doc if doc["sync"] != "pending_sync" else None

    doc = await eventually(answered, what="the centre's verdict")
    assert (doc["sync"], doc["status"], doc["reason"]) == (
        "rejected",
        "rejected",
        "unknown_account",
    )
    assert await at_centre(lk) == []
