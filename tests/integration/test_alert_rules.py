"""deploy/prometheus/edge-alerts.yml: promtool accepts it, its unit tests pass, every series it
names (with each label value it matches) is exported by a real node's /metrics, so a renamed
metric cannot leave a rule that silently never fires, and its thresholds are `[notify]`'s
defaults (the node's own notifier tells the same events).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import unavailable
from nodefixtures import start_node
from prometheus_client.parser import text_string_to_metric_families

from edge.config import Settings

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
# Series Prometheus makes itself, not the node.
PROMETHEUS_OWN = {"up"}
SELECTOR = re.compile(r"\b([a-z_][a-z0-9_]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# PromQL words that look like a metric name in the regex above.
KEYWORDS = {"on", "group_left", "group_right", "without", "by", "max", "min", "sum", "or",
            "and", "unless", "increase", "rate", "ignoring", "bool"}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool absent (apt-get install prometheus)")
    return found


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((RULES / "edge-alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", "edge-alerts.yml"], cwd=RULES,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    done = subprocess.run([promtool(), "test", "rules", "edge-alerts.test.yml"], cwd=RULES,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (RULES / "edge-alerts.test.yml").read_text()))
    assert tested == {rule["alert"] for rule in rules()}, "every alert has a test"


def test_every_alert_has_a_severity_and_english_and_arabic_text() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "summary_ar",
                                            "description_ar"}, rule["alert"]  # fmt: skip
        assert re.search("[\u0600-\u06ff]", rule["annotations"]["summary_ar"]), rule["alert"]


def selectors() -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """(alert, metric, [(label, op, value)]) for every series a rule's expression selects."""
    out = []
    for rule in rules():
        expr = re.sub(r"\[[^\]]*\]", "", rule["expr"])  # range durations
        expr = re.sub(r"(on|without|by|group_left|ignoring)\s*\([^)]*\)", " ", expr)
        for name, matchers in SELECTOR.findall(expr):
            if name in KEYWORDS or name in PROMETHEUS_OWN or not name.startswith("edge_"):
                continue
            out.append((rule["alert"], name, MATCHER.findall(matchers or "")))
    return out


async def test_every_series_the_rules_use_is_exported_by_a_running_node(tmp_path: Path) -> None:
    # With a notifier, so that its counters are exported too.
    runner, rn = await start_node(tmp_path, [], notify_exec="/bin/true")
    try:
        async with rn.session.get(rn.url + "/metrics") as resp:
            text = await resp.text()
    finally:
        await rn.session.close()
        await runner.cleanup()
    exported: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported.setdefault(sample.name, []).append(sample.labels)
    used = selectors()
    assert {name for _, name, _ in used} >= {"edge_power_state", "edge_link_state",
                                             "edge_storage_free_bytes", "edge_task_up"}  # fmt: skip
    for alert, name, matchers in used:
        assert name in exported, f"{alert} uses {name}, which the node does not export"
        for label, op, value in matchers:
            values = {labels.get(label) for labels in exported[name]}
            wanted = value.split("|") if op == "=~" else [value]
            if op in ("=", "=~"):
                missing = [v for v in wanted if v not in values]
                assert not missing, f"{alert}: {name}{{{label}={missing}}} is never exported"
            else:
                assert value in values, f"{alert}: {name} has no {label}={value!r} to exclude"


def alert(name: str) -> dict[str, Any]:
    return next(rule for rule in rules() if rule["alert"] == name)


def minutes(duration: str) -> float:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match[1]) * {"s": 1 / 60, "m": 1, "h": 60}[match[2]]


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("EdgeOnBattery", lambda r, s: minutes(r["for"]) * 60 == s.notify_battery_after_s),
        ("EdgeLinkDown", lambda r, s: minutes(r["for"]) * 60 == s.notify_link_down_after_s),
        ("EdgeOutboxStuck", lambda r, s: f"> {s.notify_oldest_pending_h:g} * 3600" in r["expr"]),
        ("EdgeDiskNearlyFull",
         lambda r, s: f"< {s.notify_disk_free_percent / 100:.2f}" in r["expr"]),
        ("EdgeOfflineLimitNear", lambda r, s: f">= {s.notify_offline_limit_ratio:g}" in r["expr"]),
    ],
)  # fmt: skip
def test_the_rules_thresholds_are_the_notifiers_defaults(name: str, check: Any) -> None:
    assert check(alert(name), Settings()), alert(name)["expr"]
