"""An asyncio client for the NUT network protocol (upsd, TCP 3493): GET/LIST VAR and login.

Reference: docs/net-protocol.txt in networkupstools/nut. Every request is bounded by a
timeout; a broken connection is dropped, and a reused one that upsd closed is reopened
once at once (tenacity); anything else is left to the monitor's next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

import tenacity

log = logging.getLogger(__name__)

DEFAULT_PORT = 3493
RECONNECT_ATTEMPTS = 2  # the request on the old connection, then one on a fresh one
MAX_LIST_LINES = 10_000  # a real UPS has ~50-150 variables; more means a confused peer


class NutError(Exception):
    """Root of every error the NUT client raises."""


class NutConnectionError(NutError):
    """upsd cannot be reached, refused the connection, closed it, or did not answer in time."""


class NutTimeout(NutConnectionError):
    """upsd accepted the request but did not answer within the timeout."""


class NutProtocolError(NutError):
    """upsd answered something this client cannot parse."""


class UpsWaiting(NutError):
    """The driver has not delivered its first data yet (`ups.status` reads `WAIT`)."""


class NutServerError(NutError):
    """upsd answered `ERR <code>`; subclasses name the codes a poller must handle."""

    code = "UNKNOWN"

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"ERR {code}{' ' + detail if detail else ''}")
        self.code = code
        self.detail = detail


class UnknownUps(NutServerError):
    """No UPS of that name in upsd's ups.conf."""


class VarNotSupported(NutServerError):
    """The UPS does not report that variable."""


class DriverNotConnected(NutServerError):
    """upsd has lost its driver (stopped or crashed): no data at all."""


class DataStale(NutServerError):
    """The driver stopped refreshing (upsd's MAXAGE passed); clears by itself when data flows."""


class AccessDenied(NutServerError):
    """The login does not allow the request."""


_ERRORS: dict[str, type[NutServerError]] = {
    "UNKNOWN-UPS": UnknownUps,
    "VAR-NOT-SUPPORTED": VarNotSupported,
    "DRIVER-NOT-CONNECTED": DriverNotConnected,
    "DATA-STALE": DataStale,
    "ACCESS-DENIED": AccessDenied,
}


def server_error(code: str, detail: str = "") -> NutServerError:
    return _ERRORS.get(code, NutServerError)(code, detail)


def split_line(line: str) -> list[str]:
    """Split a reply into words; `"..."` is one word, with `\\"` and `\\\\` unescaped."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        if line[i] != '"':
            j = i
            while j < n and line[j] not in " \t":
                j += 1
            words.append(line[i:j])
            i = j
            continue
        buf: list[str] = []
        i += 1
        while True:
            if i >= n:
                raise NutProtocolError(f"unterminated quoted value in {line[:200]!r}")
            char = line[i]
            if char == "\\":
                if i + 1 >= n:
                    raise NutProtocolError(f"dangling escape in {line[:200]!r}")
                buf.append(line[i + 1])
                i += 2
            elif char == '"':
                i += 1
                break
            else:
                buf.append(char)
                i += 1
        words.append("".join(buf))
    return words


def quote(value: str) -> str:
    """A value as upsd expects it in SET VAR: double-quoted, `"` and `\\` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_reply(words: list[str], line: str) -> list[str]:
    if not words:
        raise NutProtocolError("empty reply")
    if words[0] == "ERR":
        if len(words) < 2:
            raise NutProtocolError(f"ERR without a code: {line[:200]!r}")
        raise server_error(words[1], " ".join(words[2:]))
    return words


def parse_var(line: str, ups: str, var: str) -> str:
    """The value from a `VAR <ups> <var> "<value>"` reply (or raise the ERR it carries)."""
    words = check_reply(split_line(line), line)
    if len(words) != 4 or words[0] != "VAR" or words[1] != ups or words[2] != var:
        raise NutProtocolError(f"expected VAR {ups} {var}, got {line[:200]!r}")
    return words[3]


def _name(value: str) -> str:
    # Names go on the wire unquoted: a space or newline would change the command.
    if not value or any(c.isspace() or c == '"' for c in value):
        raise ValueError(f"{value!r} is not a NUT name")
    return value


class NutClient:
    """One connection to upsd, opened on first use; use `async with` or call `close()`."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, timeout_s: float = 3.0,
        username: str = "", password: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:  # fmt: skip
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.username, self.password = username, password
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self.sleep = sleep
        self._attempt_reused = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> NutClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        # The peer may be gone already; our side of the socket is closed either way.
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), self.timeout_s)

    async def get_var(self, ups: str, var: str) -> str:
        lines = await self._request(f"GET VAR {_name(ups)} {_name(var)}")
        return parse_var(lines[0], ups, var)

    async def list_var(self, ups: str) -> dict[str, str]:
        lines = await self._request(f"LIST VAR {_name(ups)}", listing=f"VAR {ups}")
        out: dict[str, str] = {}
        for line in lines:
            words = split_line(line)
            if len(words) != 4 or words[:2] != ["VAR", ups]:
                raise NutProtocolError(f"unexpected line in LIST VAR: {line[:200]!r}")
            out[words[2]] = words[3]
        return out

    async def list_ups(self) -> dict[str, str]:
        """UPS names upsd knows, with their descriptions."""
        lines = await self._request("LIST UPS", listing="UPS")
        out: dict[str, str] = {}
        for line in lines:
            words = split_line(line)
            if len(words) != 3 or words[0] != "UPS":
                raise NutProtocolError(f"unexpected line in LIST UPS: {line[:200]!r}")
            out[words[1]] = words[2]
        return out

    async def read_ups(self, ups: str) -> dict[str, str]:
        """All variables of `ups`; `UpsWaiting` while the driver has not reported yet."""
        values = await self.list_var(ups)
        # A restarted driver under a latched FSD reads "FSD WAIT": WAIT is a flag, not a value.
        if "WAIT" in values.get("ups.status", "").split():
            raise UpsWaiting(f"{ups}: the driver has not reported yet (WAIT)")
        return values

    async def command(self, line: str) -> str:
        """Send one single-reply command (e.g. `SET VAR ...`, `FSD ...`); ERR raises."""
        if "\n" in line or "\r" in line:
            raise ValueError("one command per line")
        reply = (await self._request(line))[0]
        check_reply(split_line(reply), reply)
        return reply

    def _went_away(self, exc: BaseException) -> bool:
        # An idle connection may have been closed by an upsd restart: worth one fresh try.
        # A timeout is not (a hung upsd would hang a second connection too), nor is a
        # failure on a fresh connection (upsd is down: the monitor's next poll tries again).
        return (
            isinstance(exc, NutConnectionError)
            and not isinstance(exc, NutTimeout)
            and self._attempt_reused
        )

    async def _request(self, line: str, *, listing: str | None = None) -> list[str]:
        async with self._lock:
            retrying = tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(RECONNECT_ATTEMPTS),
                wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=0.5, jitter=0.05),
                retry=tenacity.retry_if_exception(self._went_away),
                sleep=self.sleep,
                before_sleep=lambda state: log.debug(
                    "upsd connection %s went away; reconnecting", self.address
                ),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    self._attempt_reused = self._writer is not None
                    return await self._exchange(line, listing)
            raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def _exchange(self, line: str, listing: str | None) -> list[str]:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._writer is None:
                    await self._connect()
                first = await self._send(line)
                if listing is None:
                    return [first]
                words = check_reply(split_line(first), first)
                if words[:2] != ["BEGIN", "LIST"]:
                    raise NutProtocolError(f"expected BEGIN LIST, got {first[:200]!r}")
                end = "END " + first[len("BEGIN ") :]
                lines: list[str] = []
                while (next_line := await self._readline()) != end:
                    lines.append(next_line)
                    if len(lines) > MAX_LIST_LINES:
                        raise NutProtocolError("LIST reply too long")
                return lines
        except TimeoutError:
            await self.close()
            raise NutTimeout(f"upsd at {self.address} did not answer in time") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise NutConnectionError(
                f"upsd at {self.address}: {exc or type(exc).__name__}"
            ) from exc
        except NutProtocolError:
            await self.close()  # out of step with the peer: start over next time
            raise

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        if not self.username:
            return
        try:
            for command in (f"USERNAME {_name(self.username)}", f"PASSWORD {quote(self.password)}"):
                reply = await self._send(command)
                check_reply(split_line(reply), reply)
        except NutServerError:
            await self.close()  # not logged in: the next request must log in again
            raise

    async def _send(self, line: str) -> str:
        assert self._writer is not None
        self._writer.write(line.encode() + b"\n")
        await self._writer.drain()
        return await self._readline()

    async def _readline(self) -> str:
        assert self._reader is not None
        try:
            raw = await self._reader.readline()
        except ValueError as exc:  # a line over the stream's 64 KiB limit
            raise NutProtocolError(f"reply line too long from {self.address}") from exc
        if not raw.endswith(b"\n"):
            raise ConnectionResetError("upsd closed the connection")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")
