"""Real servers for synchronous tests: an asyncio loop on a background thread, a raw HTTP client.

Hypothesis and schemathesis drive synchronous test functions, so the node (or centre) under
test runs on a loop of its own thread, started once per test function, and every example
hands its coroutine to that loop. `raw_request` writes the request bytes itself, so a test can
send any header value or request target, not only what an HTTP client library would allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nodefixtures import RunningNode, start_node

T = TypeVar("T")


class LoopHost:
    """An event loop running forever on a daemon thread; `run` a coroutine there and wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loop-host", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop's thread (e.g. a read on the node's connection)."""

        async def on_loop() -> T:
            return fn(*args)

        return self.run(on_loop())

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def hosted_node(
    tmp_path: Path, bills: list[dict[str, Any]], **kwargs: Any
) -> Iterator[tuple[LoopHost, RunningNode]]:
    """A real node (nodefixtures.start_node) on a LoopHost, stopped cleanly at the end."""
    host = LoopHost()
    try:
        runner, rn = host.run(start_node(tmp_path, bills, **kwargs))
        try:
            yield host, rn
        finally:
            host.run(rn.session.close())
            host.run(runner.cleanup())
    finally:
        host.close()


def db_digest(conn: Any, tables: tuple[str, ...] | None = None) -> str:
    """SHA-256 over every row of every table (or of `tables`): equal digests, equal databases."""
    names = tables or tuple(
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    )
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        # Sorted in Python: some tables are WITHOUT ROWID, and row order is not content.
        for text in sorted(repr(row) for row in conn.execute(f'SELECT * FROM "{name}"')):
            digest.update(text.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value wins
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


async def raw_request(
    port: int,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> RawResponse:
    """One HTTP/1.1 request on a fresh connection to 127.0.0.1:port, bytes exactly as given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        head += [name + b": " + value for name, value in headers]
        if content_length:
            head.append(b"Content-Length: " + str(len(body)).encode())
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    parsed: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        parsed[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    if parsed.get("transfer-encoding", "").lower() == "chunked":
        payload = _dechunk(payload)
    return RawResponse(status, parsed, payload)
