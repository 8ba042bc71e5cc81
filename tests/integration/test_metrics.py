"""`GET /metrics` from real nodes: promtool accepts it, every named series is there (UPS
flags even with no UPS), counters follow payments, replay and requests, one registry per app.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from centrefixtures import ACCOUNTS, Link
from helpers import CYCLE, GOV, eventually, make_bill
from nodefixtures import RunningNode, start_node
from prometheus_client.parser import text_string_to_metric_families
from upsd import UPS, Upsd

import outbox
from edge.web import metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana" / "edge-nodes.json"
BILL = f"{GOV}-{CYCLE}-{ACCOUNTS[0]}"
# Every series the issue names, by family (counters without their _total suffix).
NAMED = {
    "edge_ups_status", "edge_ups_battery_charge_percent", "edge_ups_battery_runtime_seconds",
    "edge_ups_load_percent", "edge_ups_input_voltage_volts", "edge_ups_reachable",
    "edge_power_state", "edge_link_up", "edge_replay_batches", "edge_replay_entries",
    "edge_outbox_pending", "edge_outbox_oldest_pending_age_seconds", "edge_outbox_rejected",
    "edge_mirror_age_seconds", "edge_mirror_bills", "edge_payments", "edge_http_requests",
    "edge_http_request_duration_seconds", "edge_http_rate_limited",
}  # fmt: skip
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(rn: RunningNode) -> str:
    async with rn.session.get(rn.url + "/metrics") as resp:  # no token: an operational view
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await resp.text()


def samples(text: str) -> tuple[set[str], Samples]:
    families, values = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, values


def value(values: Samples, name: str, **labels: str) -> float:
    return values[(name, tuple(sorted(labels.items())))]


def promtool_check(text: str) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        assert not os.environ.get("CI"), "promtool is missing in CI: .ci/apt-packages lists it"
        return  # the parser above has still read every line
    done = subprocess.run([tool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


async def pay(rn: RunningNode, key: str, amount: int, who: str = "cashier") -> int:
    body = {"bill_id": BILL, "amount": amount, "method": "cash", "cashier": "huda"}
    async with rn.session.post(f"{rn.url}/v1/payments", json=body,
                               headers=rn.headers(who, **{"Idempotency-Key": key})) as resp:  # fmt: skip
        return resp.status


async def test_node_and_centre_metrics_pass_promtool_and_count_what_happened(link: Link) -> None:
    rn = link.node

    async def mirrored() -> bool:
        return rn.node.db.read(lambda c: c.execute("SELECT COUNT(*) FROM bills").fetchone()[0]) > 0

    await eventually(mirrored, what="the mirror to bootstrap")
    assert await pay(rn, "m1", 1_000) == 201
    assert await pay(rn, "m1", 1_000) == 201  # a retry: replayed
    assert await pay(rn, "m2", 0) == 422  # invalid_amount
    assert await pay(rn, "m3", 1_000, who="viewer") == 403  # no `pay` scope
    async with rn.session.get(f"{rn.url}/v1/accounts/{ACCOUNTS[1]}/bills", headers=rn.headers()):
        pass
    async with rn.session.get(f"{rn.url}/no/such/page"):
        pass

    async def delivered() -> bool:
        return rn.node.db.read(lambda c: outbox.stats(c).pending) == 0

    await eventually(delivered, what="the payment to be delivered")
    text = await scrape(rn)
    promtool_check(text)
    families, values = samples(text)
    assert families >= NAMED, NAMED - families
    assert all(f.startswith("edge_") for f in families)
    assert value(values, "edge_payments_total", channel="counter-1", result="accepted") == 1
    assert value(values, "edge_payments_total", channel="counter-1", result="replayed") == 1
    assert value(values, "edge_payments_total", channel="counter-1", result="invalid_amount") == 1
    assert value(values, "edge_payments_total", channel="kiosk-1", result="forbidden") == 1
    assert value(values, "edge_replay_entries_total", verdict="applied") == 1
    assert value(values, "edge_replay_entries_total", verdict="rejected") == 0
    assert value(values, "edge_replay_batches_total", result="ok") >= 1
    assert value(values, "edge_link_up") == 1
    assert value(values, "edge_link_state", state="up") == 1
    assert value(values, "edge_outbox_pending") == 0
    assert value(values, "edge_outbox_oldest_pending_age_seconds") == 0
    assert value(values, "edge_mirror_bills") == len(ACCOUNTS)
    assert value(values, "edge_mirror_stale") == 0
    assert value(values, "edge_node_info", node="dam-1", governorate="DAM", version="0.1.0") == 1
    # Routes are labelled by their pattern, never the raw path (one series per account otherwise).
    routes = {dict(k[1]).get("route") for k in values if k[0] == "edge_http_requests_total"}
    assert {"/v1/payments", "/v1/accounts/{account}/bills", "unmatched"} <= routes
    assert not any(r and ACCOUNTS[1] in r for r in routes)
    assert value(values, "edge_http_requests_total", method="POST", route="/v1/payments",
                 status="422") == 1  # fmt: skip
    count = value(values, "edge_http_request_duration_seconds_count", method="POST",
                  route="/v1/payments")  # fmt: skip
    assert count == 4


async def test_every_ups_flag_is_a_series_even_without_a_ups(running: RunningNode) -> None:
    text = await scrape(running)
    promtool_check(text)
    _, values = samples(text)
    for flag in metrics.UPS_FLAGS:
        assert value(values, "edge_ups_status", flag=flag) == 0
    assert value(values, "edge_ups_reachable") == 0
    assert math.isnan(value(values, "edge_ups_battery_charge_percent"))
    assert value(values, "edge_power_state", state="unknown") == 1
    assert value(values, "edge_link_up") == 0
    assert value(values, "edge_mirror_bills") == 3


async def test_ups_flags_follow_upsd_and_stay_when_it_goes(
    fresh_upsd: Upsd, tmp_path: Path
) -> None:
    upsd = fresh_upsd  # its driver is killed and left dead
    runner, rn = await start_node(
        tmp_path, [make_bill("0100234567")], ups_source="nut", ups_port=upsd.port, ups_name=UPS,
        ups_poll_s=0.3, ups_poll_battery_s=0.2, ups_timeout_s=1.0, power_dead_time_s=30.0,
    )  # fmt: skip
    try:

        async def state_is(state: str) -> bool:
            return samples(await scrape(rn))[1][("edge_power_state", (("state", state),))] == 1

        await eventually(lambda: state_is("mains"), what="mains")
        upsd.set_status("OB DISCHRG")
        await eventually(lambda: state_is("battery"), what="battery")
        _, values = samples(await scrape(rn))
        assert value(values, "edge_ups_status", flag="OB") == 1
        assert value(values, "edge_ups_status", flag="DISCHRG") == 1
        assert value(values, "edge_ups_status", flag="OL") == 0
        assert value(values, "edge_ups_battery_charge_percent") == 100
        assert value(values, "edge_ups_input_voltage_volts") == 230
        assert value(values, "edge_ups_reachable") == 1
        upsd.kill_driver()

        async def unreachable() -> bool:
            return value(samples(await scrape(rn))[1], "edge_ups_reachable") == 0

        await eventually(unreachable, what="the UPS to be unreachable")
        text = await scrape(rn)
        promtool_check(text)
        _, values = samples(text)
        assert all(value(values, "edge_ups_status", flag=f) == 0 for f in metrics.UPS_FLAGS)
        assert value(values, "edge_ups_battery_charge_percent") == 100  # last known, aged
        assert value(values, "edge_ups_last_reading_age_seconds") >= 0
    finally:
        await rn.session.close()
        await runner.cleanup()


async def test_two_nodes_in_one_process_count_separately(tmp_path: Path) -> None:
    one = await start_node(tmp_path / "one", [make_bill("0100234567")])
    two = await start_node(tmp_path / "two", [make_bill("0100234567")])
    try:
        for _ in range(3):
            async with one[1].session.get(one[1].url + "/healthz"):
                pass
        _, first = samples(await scrape(one[1]))
        _, second = samples(await scrape(two[1]))
        healthz = ("edge_http_requests_total",
                   (("method", "GET"), ("route", "/healthz"), ("status", "200")))  # fmt: skip
        assert first[healthz] == 3
        assert healthz not in second
    finally:
        for runner, rn in (one, two):
            await rn.session.close()
            await runner.cleanup()


def grafana_exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        found += [node["query"]] if isinstance(node.get("query"), str) else []
        return found + [e for v in node.values() for e in grafana_exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in grafana_exprs(v)]
    return []


async def test_grafana_dashboard_queries_only_metrics_the_node_exports(link: Link) -> None:
    doc = json.loads(GRAFANA.read_text(encoding="utf-8"))
    assert doc["title"] and doc["panels"]
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"instance", "node"} <= variables
    exprs = grafana_exprs(doc)
    assert len(exprs) >= 10
    families, _ = samples(await scrape(link.node))
    exported = families | {f + s for f in families for s in ("_total", "_bucket", "_sum", "_count")}
    used = {m for e in exprs for m in re.findall(r"\bedge_[a-z_]+", e)}
    assert used - exported == set()
    assert {"edge_ups_status", "edge_outbox_pending", "edge_link_up"} <= used
