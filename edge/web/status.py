"""Operational views with no personal data and no token: status, liveness, readiness, OpenAPI."""

from __future__ import annotations

import importlib.resources
import sqlite3
from typing import Any

from aiohttp import web

import outbox
from edge import (
    __version__,
    actions,
    errors,
    mirror,
    offline,
    readings,
    requests,
    serving,
    transfers,
)
from edge.node import NODE, Node
from edge.web.http import json_response
from sync import tls
from sync.timefmt import iso_or_none as _iso
from sync.timefmt import local_day, start_of_day

routes = web.RouteTableDef()


async def snapshot(node: Node) -> dict[str, Any]:
    """The whole status document (also what the dashboard and `edge status` show)."""
    now = node.clock()

    tz = node.settings.tz

    def read(
        conn: sqlite3.Connection,
    ) -> tuple[
        outbox.Stats, mirror.MirrorState, offline.Usage, int, dict[str, Any], dict[str, int]
    ]:
        stats = outbox.stats(conn, now=now)
        return (stats, mirror.state(conn), offline.read(conn), actions.unresolved(conn),
                transfers.status(conn), services(conn, now, tz))  # fmt: skip

    stats, state, usage, unresolved, moved, counted = await node.db.read_slow(read)
    age = None if state.as_of is None else max(0.0, now - state.as_of)
    link = node.link.as_dict()
    power = node.power.as_dict()
    return {
        "node": node.settings.node_id,
        "governorate": node.settings.node_governorate,
        "version": __version__,
        "mode": node.mode(),
        "tasks": node.tasks.states(),
        "now": _iso(now),
        "uptime_s": round(now - node.started_at, 1),
        "power": power | {"updated_at": _iso(power["updated_at"])},
        "link": link
        | {
            "last_ok_at": _iso(link["last_ok_at"]),
            "last_error_at": _iso(link["last_error_at"]),
            "insecure": tls.insecure(node.settings.centre_url),
        },
        "http": {
            "tls": serving.uses_tls(node.settings),
            "client_certificates": node.settings.http_client_ca_file != "",
            "insecure": serving.insecure(node.settings),
        },
        "outbox": {
            "pending": stats.pending,
            "oldest_pending_age_s": None
            if stats.oldest_pending_age_s is None
            else round(stats.oldest_pending_age_s, 1),
            "rejected": stats.rejected,
            "unresolved": unresolved,
            "delivered": stats.delivered,
            "last_seq": stats.last_seq,
        },
        "mirror": {
            "bills": state.bills,
            "cursor": state.cursor,
            "as_of": _iso(state.as_of),
            "age_s": None if age is None else round(age, 1),
            "stale": age is None or age > node.settings.mirror_stale_after_s,
            # {"bills": n, "of": total} until the first snapshot is applied, then null.
            "bootstrap": node.bootstrap(state),
        },
        "transfers": moved,
        "offline_limits": offline.status(
            node.acceptor.limits, usage, now, online=node.link.state == "up"
        ),
        "reconcile": _reconciled(node),
        "services": counted,
    }


def _reconciled(node: Node) -> dict[str, Any] | None:
    """The last reconciliation with the centre (edge.reconcile), its counts only."""
    daily = node.replication.reconciler
    if daily is None or daily.last is None:
        return None
    shown = daily.last.as_dict()
    del shown["differences"]
    return shown


def services(conn: sqlite3.Connection, now: float, tz: Any) -> dict[str, int]:
    """Today's meter readings and requests (local day), and the pending ones (DESIGN 5.15, 5.16)."""
    readings_today, readings_pending = readings.counts(conn, start_of_day(now, tz))
    requests_today, requests_open = requests.counts(conn, local_day(int(now), tz))
    return {
        "readings_today": readings_today, "readings_pending": readings_pending,
        "requests_today": requests_today, "requests_open": requests_open,
    }  # fmt: skip


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    return json_response(await snapshot(request.app[NODE]))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    problems = node.not_ready()
    if problems:
        raise errors.NotReady("; ".join(problems), headers={"Retry-After": "5"})
    progress = node.bootstrap()
    if progress is not None:
        # Not problem+json: its `status` member would have to be the HTTP status.
        return json_response({"status": "bootstrapping", "progress": progress}, status=503,
                             headers={"Retry-After": "5"})  # fmt: skip
    return json_response({"status": "ready"})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    doc = importlib.resources.files("edge.web").joinpath("openapi.json").read_bytes()
    return web.Response(body=doc, content_type="application/json", charset="utf-8")
