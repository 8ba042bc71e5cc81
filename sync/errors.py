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
    """A request's signature headers are missing, stale, from an unknown node or wrong.

    Codes: `missing_signature`, `unknown_node`, `stale_timestamp`, `bad_signature`.
    """

    code = "bad_signature"


class CentreConfigError(SyncError):
    """The centre's configuration is invalid; the message names the key."""

    code = "bad_config"


class Refused(SyncError):
    """The centre refuses a request as a whole (nothing recorded); carries the HTTP status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail, code=code)
        self.status = status


class ImportFailed(SyncError):
    """A bills import (or another operator command) cannot run; nothing was written."""

    code = "import_failed"
