"""Response headers (edge.web.headers) and free-text fields (edge.text) through a real node."""

from __future__ import annotations

import pytest
from nodefixtures import RunningNode

BILL = "DAM-2026-05-0100234567"


async def get(
    rn: RunningNode, path: str, who: str | None = "cashier"
) -> tuple[int, dict[str, str]]:
    headers = rn.headers(who) if who else {}
    async with rn.session.get(f"{rn.url}{path}", headers=headers) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


@pytest.mark.parametrize(
    ("path", "who", "status"),
    [
        ("/v1/accounts/0100234567/bills", "cashier", 200),  # names and addresses
        (f"/v1/bills/{BILL}", "cashier", 200),
        ("/v1/status", None, 200),
        ("/v1/bills/not-a-bill", "cashier", 400),  # a problem
        ("/v1/accounts/0100234567/bills", None, 401),  # a problem before any handler work
        ("/v1/nowhere", "cashier", 404),  # aiohttp's own 404, rendered as a problem
    ],
)
async def test_api_responses_are_not_stored_or_sniffed_and_name_no_version(
    running: RunningNode, path: str, who: str | None, status: int
) -> None:
    got, headers = await get(running, path, who)
    assert got == status
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Server"] == "edge"


@pytest.mark.parametrize("path", ["/static/dashboard.js", "/", "/metrics", "/healthz"])
async def test_other_responses_are_not_sniffed_and_name_no_version(
    running: RunningNode, path: str
) -> None:
    got, headers = await get(running, path, None)
    assert got == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Server"] == "edge" and "aiohttp" not in headers["Server"]


async def test_static_files_keep_their_own_caching(running: RunningNode) -> None:
    _, headers = await get(running, "/static/dashboard.js", None)
    assert headers["Cache-Control"] == "max-age=86400"  # no personal data: cached for a day


async def test_metrics_still_render(running: RunningNode) -> None:
    async with running.session.get(f"{running.url}/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "edge_" in text


@pytest.mark.parametrize(
    "cashier",
    ["ra\u202emi", "\u202eimar", "ra\u200bmi", "\ufefframi", "ra\u2066mi\u2069", "ra\u200dmi"],
    ids=["RLO-inside", "RLO-first", "ZWSP", "BOM", "isolates", "ZWJ"],
)
async def test_format_characters_in_cashier_are_refused_and_nothing_written(
    running: RunningNode, cashier: str
) -> None:
    before = running.db_counts()
    body = {"bill_id": BILL, "amount": 50_000, "method": "cash", "cashier": cashier}
    async with running.session.post(
        f"{running.url}/v1/payments", json=body,
        headers=running.headers(**{"Idempotency-Key": f"fmt-{ord(cashier[2])}"}),
    ) as resp:  # fmt: skip
        problem = await resp.json(content_type=None)
    assert resp.status == 422
    assert problem["code"] == "invalid_field"
    assert problem["detail"].startswith("cashier: character ")
    assert running.db_counts() == before


async def test_arabic_cashier_name_is_taken(running: RunningNode) -> None:
    body = {"bill_id": BILL, "amount": 50_000, "method": "cash", "cashier": "هدى الأحمد"}
    async with running.session.post(
        f"{running.url}/v1/payments", json=body,
        headers=running.headers(**{"Idempotency-Key": "arabic-1"}),
    ) as resp:  # fmt: skip
        receipt = await resp.json()
    assert resp.status == 201
    async with running.session.get(
        f"{running.url}/v1/payments/{receipt['payment_id']}", headers=running.headers()
    ) as resp:
        stored = await resp.json()
    assert stored["cashier"] == "هدى الأحمد"
