"""Meter readings over HTTP: `POST /v1/meter-readings` (scope `read_meter`, DESIGN 5.15).

The body's shape is checked here, on the event loop; the checks against the mirror and the
meter's last known reading run in the write job (edge.readings), answered after the commit.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

import outbox
from edge import access, errors, mirror, readings, text
from edge.node import NODE
from edge.payments import Reply
from edge.web.cashier import read_json
from edge.web.http import client_of, idempotency_key

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
FIELDS = {"account", "meter", "reading", "read_at", "source", "note", "rollover"}
REQUIRED = {"account", "meter", "reading", "read_at", "source"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
OLDEST_DAYS = 400  # a reading older than this is a typo in the year, not a late entry


def fields(doc: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    """`doc` if it is a JSON object with every required field and no other (else 400)."""
    if not isinstance(doc, dict):
        raise errors.InvalidBody("the body must be a JSON object")
    missing, extra = required - doc.keys(), doc.keys() - allowed
    if missing:
        raise errors.InvalidBody(f"missing field(s): {', '.join(sorted(missing))}")
    if extra:
        raise errors.InvalidBody(
            f"unknown field(s): {', '.join(sorted(str(k)[:40] for k in extra))}"
        )
    return doc


def account_field(value: object) -> str:
    if not isinstance(value, str) or not mirror.ACCOUNT.match(value):
        raise errors.InvalidField("account must be an account number of 1-20 digits")
    return value


def parse(doc: Any, today: date) -> readings.Reading:
    doc = fields(doc, FIELDS, REQUIRED)
    account = account_field(doc["account"])
    meter, value, read_at, source = doc["meter"], doc["reading"], doc["read_at"], doc["source"]
    if not isinstance(meter, str) or not readings.METER.match(meter):
        raise errors.InvalidField("meter must be a meter number (letters, digits, - . / _)")
    if type(value) is not int or not 0 <= value <= readings.MAX_READING:
        raise errors.InvalidField("reading must be a whole number of kWh on the register")
    if not isinstance(read_at, str) or not _DATE.match(read_at):
        raise errors.InvalidField("read_at must be a date, YYYY-MM-DD")
    try:
        day = date.fromisoformat(read_at)
    except ValueError:
        raise errors.InvalidField("read_at must be a date, YYYY-MM-DD") from None
    if day > today or day < today - timedelta(days=OLDEST_DAYS):
        raise errors.InvalidField(
            f"read_at must be between {today - timedelta(days=OLDEST_DAYS)} and today ({today})"
        )
    if not isinstance(source, str) or source not in readings.SOURCES:
        raise errors.InvalidField(f"source must be one of {', '.join(readings.SOURCES)}")
    rollover = doc.get("rollover", False)
    if not isinstance(rollover, bool):
        raise errors.InvalidField("rollover must be true or false")
    note = doc.get("note")
    if note is not None:
        note = text.field("note", note, max_chars=readings.NOTE_MAX)
    if rollover and note is None:
        raise errors.InvalidField("a rollover needs its reason in note")
    return readings.Reading(account, meter, value, read_at, source, note, rollover)


@routes.post("/v1/meter-readings")
async def create_reading(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client = client_of(request, *access.READ_METER)
    key = idempotency_key(request)
    now = node.clock()
    today = datetime.fromtimestamp(now, node.settings.tz).date()
    reading = parse(await read_json(request), today)
    if node.shutting_down:
        raise errors.NodeShuttingDown(
            node.shutdown_reason or "the node is stopping",
            headers={"Retry-After": str(node.settings.power_retry_after_s)},
        )
    call = readings.ReadingCall(
        client.name, key, reading, now, outbox.new_entry_id(node.settings.node_id, now=now)
    )
    taker = readings.Taker(node.settings.readings_jump_factor)
    try:
        reply: Reply = await node.db.write_batched(taker, call)
    except outbox.StorageError as exc:
        raise (errors.StorageFull if exc.full else errors.StorageFailed)(str(exc)) from exc
    if not reply.replayed:
        node.outbox_changed.set()
        log.info("reading %s of meter %s by %s", call.entry_id, reading.meter, client.name)
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else {}
    return web.Response(
        status=reply.status, body=reply.body, content_type="application/json", charset="utf-8",
        headers=headers,
    )  # fmt: skip
