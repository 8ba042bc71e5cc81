"""The NUT client against a real upsd + dummy-ups on loopback, and against broken peers.

Real upsd: reads, typed errors (UNKNOWN-UPS, VAR-NOT-SUPPORTED, DRIVER-NOT-CONNECTED,
DATA-STALE, WAIT), login, refused connections and reconnecting after an upsd restart.
Small fake servers: a peer that never answers, one that hangs up mid-reply, one that
closes idle connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from helpers import eventually
from upsd import ADMIN_PASSWORD, UPS, Upsd

from edge.power import nut


async def test_reads_the_ups(upsd: Upsd) -> None:
    async with nut.NutClient("127.0.0.1", upsd.port, timeout_s=2) as client:
        values = await client.read_ups(UPS)
        assert values["ups.status"] == "OL"
        assert (values["battery.charge"], values["ups.load"]) == ("100", "23")
        assert await client.get_var(UPS, "battery.runtime") == "3600"
        assert UPS in await client.list_ups()


async def test_unknown_ups_and_unsupported_variable_are_typed(upsd: Upsd) -> None:
    async with nut.NutClient("127.0.0.1", upsd.port, timeout_s=2) as client:
        with pytest.raises(nut.UnknownUps):
            await client.list_var("nosuchups")
        with pytest.raises(nut.VarNotSupported):
            await client.get_var(UPS, "ups.nosuchvar")
        assert await client.get_var(UPS, "ups.status") == "OL", "the connection survives ERR"


async def test_login_then_set_var(upsd: Upsd) -> None:
    set_charge = f"SET VAR {UPS} battery.charge {nut.quote('55')}"
    async with nut.NutClient("127.0.0.1", upsd.port, timeout_s=2) as anonymous:
        with pytest.raises(nut.NutServerError) as refused:
            await anonymous.command(set_charge)
        assert refused.value.code == "USERNAME-REQUIRED"
    # upsd answers OK to any PASSWORD; the check comes with the first privileged command.
    wrong = nut.NutClient("127.0.0.1", upsd.port, timeout_s=2, username="admin", password="nope")
    async with wrong:
        assert await wrong.get_var(UPS, "ups.status") == "OL"
        with pytest.raises(nut.AccessDenied):
            await wrong.command(set_charge)
    admin = nut.NutClient(
        "127.0.0.1", upsd.port, timeout_s=2, username="admin", password=ADMIN_PASSWORD
    )
    async with admin:
        assert await admin.command(set_charge) == "OK"

        async def charged() -> bool:
            return await admin.get_var(UPS, "battery.charge") == "55"

        await eventually(charged)


async def test_driver_gone_is_driver_not_connected_then_wait_then_data(upsd: Upsd) -> None:
    async with nut.NutClient("127.0.0.1", upsd.port, timeout_s=2) as client:
        upsd.kill_driver()
        with pytest.raises(nut.DriverNotConnected):
            await client.read_ups(UPS)
        upsd.start_driver()
        seen: list[str] = []

        async def data() -> bool:
            try:
                return (await client.read_ups(UPS))["ups.status"] == "OL"
            except (nut.DriverNotConnected, nut.UpsWaiting) as exc:
                seen.append(type(exc).__name__)
                return False

        await eventually(data)
        assert "UpsWaiting" in seen, "upsd answers WAIT until the new driver reports"


async def test_upsd_down_is_refused_and_the_same_client_reconnects(fresh_upsd: Upsd) -> None:
    upsd = fresh_upsd  # stopping upsd leaves a driver that must be restarted: not the shared one
    async with nut.NutClient("127.0.0.1", upsd.port, timeout_s=2) as client:
        assert await client.get_var(UPS, "ups.status") == "OL"
        upsd.stop_server()
        with pytest.raises(nut.NutConnectionError, match=r"refused|Connect call failed"):
            await client.get_var(UPS, "ups.status")
        upsd.start_server()
        assert await client.get_var(UPS, "ups.status") == "OL"


async def test_frozen_driver_is_data_stale_and_recovers(fresh_upsd: Upsd) -> None:
    upsd = fresh_upsd
    upsd.set_maxage(2)  # upsd calls a silent driver's data stale after 2 s (not 15)
    async with nut.NutClient("127.0.0.1", upsd.port, timeout_s=2) as client:
        upsd.freeze("driver")

        async def stale() -> bool:
            try:
                await client.read_ups(UPS)
            except nut.DataStale:
                return True
            return False

        await eventually(stale)
        upsd.thaw("driver")

        async def fresh() -> bool:
            try:
                return (await client.read_ups(UPS))["ups.status"] == "OL"
            except nut.DataStale:
                return False

        await eventually(fresh)


# --- broken peers -------------------------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_upsd() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Start a loopback server running `handler` per connection; everything closed at the end."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await handler(reader, writer)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()
    await asyncio.sleep(0)  # let the handlers see EOF and return


async def test_a_peer_that_never_answers_times_out(
    fake_upsd: Callable[[Handler], Awaitable[int]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    port = await fake_upsd(silent)
    async with nut.NutClient("127.0.0.1", port, timeout_s=0.3) as client:
        started = time.monotonic()
        with pytest.raises(nut.NutTimeout, match="did not answer in time"):
            await client.get_var(UPS, "ups.status")
        assert time.monotonic() - started < 2.0


async def test_a_peer_that_hangs_mid_session_costs_one_timeout_not_two(
    fake_upsd: Callable[[Handler], Awaitable[int]],
) -> None:
    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(f'VAR {UPS} ups.status "OL"\n'.encode())
        await writer.drain()
        await reader.read()
        writer.close()

    port = await fake_upsd(answers_once)
    async with nut.NutClient("127.0.0.1", port, timeout_s=0.5) as client:
        assert await client.get_var(UPS, "ups.status") == "OL"
        started = time.monotonic()
        with pytest.raises(nut.NutTimeout):
            await client.get_var(UPS, "ups.status")
        assert time.monotonic() - started < 0.9, "a timeout is not retried on a new connection"


async def test_hanging_up_mid_list_is_a_connection_error(
    fake_upsd: Callable[[Handler], Awaitable[int]],
) -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(f'BEGIN LIST VAR {UPS}\nVAR {UPS} ups.status "OL"\n'.encode())
        await writer.drain()
        writer.close()

    port = await fake_upsd(rude)
    async with nut.NutClient("127.0.0.1", port, timeout_s=1) as client:
        with pytest.raises(nut.NutConnectionError):
            await client.list_var(UPS)


async def test_an_idle_connection_closed_by_the_peer_is_reopened(
    fake_upsd: Callable[[Handler], Awaitable[int]],
) -> None:
    connections = 0

    async def one_answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readline()
        writer.write(f'VAR {UPS} ups.status "OB LB"\n'.encode())
        await writer.drain()
        writer.close()

    port = await fake_upsd(one_answer_each)
    async with nut.NutClient("127.0.0.1", port, timeout_s=1) as client:
        assert await client.get_var(UPS, "ups.status") == "OB LB"
        assert await client.get_var(UPS, "ups.status") == "OB LB"
    assert connections == 2


async def test_garbage_is_a_protocol_error(fake_upsd: Callable[[Handler], Awaitable[int]]) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b'VAR dummy ups.status "unterminated\n')
        await writer.drain()
        await reader.read()
        writer.close()

    port = await fake_upsd(garbage)
    async with nut.NutClient("127.0.0.1", port, timeout_s=1) as client:
        with pytest.raises(nut.NutProtocolError):
            await client.get_var(UPS, "ups.status")
