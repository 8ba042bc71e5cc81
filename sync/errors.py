"""Errors raised by the sync package: one root, each child carrying a stable `code`.

The centre maps them to msgpack error frames; nodes branch on `code`, never on the text.
"""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error the sync package (and the reference centre) raises."""

    code: str = "sync_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class ProtocolError(SyncError):
    """A frame is malformed: not msgpack, wrong types, missing or extra keys, too large."""

    code = "bad_frame"


class BadSignature(SyncError):
    """A request is not genuine: on the wire always `unauthorized` (the detail is for the
    centre's log), except `stale_timestamp` for a genuine request outside the time window.
    """

    code = "unauthorized"


class BadAnswer(SyncError):
    """An answer at the centre's URL that the node cannot trust: its answer signature is
    missing or wrong, or it carries what the node never asked for (a foreign bill).

    Nothing of it is settled or applied; not retried at once (it is not the network).
    """

    code = "bad_answer"


class CentreConfigError(SyncError):
    """The centre's configuration is invalid; the message names the key."""

    code = "bad_config"


class Refused(SyncError):
    """The centre refuses a request as a whole (nothing recorded); carries the HTTP status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail, code=code)
        self.status = status


class StoreFailed(SyncError):
    """The centre's database cannot be reached or failed mid-transaction (nothing of the
    request was recorded): the node retries (503)."""

    code = "storage_unavailable"


class ImportFailed(SyncError):
    """A bills import (or another operator command) cannot run; nothing was written."""

    code = "import_failed"


class CentreUnavailable(SyncError):
    """The centre could not be reached or failed (transport error, timeout, 5xx): retried.

    Only this type is retried at once within a step; everything else waits for the loop.
    """

    code = "centre_unavailable"


class CentreRefused(SyncError):
    """The centre answered a node's request with a 4xx: nothing was recorded.

    A `stale_timestamp` is cured by the clock skew its `Date` header gives; any other code is
    a configuration fault (keys, chain, governorate) that no retry cures.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}", code=code)
        self.status = status

    @property
    def stale(self) -> bool:
        return self.status == 401 and self.code == "stale_timestamp"

    @property
    def config_fault(self) -> bool:
        return not self.stale


class CentreUntrusted(CentreRefused):
    """The TLS handshake with the centre failed on a certificate (wrong CA, wrong name, expired,
    ours refused) or https met a plain server: a configuration fault no retry cures. It has
    no HTTP answer, so `status` is 0."""

    def __init__(self, detail: str) -> None:
        SyncError.__init__(self, f"tls_untrusted: {detail}", code="tls_untrusted")
        self.status = 0


class TlsConfigError(SyncError):
    """A CA, certificate or key file cannot be loaded; the message names the file."""

    code = "bad_tls_config"


class TransferRefused(SyncError):
    """A transfer file (sync.transfer) is refused: damaged, truncated, wrongly signed, for
    another node or governorate, or older than what it would change. Nothing was changed."""

    code = "transfer_refused"
