"""TLS contexts: the node's client context to the centre (a pinned CA, an optional client
certificate), a server's context (the centre's, the node's own), the exact pin the node's
local tools use, and what a failed handshake means to the loops.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import urllib.parse
from pathlib import Path

import aiohttp

from sync.errors import CentreUnavailable, CentreUntrusted, SyncError, TlsConfigError

# Handshake failures that no retry cures: the peer's certificate, ours, or https spoken to a
# plain-http server. Anything else on the wire (a reset, an EOF) stays a transient error.
UNTRUSTED_REASONS = frozenset({
    "CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE",
})  # fmt: skip


PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----"
)

# The peer closing an open connection (not refusing one: that is ClientConnectorError).
CLOSED = (aiohttp.ServerDisconnectedError, ConnectionResetError, aiohttp.ClientOSError)
HINT_CLOSED = (
    " (the centre closed the TLS connection: if it requires client certificates, check"
    " centre.cert_file and centre.key_file)"
)


def origin(url: str) -> str:
    """scheme://host[:port] of `url`, without any user:password part (safe to log)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def insecure(url: str) -> bool:
    """True for plain http:// to a host other than this machine: anyone on the path can read
    the traffic and answer in the centre's place. Loopback (the demo, a local proxy) is fine."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "http" and not loopback(parts.hostname or "")


def loopback(host: str) -> bool:
    """True for a name or address of this machine only; "" and 0.0.0.0 (every address) are not."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_context(
    ca_file: str | Path | None, cert_file: str | Path | None, key_file: str | Path | None
) -> ssl.SSLContext:
    """Verify the centre against `ca_file` only (the system CAs when None) and its name;
    present `cert_file` (with `key_file`, or a key inside the same PEM) when given."""
    try:
        if ca_file:
            # Pinned: only certificates this CA issued, not every CA the system trusts.
            context = ssl.create_default_context(cafile=str(ca_file))
        else:
            context = ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load the CA file {ca_file}: {_why(exc)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        _load_pair(context, cert_file, key_file)
    return context


def server_context(
    cert_file: str | Path, key_file: str | Path | None, client_ca_file: str | Path | None
) -> ssl.SSLContext:
    """A server's context (the centre's, the node's); with `client_ca_file`, a client without
    a certificate that CA issued is refused in the handshake, before any HTTP is read."""
    # CLIENT_AUTH loads no system CA (it starts as CERT_NONE): only client_ca_file vouches.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_pair(context, cert_file, key_file)
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=str(client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load the client CA file {client_ca_file}: {_why(exc)}"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def pinned_context(
    server_cert_file: str | Path, cert_file: str | Path | None, key_file: str | Path | None
) -> ssl.SSLContext:
    """Trust exactly the first certificate in `server_cert_file` (a server on this machine
    whose PEM we can read), whatever names it carries; present `cert_file` when given."""
    try:
        text = Path(server_cert_file).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise TlsConfigError(
            f"cannot read the certificate {server_cert_file}: {_why(exc)}"
        ) from exc
    leaf = PEM_CERTIFICATE.search(text)
    if leaf is None:
        raise TlsConfigError(f"no PEM certificate in {server_cert_file}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cadata=leaf.group(0))
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"cannot load the certificate {server_cert_file}: {_why(exc)}"
        ) from exc
    # The leaf itself is the trust anchor, so no CA is needed above it; its names add nothing
    # to an exact pin (and need not include 127.0.0.1, where the local tools connect).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    if cert_file:
        _load_pair(context, cert_file, key_file)
    return context


def _load_pair(context: ssl.SSLContext, cert_file: str | Path, key_file: str | Path | None) -> None:
    try:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load the certificate {cert_file} with the key {key_file or cert_file}:"
            f" {_why(exc)}"
        ) from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return getattr(exc, "reason", None) or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The innermost ssl.SSLError in `exc` (aiohttp's own error classes derive from ssl's but
    carry the real one inside, with its `verify_message` and `reason`)."""
    found: ssl.SSLError | None = None
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):
            found = seen
        inner = getattr(seen, "certificate_error", None) or getattr(seen, "os_error", None)
        seen = inner if isinstance(inner, BaseException) and inner is not seen else seen.__cause__
    return found


def transport_failure(exc: BaseException, url: str = "") -> SyncError:
    """What a failed exchange with `url` means: CentreUntrusted (a configuration fault, held
    and retried slowly) for a refused handshake, CentreUnavailable (retried) otherwise."""
    found = _ssl_error(exc)
    # `reason` and `verify_message` exist only on errors the ssl module raised itself.
    reason = getattr(found, "reason", None)
    if found is not None and (
        isinstance(found, ssl.SSLCertVerificationError) or reason in UNTRUSTED_REASONS
    ):
        if isinstance(found, ssl.SSLCertVerificationError):
            why = getattr(found, "verify_message", None) or reason
            detail = (
                f"the centre's certificate is not trusted ({why}):"
                " check centre.ca_file and the name in centre.url"
            )
        elif reason == "WRONG_VERSION_NUMBER":
            detail = "the centre does not speak TLS at this address: check centre.url"
        else:
            detail = (
                f"the centre refused the handshake ({reason}):"
                " check centre.cert_file and centre.key_file"
            )
        return CentreUntrusted(detail)
    if isinstance(exc, aiohttp.ClientSSLError):
        return CentreUnavailable(f"tls: {type(exc).__name__}: {exc}")
    error = f"transport: {type(exc).__name__}: {exc}"
    closed = isinstance(exc, CLOSED) and not isinstance(exc, aiohttp.ClientConnectorError)
    if url.startswith("https://") and closed:
        # Under TLS 1.3 a centre refuses a client certificate (or its absence) after our side
        # of the handshake is done: we only see the connection close. It may also be the
        # network, so it stays transient, but the operator gets the likely cause.
        error += HINT_CLOSED
    return CentreUnavailable(error)
