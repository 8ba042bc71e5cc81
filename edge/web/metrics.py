"""Prometheus metrics at `GET /metrics`, names prefixed `edge_`, in a registry of the app's own.

Counters are fed as things happen (requests, payments, replay batches); gauges are read from
the node's state when scraped, so a series never goes missing while the UPS or centre is away.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import outbox
from edge import __version__, alerts, mirror, offline, watcher
from edge.node import NODE, Node
from edge.power.policy import STATES as POWER_STATES
from edge.web import limits
from edge.web.http import CLIENT
from sync import tls
from sync.replayer import StepResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UPS_FLAGS = ("OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF", "OVER",
             "TRIM", "BOOST", "FSD")  # fmt: skip
LINK_STATES = ("unknown", "up", "degraded", "down")
MODES = ("normal", "degraded", "read_only", "shutting_down")
VERDICTS = ("applied", "duplicate", "credited", "rejected")
BATCH_RESULTS = ("ok", "error", "config_fault")
NOTIFY_RESULTS = ("sent", "failed", "dropped")
# Inquiries answer in well under a millisecond, payments wait for a group commit (a few ms).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PAYMENTS_ROUTE = "/v1/payments"
UNMATCHED = "unmatched"  # 404s: never the raw path, which would be a label per typo


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Reads:
    """What a scrape needs from the database, read off the event loop just before it."""

    outbox: outbox.Stats
    mirror: mirror.MirrorState
    now: float
    offline_limits: dict[str, Any]  # offline.status: {limit: {value, used, tripped}}
    unresolved: int = 0  # rejected payments not refunded or retargeted (edge.actions)
    disk: alerts.Disk | None = None  # the data directory's filesystem


class NodeCollector(Collector):
    """Gauges computed from the node's state and `reads` at each scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.reads: Reads | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at collect(); nothing else registers them

    def collect(self) -> Iterable[Metric]:
        node, reads = self.node, self.reads
        if reads is None:
            return
        s = node.settings
        info = GaugeMetricFamily(
            "edge_node_info", "The node's identity (value 1).",
            labels=["node", "governorate", "version"],
        )  # fmt: skip
        info.add_metric([s.node_id, s.node_governorate, __version__], 1)
        yield info
        yield _onehot("edge_node_mode", "The node's mode: 1 for the current one.", "mode", MODES,
                      node.mode())  # fmt: skip
        yield _gauge("edge_node_start_time_seconds", "When this process started (Unix time).",
                     node.started_at)  # fmt: skip
        yield from self._power()
        yield from self._link()
        yield from self._outbox(reads)
        yield from self._mirror(reads)
        yield from self._audit()
        yield from self._offline(reads)
        yield from self._storage(reads)
        tasks = GaugeMetricFamily(
            "edge_task_up", "1 while a background task runs, 0 once it died.", labels=["task"]
        )
        for name, state in node.tasks.states().items():
            tasks.add_metric([name], 1 if state["state"] == "running" else 0)
        yield tasks

    def _power(self) -> Iterable[Metric]:
        p = self.node.power
        flags = set((p.ups_status or "").split())
        ups = GaugeMetricFamily(
            "edge_ups_status", "1 when the UPS reports this ups.status flag (0 when unreachable).",
            labels=["flag"],
        )  # fmt: skip
        for flag in UPS_FLAGS:
            ups.add_metric([flag], 1 if flag in flags else 0)
        yield ups
        yield _gauge("edge_ups_reachable", "1 when the last poll of the UPS gave data.",
                     1 if p.ups_status is not None else 0)  # fmt: skip
        # Last known figures stay (dated by the age below); NaN until the first reading.
        yield _gauge("edge_ups_battery_charge_percent", "Battery charge.", _nan(p.battery_charge))
        yield _gauge("edge_ups_battery_runtime_seconds", "Estimated runtime left on battery.",
                     _nan(p.runtime_s))  # fmt: skip
        yield _gauge("edge_ups_load_percent", "UPS load.", _nan(p.load_pct))
        yield _gauge("edge_ups_input_voltage_volts", "Input (mains) voltage.",
                     _nan(p.input_voltage))  # fmt: skip
        age = None if p.updated_at is None else max(0.0, self.node.clock() - p.updated_at)
        yield _gauge("edge_ups_last_reading_age_seconds", "Time since the UPS last gave data.",
                     _nan(age))  # fmt: skip
        yield _gauge("edge_power_runtime_floor_seconds", "Runtime under which the node stops.",
                     self.node.settings.power_runtime_floor_s)  # fmt: skip
        yield _onehot("edge_power_state", "The node's power state: 1 for the current one.",
                      "state", POWER_STATES, self.node.power.state)  # fmt: skip

    def _link(self) -> Iterable[Metric]:
        link = self.node.link
        yield _gauge("edge_link_up", "1 when the last exchange with the centre succeeded.",
                     1 if link.state == "up" else 0)  # fmt: skip
        yield _onehot("edge_link_state", "The link's state: 1 for the current one.", "state",
                      LINK_STATES, link.state)  # fmt: skip
        yield _gauge("edge_link_clock_skew_seconds", "Centre time minus node time.",
                     _nan(link.clock_skew_s))  # fmt: skip
        yield _gauge("edge_link_consecutive_failures", "Failed exchanges since the last success.",
                     link.consecutive_failures)  # fmt: skip
        yield _gauge("edge_link_config_fault", "1 when the centre refuses this node's batches.",
                     1 if link.config_fault else 0)  # fmt: skip
        yield _gauge("edge_link_insecure", "1 when centre.url is plain http:// to another host.",
                     1 if tls.insecure(self.node.settings.centre_url) else 0)  # fmt: skip
        last_ok = None if link.last_ok_at is None else max(0.0, self.node.clock() - link.last_ok_at)
        yield _gauge("edge_link_last_ok_age_seconds", "Time since the centre last answered well.",
                     _nan(last_ok))  # fmt: skip

    def _outbox(self, reads: Reads) -> Iterable[Metric]:
        o = reads.outbox
        yield _gauge("edge_outbox_pending", "Entries not yet delivered to the centre.", o.pending)
        yield _gauge("edge_outbox_oldest_pending_age_seconds",
                     "Age of the oldest pending entry (0 when none).",
                     o.oldest_pending_age_s or 0.0)  # fmt: skip
        yield _gauge("edge_outbox_rejected", "Entries the centre rejected: an operator must act.",
                     o.rejected)  # fmt: skip
        yield _gauge("edge_outbox_unresolved",
                     "Rejected payments not yet refunded or retargeted: alert on > 0.",
                     reads.unresolved)  # fmt: skip
        yield _gauge("edge_outbox_delivered", "Entries the centre has recorded.", o.delivered)
        yield _gauge("edge_outbox_last_seq", "The outbox's last sequence number.", o.last_seq)

    def _mirror(self, reads: Reads) -> Iterable[Metric]:
        m = reads.mirror
        age = None if m.as_of is None else max(0.0, reads.now - m.as_of)
        stale = age is None or age > self.node.settings.mirror_stale_after_s
        yield _gauge("edge_mirror_bills", "Bills in the local mirror.", m.bills)
        yield _gauge("edge_mirror_age_seconds", "Time since the mirror last heard from the centre.",
                     _nan(age))  # fmt: skip
        yield _gauge("edge_mirror_stale", "1 when the mirror is older than its limit.",
                     1 if stale else 0)  # fmt: skip

    def _audit(self) -> Iterable[Metric]:
        trail = self.node.audit
        rows = CounterMetricFamily(
            "edge_audit_rows", "Audit rows written, or dropped because the buffer was full.",
            labels=["result"],
        )  # fmt: skip
        rows.add_metric(["written"], trail.written)
        rows.add_metric(["dropped"], trail.dropped)
        yield rows
        yield _gauge("edge_audit_buffered", "Audit rows waiting for the next flush.",
                     len(trail.rows))  # fmt: skip

    def _offline(self, reads: Reads) -> Iterable[Metric]:
        names = ("value", "used", "tripped")
        docs = ("The offline limit (0: off; DESIGN 5.8).",
                "What the limit measures now (NaN: nothing to measure).",
                "1 while the limit refuses new payments.")  # fmt: skip
        for name, doc in zip(names, docs, strict=True):
            family = GaugeMetricFamily(f"edge_offline_limit_{name}", doc, labels=["limit"])
            for limit, shown in reads.offline_limits.items():
                family.add_metric([limit], _nan(shown[name]))
            yield family
        ratios = alerts.usage_ratios(reads.offline_limits)
        family = GaugeMetricFamily(
            "edge_offline_limit_usage_ratio",
            "used / value of the limit (NaN: off, or nothing to measure): alert near 1.",
            labels=["limit"],
        )
        for limit in reads.offline_limits:
            family.add_metric([limit], _nan(ratios.get(limit)))
        yield family

    def _storage(self, reads: Reads) -> Iterable[Metric]:
        d = reads.disk
        yield _gauge("edge_storage_free_bytes", "Free space on the data directory's filesystem.",
                     _nan(None if d is None else d.free))  # fmt: skip
        yield _gauge("edge_storage_size_bytes", "Size of the data directory's filesystem.",
                     _nan(None if d is None else d.total))  # fmt: skip
        yield _gauge("edge_storage_min_free_bytes",
                     "Payments are refused below this free space (storage.min_free_mb; 0: never).",
                     self.node.settings.storage_min_free_mb * 2**20)  # fmt: skip


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _onehot(name: str, doc: str, label: str, values: Sequence[str], current: str) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value in values:
        family.add_metric([value], 1 if value == current else 0)
    return family


class Metrics:
    """One per app: its registry, the counters, and the collector over the node."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # The *_created series would double every counter's series for a timestamp nobody
        # graphs; this is the library's process-wide switch, and this process has one exporter.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edge_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=r)  # fmt: skip
        self.latency = Histogram("edge_http_request_duration_seconds", "HTTP request latency.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.payments = Counter("edge_payments", "Payment requests by channel and result "
                                "(accepted, replayed, or the error code).",
                                ["channel", "result"], registry=r)  # fmt: skip
        self.batches = Counter("edge_replay_batches", "Replay batches sent, by result.",
                               ["result"], registry=r)  # fmt: skip
        self.entries = Counter("edge_replay_entries", "Entries settled by the centre, by verdict.",
                               ["verdict"], registry=r)  # fmt: skip
        self.rate_limited = Counter("edge_http_rate_limited", "Requests refused with 429 by "
                                    "limit: inquiry, payment (per token), address, auth "
                                    "(failed-authentication backoff).", ["kind"],
                                    registry=r)  # fmt: skip
        for kind in limits.KINDS:
            self.rate_limited.labels(kind)
        for result in BATCH_RESULTS:
            self.batches.labels(result)
        for verdict in VERDICTS:
            self.entries.labels(verdict)
        self.notify = Counter("edge_notify_events", "Alert notifications by sink (exec, webhook) "
                              "and result (sent, failed, dropped: the queue was full).",
                              ["sink", "result"], registry=r)  # fmt: skip
        self.collector: NodeCollector | None = None

    def collect(self, node: Node) -> None:
        """Gauges over `node` at each scrape (the node is made after its metrics)."""
        self.collector = NodeCollector(node)
        self.registry.register(self.collector)

    def timed(self, method: str, route: str, code: int, seconds: float) -> None:
        # Children cached per label set: `.labels()` validates and locks on every call, and
        # this runs for every request.
        key = (method, route, code)
        children = self._children.get(key)
        if children is None:
            children = (
                self.latency.labels(method, route),
                self.requests.labels(method, route, str(code)),
            )
            self._children[key] = children
        children[0].observe(seconds)
        children[1].inc()

    def on_limited(self, kind: str) -> None:
        """The limiter's `on_limited`: one call per request it refuses."""
        self.rate_limited.labels(kind).inc()

    def watch_sinks(self, sinks: Iterable[str]) -> None:
        """Every series of the configured sinks from the start, at 0."""
        for sink in sinks:
            for result in NOTIFY_RESULTS:
                self.notify.labels(sink, result)

    def on_notify(self, sink: str, result: str) -> None:
        """The notifier's `on_result`: one call per event a sink sent, failed or dropped."""
        self.notify.labels(sink, result).inc()

    def on_replay(self, result: StepResult) -> None:
        """The replayer's `on_result`: one call per batch sent."""
        if result.sent == 0 and result.error is None:
            return
        kind = "config_fault" if result.config_fault else "error" if result.error else "ok"
        self.batches.labels(kind).inc()
        for verdict, count in result.verdicts.items():
            self.entries.labels(verdict).inc(count)

    def observe_payment(self, request: web.Request, response: web.StreamResponse) -> None:
        client = request.get(CLIENT)
        channel = client.name if client is not None else "unauthenticated"
        if response.headers.get("Idempotent-Replayed") == "true":
            result = "replayed"
        elif response.status == 201:
            result = "accepted"
        else:
            result = _problem_code(response)
        self.payments.labels(channel, result).inc()

    def render(self, reads: Reads) -> bytes:
        # No await between setting the reads and rendering: concurrent scrapes cannot mix.
        if self.collector is not None:
            self.collector.reads = reads
        return generate_latest(self.registry)


def _problem_code(response: web.StreamResponse) -> str:
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes):
        try:
            code = json.loads(body).get("code")
        except (ValueError, AttributeError):
            code = None
        if isinstance(code, str) and code.isidentifier():
            return code
    return f"http_{response.status}"


METRICS = web.AppKey("metrics", Metrics)


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical or UNMATCHED


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times every request; outermost, so it sees the problem+json status too."""
    metrics = request.app.get(METRICS)
    if metrics is None:
        return await handler(request)
    start = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
    except web.HTTPException as exc:
        code = exc.status
        raise
    except asyncio.CancelledError:
        code = 499  # the client went away first (nginx's number for it)
        raise
    finally:
        route = route_of(request)
        metrics.timed(request.method, route, code, time.perf_counter() - start)
    if route == PAYMENTS_ROUTE and request.method == "POST":
        metrics.observe_payment(request, response)
    return response


routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics_view(request: web.Request) -> web.Response:
    node = request.app[NODE]
    now = node.clock()

    stats, state, usage, unresolved = await node.db.read_slow(lambda c: watcher.read_state(c, now))
    limits = offline.status(node.acceptor.limits, usage, now, online=node.link.state == "up")
    disk = alerts.disk(node.settings.node_data_dir)
    body = request.app[METRICS].render(Reads(stats, state, now, limits, unresolved, disk))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
