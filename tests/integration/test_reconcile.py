"""Clearing across midnight and over HTTP (issue 16): an outage's backlog lands on the day it
was taken at the node and on the day it arrived at the centre; the report and the on-demand
reconciliation are for `audit` or `admin` only, audited, and the result is in /v1/status.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link
from test_clearing import settled

from edge import audit, mirror
from edge.audit import Query

pytestmark = pytest.mark.both_stores

TZ = ZoneInfo("Asia/Damascus")
DAY = 86_400.0


class Clock:
    """The host's time moved by `offset` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def get(link: Link, path: str, who: str | None) -> tuple[int, Any]:
    rn = link.node
    headers = rn.headers(who) if who else {}
    async with rn.session.get(rn.url + path, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def post(link: Link, path: str, who: str) -> tuple[int, Any]:
    rn = link.node
    async with rn.session.post(rn.url + path, headers=rn.headers(who)) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_backlog_over_midnight_is_the_nodes_day_one_and_the_centres_day_two(
    tmp_path: Path,
) -> None:
    clock = Clock()
    link, close = await start_link(tmp_path, clock=clock)
    try:
        rn = link.node
        await eventually(lambda: rn.node.db.read(mirror.state).bills == len(ACCOUNTS),
                         what="the mirror")  # fmt: skip
        # The node's day one: the link is down while three payments are taken.
        link.proxy.mode = "refuse"
        clock.offset = -DAY
        day_one = datetime.fromtimestamp(clock(), TZ).date()
        amounts = [10_000, 20_000, 30_000]
        for i, amount in enumerate(amounts):
            body = {"bill_id": f"{GOV}-{CYCLE}-{ACCOUNTS[i]}", "amount": amount,
                    "method": "cash", "cashier": "huda"}  # fmt: skip
            headers = rn.headers(**{"Idempotency-Key": f"night-{i}"})
            async with rn.session.post(f"{rn.url}/v1/payments", json=body, headers=headers) as r:
                assert r.status == 201, await r.text()
        # Day two: the link is back and the backlog is delivered.
        clock.offset = 0.0
        day_two = datetime.fromtimestamp(clock(), TZ).date()
        assert day_two == day_one + timedelta(days=1)
        link.proxy.mode = "pass"
        await settled(link)

        status, one = await get(link, f"/v1/reports/day?date={day_one}", "auditor")
        assert status == 200
        assert one["totals"]["delivered"] == {"count": 3, "amount": sum(amounts)}
        status, two = await get(link, f"/v1/reports/day?date={day_two}", "auditor")
        assert two["totals"]["taken"] == {"count": 0, "amount": 0}

        store = link.centre.db
        rows = await store.clearing(day_two, TZ, GOV)
        assert [(r["recorded_day"], r["accepted_day"], r["applied_count"], r["applied_amount"])
                for r in rows] == [(day_two.isoformat(), day_one.isoformat(), 3, sum(amounts))]  # fmt: skip
        assert await store.clearing(day_one, TZ, GOV) == []

        # Reconciling day one on demand finds everything; the result is the status's.
        status, result = await post(link, f"/v1/admin/reconcile?date={day_one}", "admin")
        assert status == 200, result
        assert (result["ok"], result["node_entries"], result["centre_entries"]) == (True, 3, 3)
        status, shown = await get(link, "/v1/status", None)
        assert shown["reconcile"]["day"] == day_one.isoformat()
        assert shown["reconcile"]["ok"] is True
        assert shown["reconcile"]["counts"]["missing"] == 0
    finally:
        await close()


async def test_reports_and_reconciliation_are_for_audit_or_admin_and_audited(
    tmp_path: Path,
) -> None:
    link, close = await start_link(tmp_path)
    try:
        today = datetime.now(TZ).date()
        assert (await get(link, f"/v1/reports/day?date={today}", None))[0] == 401
        for who in ("cashier", "viewer"):
            assert (await get(link, f"/v1/reports/day?date={today}", who))[0] == 403
            assert (await post(link, "/v1/admin/reconcile", who))[0] == 403
        for who in ("auditor", "admin"):
            assert (await get(link, f"/v1/reports/day?date={today}", who))[0] == 200
        rn = link.node
        for fmt, kind, start in (
            ("csv", "text/csv", "\ufeffday,"),
            ("html", "text/html", "<!DOCTYPE"),
        ):
            async with rn.session.get(f"{rn.url}/v1/reports/day?date={today}&format={fmt}",
                                      headers=rn.headers("auditor")) as resp:  # fmt: skip
                assert (resp.status, resp.content_type) == (200, kind)
                assert (await resp.text()).startswith(start)
        status, problem = await get(link, "/v1/reports/day?date=2026-02-30", "auditor")
        assert (status, problem["code"]) == (400, "invalid_query")
        status, problem = await get(link, "/v1/reports/day?day=2026-02-01", "auditor")
        assert (status, problem["code"]) == (400, "invalid_query")

        def trail() -> list[tuple[str, str, int]]:
            found = rn.node.db.read(lambda c: list(audit.select(c, Query())))
            return [(e.token, e.action, e.status) for e in found
                    if e.action in (audit.REPORT_READ, audit.ADMIN_RECONCILE)]  # fmt: skip

        # Every read that reached the route is kept (a 400 is not: DESIGN 5.10's KEPT).
        want = [("counter-1", "report.read", 403), ("counter-1", "admin.reconcile", 403),
                ("kiosk-1", "report.read", 403), ("kiosk-1", "admin.reconcile", 403),
                ("audit-1", "report.read", 200), ("ops", "report.read", 200),
                ("audit-1", "report.read", 200), ("audit-1", "report.read", 200)]  # fmt: skip
        await eventually(lambda: len(trail()) >= len(want), what="the audit rows")
        assert trail() == want
    finally:
        await close()


async def test_an_unreachable_centre_is_a_503_for_the_admin(tmp_path: Path) -> None:
    link, close = await start_link(tmp_path)
    try:
        link.proxy.mode = "refuse"
        status, problem = await post(link, "/v1/admin/reconcile", "admin")
        assert (status, problem["code"]) == (503, "centre_unreachable")
    finally:
        await close()
