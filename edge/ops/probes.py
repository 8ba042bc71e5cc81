"""The doctor's checks over the network: the node's own port, the UPS through NUT, the centre.

Each returns `Check`s (also used by edge.ops.doctor) and never raises for a peer that is
down or wrong: saying what is wrong, and what to do, is the point.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edge import config, replication, serving
from edge.errors import ConfigError
from edge.power import nut
from edge.power.policy import classify
from edge.power.sources import make_source
from sync import answers, protocol, signing, tls
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


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def check_node(s: config.Settings) -> Check:
    url = serving.local_url(s, "/readyz")
    try:
        context = serving.local_client_context(s)
    except ConfigError as exc:
        return Check("node", FAIL, f"cannot verify {url}: {exc}", "see http tls above")
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        connector = aiohttp.TCPConnector(ssl=context or True)
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            session.get(url) as resp,
        ):
            status = resp.status
            body = _json(await resp.read()) if status == 503 else None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        refused = isinstance(exc, aiohttp.ClientConnectorError)
        # Under TLS 1.3 a refused client certificate shows as the connection closing.
        if isinstance(exc, aiohttp.ClientSSLError) or (
            serving.uses_tls(s) and isinstance(exc, tls.CLOSED) and not refused
        ):
            return Check(
                "node",
                FAIL,
                f"{url}: the TLS handshake failed ({type(exc).__name__}: {exc})",
                serving.local_failure_hint(s),
            )
        return Check(
            "node",
            WARN,
            f"nothing answers at {url}",
            "start it: systemctl start edge (logs: journalctl -u edge -e)",
        )
    if isinstance(body, dict) and body.get("status") == "bootstrapping":
        progress = body.get("progress") or {}
        return Check(
            "node", WARN,
            f"{url} answers 503: the mirror is loading, {progress.get('bills')} of"
            f" {progress.get('of') or '?'} bills",
            "inquiries answer 503 until it is in; with centre.url empty, import a bills file",
        )  # fmt: skip
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


def check_http_security(s: config.Settings) -> Check:
    """Plain http to other machines WARNs; https must load its files, with the key private."""
    where = f"{s.http_host or '*'}:{s.http_port}"
    if serving.insecure(s):
        return Check(
            "http tls",
            WARN,
            f"the node serves plain http on {where} to other machines: bearer tokens (the"
            " admin's too), names and addresses cross the LAN unencrypted",
            serving.PLAIN_ADVICE,
        )
    if not serving.uses_tls(s):
        return Check("http tls", OK, f"plain http on {where}, this machine only")
    try:
        serving.server_context(s)
    except ConfigError as exc:
        return Check(
            "http tls", FAIL, str(exc), "fix the file or its path; the node will not start"
        )
    if Path(s.http_key_file).stat().st_mode & 0o077:
        key = s.http_key_file
        return Check(
            "http tls", WARN, f"the server key {key} is readable by others", f"chmod 600 {key}"
        )
    clients = (
        f", client certificates from {s.http_client_ca_file} required"
        if s.http_client_ca_file
        else ""
    )
    return Check("http tls", OK, f"https on {where} with {s.http_cert_file}{clients}")


def check_link_security(s: config.Settings) -> Check:
    """http:// to another machine WARNs; https:// must load its CA and client files."""
    url = tls.origin(s.centre_url)
    if tls.insecure(s.centre_url):
        return Check(
            "tls",
            WARN,
            f"{url} is plain http:// to another machine: payments and verdicts cross the"
            " network unencrypted, and anyone on the way can answer in the centre's place",
            "use the centre's https:// address with centre.ca_file = its CA (deploy/README.md,"
            " section TLS)",
        )
    if not s.centre_url.startswith("https://"):
        return Check("tls", OK, f"{url} is on this machine: plain http is fine")
    try:
        replication.ssl_context(s)
    except ConfigError as exc:
        return Check("tls", FAIL, str(exc), "fix the file or its path; the node will not start")
    client = f", client certificate {s.centre_cert_file}" if s.centre_cert_file else ""
    key = s.centre_key_file or s.centre_cert_file
    if key and Path(key).stat().st_mode & 0o077:
        return Check("tls", WARN, f"the client key {key} is readable by others", f"chmod 600 {key}")
    if not s.centre_ca_file:
        return Check(
            "tls",
            WARN,
            f"https to {url} trusting every CA this system trusts{client}",
            "pin the centre's CA: centre.ca_file = the ministry CA's PEM",
        )
    return Check("tls", OK, f"https to {url}, CA pinned to {s.centre_ca_file}{client}")


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
    except ConfigError as exc:
        return [Check("centre", FAIL, f"no TLS context: {exc}", "see tls above")]
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        failure = tls.transport_failure(exc, s.centre_url)
        if failure.code == "tls_untrusted":
            advice = (
                "the handshake was refused: centre.ca_file must be the CA that issued the"
                " centre's certificate, centre.url must use the name in it, and a centre that"
                " asks for client certificates needs centre.cert_file and centre.key_file"
            )
        else:
            advice = (
                "check centre.url, the network and the firewall (curl -v the URL);"
                " while the link is down the node keeps payments and replays later"
            )
            if s.centre_url.startswith("https://") and not s.centre_cert_file:
                # TLS 1.3: a centre that wants a client certificate just closes the connection.
                advice += "; a centre that requires client certificates closes the connection"
                advice += " on a node without one: set centre.cert_file and centre.key_file"
        seen = (
            "refused the TLS handshake" if failure.code == "tls_untrusted" else "cannot be reached"
        )
        return [
            Check("centre", FAIL, f"{tls.origin(s.centre_url)} {seen}: {failure.detail}", advice)
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
