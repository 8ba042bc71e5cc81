"""Slow and crowded clients against a real node (edge.web.connections): raw sockets on loopback.

Each test gives the node small limits, then plays the attacker: half a request head, a
trickled head, a slow body, an idle keep-alive connection, too many connections from one
address, malformed chunked bodies. "Closed" means the socket reads EOF (or is reset).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually
from nodefixtures import RunningNode, make_bill, start_node
from tlscerts import Authority

from edge import config
from edge.app import create_app
from edge.web import connections, server

GENEROUS_S = 10.0  # far above every limit below: only a hang reaches it
STATUS = b"GET /v1/status HTTP/1.1\r\nHost: node\r\n\r\n"


@asynccontextmanager
async def node(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningNode]:
    runner, rn = await start_node(tmp_path, [make_bill("0100234567", amount=150_000)], **overrides)
    try:
        yield rn
    finally:
        await rn.session.close()
        await runner.cleanup()


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(rn: RunningNode) -> Conn:
    port = int(rn.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_within(conn: Conn, timeout: float = GENEROUS_S) -> bytes:
    """Read until the node closes the connection; what it sent before. Fails on a hang."""
    reader, writer = conn
    try:
        data = await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        data = b""
    writer.close()
    with suppress(ConnectionError):
        await writer.wait_closed()
    return data


async def response(conn: Conn, request: bytes = STATUS) -> tuple[int, bytes]:
    """Send one request, read one response (Content-Length framed) on a kept-alive connection."""
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GENEROUS_S)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), GENEROUS_S)
    return int(head.split()[1]), body


async def test_half_sent_head_is_closed_at_the_header_timeout(tmp_path: Path) -> None:
    async with node(tmp_path, http_header_timeout_s=0.5, http_keepalive_timeout_s=60.0) as rn:
        conn = await connect(rn)
        started = time.monotonic()
        conn[1].write(b"GET /v1/status HTTP/1.1\r\nHost: node\r\n")  # no blank line: never ends
        assert await closed_within(conn) == b""
        assert time.monotonic() - started >= 0.45  # the deadline, not an instant refusal


async def test_silent_connection_is_closed_at_the_header_timeout(tmp_path: Path) -> None:
    async with node(tmp_path, http_header_timeout_s=0.5, http_keepalive_timeout_s=60.0) as rn:
        assert await closed_within(await connect(rn)) == b""


async def test_trickled_head_is_cut_though_bytes_keep_coming(tmp_path: Path) -> None:
    # A deadline, not an idle timer: a byte every 0.1 s does not keep the connection.
    async with node(tmp_path, http_header_timeout_s=0.5, http_keepalive_timeout_s=60.0) as rn:
        reader, writer = await connect(rn)
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            for byte in b"GET /v1/status HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
                if reader.at_eof() or time.monotonic() - started > GENEROUS_S:
                    raise ConnectionResetError
        assert time.monotonic() - started < GENEROUS_S
        writer.close()


async def test_slow_body_is_cut_and_nothing_is_written(tmp_path: Path) -> None:
    async with node(tmp_path, http_body_timeout_s=0.5, http_keepalive_timeout_s=60.0) as rn:
        before = rn.db_counts()
        conn = await connect(rn)
        body = json.dumps({"bill_id": "DAM-2026-05-0100234567", "amount": 1000,
                           "method": "cash", "cashier": "rami"}).encode()  # fmt: skip
        head = (
            "POST /v1/payments HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {rn.tokens['cashier']}\r\nIdempotency-Key: slow-1\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.monotonic()
        conn[1].write(head + body[:10])  # the rest never comes
        await closed_within(conn)
        assert time.monotonic() - started >= 0.45
        assert rn.db_counts() == before


async def test_body_cut_is_not_logged_as_an_unhandled_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with node(tmp_path, http_body_timeout_s=0.3) as rn:
        conn = await connect(rn)
        conn[1].write(
            b"POST /v1/payments HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {rn.tokens['cashier']}\r\n".encode()
            + b"Idempotency-Key: slow-2\r\nContent-Length: 500\r\n\r\n{"
        )
        await closed_within(conn)
        await eventually(lambda: any("request body" in r.getMessage() for r in caplog.records))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]


async def test_idle_keepalive_connection_is_closed(tmp_path: Path) -> None:
    async with node(tmp_path, http_header_timeout_s=30.0, http_keepalive_timeout_s=0.5) as rn:
        conn = await connect(rn)
        assert (await response(conn))[0] == 200
        answered = time.monotonic()
        assert await closed_within(conn) == b""
        assert time.monotonic() - answered >= 0.45


async def test_keepalive_requests_each_get_their_own_head_deadline(tmp_path: Path) -> None:
    # Three requests over 0.9 s on one connection with a 0.5 s head deadline: all served.
    async with node(tmp_path, http_header_timeout_s=0.5, http_keepalive_timeout_s=5.0) as rn:
        conn = await connect(rn)
        for _ in range(3):
            await asyncio.sleep(0.3)  # pacing the client, not waiting for a result
            assert (await response(conn))[0] == 200
        conn[1].close()


async def test_connection_over_the_per_address_cap_is_refused(tmp_path: Path) -> None:
    async with node(tmp_path, http_max_connections_per_address=3, http_header_timeout_s=30.0,
                    http_keepalive_timeout_s=30.0) as rn:  # fmt: skip
        held = [await connect(rn) for _ in range(3)]
        # The three are admitted before the fourth connects: each answers a request first.
        for conn in held:
            assert (await response(conn))[0] == 200
        extra = await connect(rn)
        assert await closed_within(extra) == b""
        for conn in held:  # still open, still served
            assert (await response(conn))[0] == 200
        held.pop()[1].close()

        async def admitted() -> bool:
            conn = await connect(rn)
            try:
                return (await response(conn))[0] == 200
            except (ConnectionError, asyncio.IncompleteReadError):
                return False
            finally:
                conn[1].close()

        assert await eventually(admitted, GENEROUS_S, "a slot freed by a closed connection")
        for conn in held:
            conn[1].close()


def bad_chunked(n: int) -> bytes:
    return (
        b"POST /v1/payments HTTP/1.1\r\nHost: node\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"zz" + b"A" * 3000 + b"-%d\r\n\r\n" % n
    )  # fmt: skip


def protocol_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == connections.PROTOCOL_LOG.name]


async def test_malformed_chunked_gets_400_and_logs_one_short_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=connections.PROTOCOL_LOG.name)
    async with node(tmp_path) as rn:
        for n in range(50):
            conn = await connect(rn)
            conn[1].write(bad_chunked(n))
            answer = await closed_within(conn)
            assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:80]
    lines = protocol_lines(caplog)
    assert len(lines) == 1, [r.getMessage()[:100] for r in lines]
    (line,) = lines
    text = line.getMessage()
    assert text.startswith("bad HTTP request from 127.0.0.1: BadHttpMessage: ")
    assert len(text) < 300 and "\n" not in text
    assert line.exc_info is None and line.levelno == logging.WARNING
    assert "Traceback" not in caplog.text


async def test_split_malformed_chunked_body_is_cut_at_the_body_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Head first, the bad chunk later: aiohttp queues its 400 behind the request still reading
    # its body, which would wait for ever; the body deadline ends it, without a 500.
    caplog.set_level(logging.WARNING)
    async with node(tmp_path, http_body_timeout_s=0.5) as rn:
        conn = await connect(rn)
        conn[1].write(
            b"POST /v1/payments HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {rn.tokens['cashier']}\r\n".encode()
            + b"Idempotency-Key: split-1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await conn[1].drain()
        await asyncio.sleep(0.1)  # pacing: the head arrives on its own
        conn[1].write(b"zz\r\n\r\n")
        await closed_within(conn)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_limits_hold_over_tls(tmp_path: Path) -> None:
    ca = Authority.make(tmp_path / "pki")
    pair = ca.issue("node")
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(pair.cert, pair.key)
    client = ssl.create_default_context(cafile=str(ca.cert))
    settings = config.Settings(
        node_data_dir=tmp_path / "data", auth_tokens_file=tmp_path / "tokens.toml",
        http_host="127.0.0.1", http_port=0, ups_source="none", storage_min_free_mb=0,
        centre_url="", http_header_timeout_s=0.5, http_keepalive_timeout_s=5.0,
    )  # fmt: skip
    runner = server.runner(create_app(settings), settings)
    await runner.setup()
    try:
        await server.site(runner, settings, ssl_context=serving).start()
        port = runner.addresses[0][1]
        conn = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        for _ in range(3):  # 0.9 s on one connection: each head met its own deadline
            await asyncio.sleep(0.3)
            assert (await response(conn))[0] == 200
        conn[1].close()
        half = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        half[1].write(b"GET /v1/status HTTP/1.1\r\n")
        assert await closed_within(half) == b""
    finally:
        await runner.cleanup()


async def test_the_cap_is_per_address_another_client_is_served(tmp_path: Path) -> None:
    # 127.0.0.2 is this machine too (all of 127/8 is loopback); the node listens on 127.0.0.1.
    async with node(tmp_path, http_max_connections_per_address=2, http_header_timeout_s=30.0,
                    http_keepalive_timeout_s=30.0) as rn:  # fmt: skip
        port = int(rn.url.rsplit(":", 1)[1])
        crowd = [await connect(rn) for _ in range(2)]
        for conn in crowd:
            assert (await response(conn))[0] == 200
        assert await closed_within(await connect(rn)) == b""
        other = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        assert (await response(other))[0] == 200
        for conn in (*crowd, other):
            conn[1].close()
