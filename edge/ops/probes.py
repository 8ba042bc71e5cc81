"""The doctor's checks over the network: the node's own port, the UPS through NUT, the centre.

Each returns `Check`s (also used by edge.ops.doctor) and never raises for a peer that is
down or wrong: saying what is wrong, and what to do, is the point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from edge import config, replication
from edge.power import nut
from edge.power.policy import classify
from edge.power.sources import make_source
from sync import answers, protocol, signing
from sync.errors import SyncError
from sync.link import parse_http_date

OK, WARN, FAIL = "OK", "WARN", "FAIL"
SKEW_WARN_S, SKEW_FAIL_S = 10.0, 300.0


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str
    advice: str = ""


async def check_node(s: config.Settings) -> Check:
    host = config.probe_host(s.http_host)
    url = f"http://{host}:{s.http_port}/readyz"
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return Check(
            "node",
            WARN,
            f"nothing answers at {url}",
            "start it: systemctl start edge (logs: journalctl -u edge -e)",
        )
    if status != 200:
        return Check(
            "node",
            WARN,
            f"{url} answers {status}: not ready",
            "it is starting, stopping or refusing payments: curl it for the reason",
        )
    return Check("node", OK, f"{url} answers 200: the node is serving")


async def check_ups(s: config.Settings) -> Check:
    if s.ups_source == "none":
        return Check(
            "ups",
            WARN,
            'ups.source = "none": no UPS is watched',
            "a power cut then stops the server without a clean stop: connect the UPS"
            ' (deploy/nut/) and set ups.source = "nut"',
        )
    if s.ups_source == "nut":
        client = nut.NutClient(s.ups_host, s.ups_port, timeout_s=s.ups_timeout_s)
        try:
            known = await client.list_ups()
        except nut.NutError as exc:
            return Check(
                "ups",
                FAIL,
                str(exc),
                "is NUT running? systemctl status nut-server nut-driver@"
                f"{s.ups_name}; check ups.host/ups.port and LISTEN in"
                " /etc/nut/upsd.conf",
            )
        finally:
            await client.close()
        if s.ups_name not in known:
            return Check(
                "ups",
                FAIL,
                f"upsd knows no UPS named {s.ups_name!r} (it has: {', '.join(known) or 'none'})",
                "set ups.name to the [section] name in /etc/nut/ups.conf",
            )
    source = make_source(s)
    try:
        reading = await source.read()
    finally:
        await source.close()
    if not reading.ok:
        return Check(
            "ups",
            FAIL,
            f"{source.describe()}: {reading.error}",
            "DRIVER-NOT-CONNECTED: the driver is not running (systemctl restart"
            " nut-driver.target; check the USB cable, lsusb); WAIT: try again in a"
            " few seconds",
        )
    state, reason = classify(reading, s.power_runtime_floor_s)
    detail = (
        f"{reading.status}, charge {reading.charge if reading.charge is not None else '-'}"
        f" %, runtime {reading.runtime_s if reading.runtime_s is not None else '-'} s:"
        f" {state} ({reason})"
    )
    if state != "mains":
        return Check("ups", WARN, detail, "the server is on battery: check the mains supply")
    return Check("ups", OK, detail)


async def check_centre(
    s: config.Settings,
    secret: bytes | None,
    cursor: int | None,
    clock: Callable[[], float] = time.time,
) -> list[Check]:
    """One signed GET of bill changes: reachability, the signature, and the clock skew."""
    if not s.centre_url:
        return [
            Check(
                "centre",
                WARN,
                'centre.url is "": payments stay on this node',
                "set centre.url to the national centre's address",
            )
        ]
    if secret is None:
        return [Check("centre", FAIL, "no secret to sign with (see secret above)")]
    path = f"/v1/governorates/{s.node_governorate}/bills/changes?since={cursor or 0}&limit=1"
    url = s.centre_url.rstrip("/") + path
    headers = signing.sign(secret, s.node_id, "GET", path, b"", int(clock()))
    try:
        async with replication.make_session(s) as session, session.get(url, headers=headers) as r:
            status, body, date = r.status, await r.read(), r.headers.get("Date")
            received = clock()
            answer = dict(r.headers)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return [
            Check(
                "centre",
                FAIL,
                f"{s.centre_url} cannot be reached: {exc or type(exc).__name__}",
                "check centre.url, the network and the firewall (curl -v the URL);"
                " while the link is down the node keeps payments and replays later",
            )
        ]
    signature = headers[signing.SIGNATURE_HEADER]
    try:
        # A refusal of our key (401) cannot be signed by a centre that does not know it.
        if status < 500 and status != 401:
            answers.check_answer(secret, signature, status, answer, body)
    except SyncError as exc:
        return [
            Check(
                "centre",
                FAIL,
                f"{s.centre_url} answered {status} without the centre's signature: {exc}",
                "what answers at centre.url is not the centre, or it does not hold this"
                f" node's key: check centre.url and {s.centre_secret_file} with its operators",
            )
        ]
    checks = [_verdict(s, status, body)]
    centre_time = parse_http_date(date)
    if centre_time is not None:
        checks.append(_skew(centre_time + 0.5 - received))
    return checks


def _verdict(s: config.Settings, status: int, body: bytes) -> Check:
    if status == 200:
        return Check("centre", OK, f"{s.centre_url} accepted this node's signature (HTTP 200)")
    code, detail = protocol.decode_error(body)
    seen = f"{s.centre_url} answered {status} {code}: {detail}"
    if status == 401 and code == "stale_timestamp":
        advice = "this server's clock is wrong: timedatectl set-ntp true, or set it by hand"
    elif status == 401:
        advice = (
            f"key problem: the centre must have [nodes.{s.node_id}] with governorate"
            f' "{s.node_governorate}" and {s.centre_secret_file}\'s exact text as its'
            " secret_file (or next_secret_file); fix one side and restart"
        )
    elif status == 403:
        advice = (
            f"the centre knows node {s.node_id} under another governorate:"
            " check node.governorate here and at the centre"
        )
    else:
        advice = "the centre has a problem of its own: try again later, or tell its operators"
    return Check("centre", FAIL, seen, advice)


def _skew(skew: float) -> Check:
    detail = f"this clock is {abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} the centre's"
    advice = (
        "receipts carry this server's date and time: enable time sync"
        " (timedatectl set-ntp true; chrony) or set the clock"
    )
    if abs(skew) > SKEW_FAIL_S:
        return Check("clock", FAIL, detail, advice)
    if abs(skew) > SKEW_WARN_S:
        return Check("clock", WARN, detail, advice)
    return Check("clock", OK, detail)
