"""The node's own HTTP listener: its TLS server context, its event loop, the URL and client
context its local tools (`edge status`, `edge replay`, `edge doctor`) reach it with, and
whether it serves the network in clear.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from edge.config import Settings, probe_host
from edge.errors import ConfigError
from edge.settingrules import FAST_EXTRA
from sync import tls
from sync.errors import SyncError

log = logging.getLogger(__name__)

PLAIN_ADVICE = "set http.cert_file and http.key_file (deploy/README.md, section TLS on the node)"


def uses_tls(s: Settings) -> bool:
    return bool(s.http_cert_file)


def insecure(s: Settings) -> bool:
    """Plain http on an address other machines reach: bearer tokens (the admin's too), names
    and addresses cross the LAN in clear. Loopback only (the demo, a local proxy) is fine."""
    return not uses_tls(s) and not tls.loopback(s.http_host)


def loop_factory(s: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What `edge serve` runs on (http.loop): None for asyncio's own loop, else uvloop's.

    uvloop answered inquiries 1.13-1.21x faster in bench_api (tests/bench/README.md) and
    payments no faster (the writer thread is their limit); asyncio stays the default.
    """
    if s.http_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigError(f'http.loop = "uvloop" needs uvloop: {FAST_EXTRA}') from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def server_context(s: Settings) -> ssl.SSLContext | None:
    """What `edge serve` listens with (None: plain http); ConfigError naming the keys."""
    if not uses_tls(s):
        return None
    try:
        return tls.server_context(s.http_cert_file, s.http_key_file, s.http_client_ca_file or None)
    except SyncError as exc:
        raise ConfigError(f"http.cert_file/key_file/client_ca_file: {exc.detail}") from exc


def warn_if_insecure(s: Settings) -> None:
    """The one start-time line for a node that serves other machines in plain http."""
    if insecure(s):
        log.warning(
            "serving plain http on %s:%d to other machines: tokens, names and addresses cross"
            " the network unencrypted; %s",
            s.http_host or "*", s.http_port, PLAIN_ADVICE,
        )  # fmt: skip


def local_url(s: Settings, path: str = "") -> str:
    """The node's address from this machine (loopback when it listens on every address)."""
    host = probe_host(s.http_host)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if uses_tls(s) else 'http'}://{host}:{s.http_port}{path}"


def local_client_context(s: Settings) -> ssl.SSLContext | None:
    """How the local tools verify the node: they trust exactly the certificate in
    http.cert_file (no CA file to configure, and 127.0.0.1 need not be among its names).
    With http.client_ca_file they present the node's own pair as their client certificate:
    it passes when that CA issued it with extendedKeyUsage clientAuth (deploy/README.md)."""
    if not uses_tls(s):
        return None
    client = s.http_client_ca_file != ""
    try:
        return tls.pinned_context(
            s.http_cert_file,
            s.http_cert_file if client else None,
            s.http_key_file if client else None,
        )
    except SyncError as exc:
        raise ConfigError(f"http.cert_file/key_file: {exc.detail}") from exc


def local_failure_hint(s: Settings) -> str:
    """What an operator should check when a local tool cannot talk to a TLS node."""
    if not uses_tls(s):
        return ""
    hint = "if http.cert_file was renewed, restart the node (systemctl restart edge)"
    if s.http_client_ca_file:
        hint += (
            "; the node requires client certificates: this tool presents http.cert_file, which"
            " http.client_ca_file's CA must have issued with extendedKeyUsage clientAuth"
        )
    return hint
