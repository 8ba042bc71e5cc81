"""A small fault-injecting TCP proxy for loopback tests (toxiproxy is not packaged here).

Modes, switchable at any time: `pass` (forward both ways), `refuse` (accept then close at
once), `http500` (answer 500 without forwarding), `drop_reply` (forward the request, let the
upstream process it, then cut the client off before any byte of the reply arrives), `slow`
(forward, but the reply trickles: 8 KiB every 20 ms, like a thin governorate link).
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._mode = "pass"
        self._open: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.replies_dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        """A new fault applies to kept-alive connections too: they are cut at once."""
        self._mode = value
        if value not in ("pass", "slow"):
            for writer in list(self._open):
                writer.transport.abort()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._open.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        if mode == "refuse":
            return
        if mode == "http500":
            await reader.read(65536)
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            forward = asyncio.create_task(self._pipe(reader, up_writer))
            try:
                while True:
                    chunk = await up_reader.read(65536)
                    if not chunk:
                        break
                    if self.mode == "drop_reply":
                        # The upstream has processed the request and answered: lose the answer.
                        self.replies_dropped += 1
                        return
                    if self.mode == "slow":
                        for i in range(0, len(chunk), 8192):
                            writer.write(chunk[i : i + 8192])
                            await writer.drain()
                            await asyncio.sleep(0.02)
                        continue
                    writer.write(chunk)
                    await writer.drain()
            finally:
                forward.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await forward
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()
