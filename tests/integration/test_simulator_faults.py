"""The simulator's fault modes, seen from a raw TCP client: exactly the bytes each one sends."""

from __future__ import annotations

import asyncio

import pytest

from carousel_gateway.plc.protocol import Command
from carousel_gateway.sim.server import EXTRA_BYTES, FaultMode

pytestmark = pytest.mark.asyncio

STATUS = bytes([Command.STATUS])
IDLE_REPLY = bytes([21, 0])  # ready, remote, e-stop released; at index 0


async def open_link(server):
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_for(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything that arrives within ``seconds`` (or until the peer closes)."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(left):
                chunk = await reader.read(1024)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


async def test_normal_reply_and_requests_are_counted(simulator_factory):
    server = await simulator_factory()
    reader, writer = await open_link(server)
    writer.write(STATUS + bytes([Command.MOVE, 4]))
    assert await reader.readexactly(4) == IDLE_REPLY + bytes([server.model.status_byte(), 0])
    assert server.requests_received[Command.STATUS] == 1
    assert server.moves_received == 1
    writer.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (FaultMode.SHORT, IDLE_REPLY[:1]),
        (FaultMode.GARBAGE, b"\xff\xff"),
        (FaultMode.EXTRA, IDLE_REPLY + EXTRA_BYTES),
        (FaultMode.SILENT, b""),
    ],
)
async def test_reply_faults(simulator_factory, mode, expected):
    server = await simulator_factory()
    server.set_fault_mode(mode)
    reader, writer = await open_link(server)
    writer.write(STATUS)
    assert await read_for(reader, 0.3) == expected
    assert not reader.at_eof()  # the link stays up
    assert server.requests_received[Command.STATUS] == 1
    server.set_fault_mode(FaultMode.NONE)
    writer.write(STATUS)
    assert await reader.readexactly(2) == IDLE_REPLY
    writer.close()


async def test_silent_plc_does_not_act_on_a_move(simulator_factory):
    server = await simulator_factory()
    server.set_fault_mode(FaultMode.SILENT)
    reader, writer = await open_link(server)
    writer.write(bytes([Command.MOVE, 5]))
    assert await read_for(reader, 0.2) == b""
    assert server.moves_received == 1 and server.model.moves_started == 0
    writer.close()


async def test_close_mid_reply_sends_one_byte_then_closes(simulator_factory):
    server = await simulator_factory()
    server.set_fault_mode(FaultMode.CLOSE_MID_REPLY)
    reader, writer = await open_link(server)
    writer.write(bytes([Command.MOVE, 5]))
    assert await read_for(reader, 1.0) == bytes([server.model.status_byte()])
    assert reader.at_eof()
    assert server.model.moves_started == 1  # the PLC read the MOVE and acted on it
    writer.close()


async def test_slow_replies_come_after_the_slow_delay(simulator_factory):
    server = await simulator_factory(slow_reply_s=0.4)
    server.set_fault_mode(FaultMode.SLOW)
    reader, writer = await open_link(server)
    writer.write(STATUS)
    assert await read_for(reader, 0.15) == b""
    assert await read_for(reader, 1.0) == IDLE_REPLY
    writer.close()


async def test_refuse_closes_the_link_and_refuses_until_resumed(simulator_factory):
    server = await simulator_factory()
    reader, writer = await open_link(server)
    server.set_fault_mode(FaultMode.REFUSE)
    assert await read_for(reader, 1.0) == b"" and reader.at_eof()
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await open_link(server)
    server.set_fault_mode(FaultMode.NONE)
    reader, writer = await _connect_within(server, 1.0)
    writer.write(STATUS)
    assert await reader.readexactly(2) == IDLE_REPLY
    writer.close()


async def test_flap_goes_down_and_up_by_itself(simulator_factory):
    server = await simulator_factory(flap_period_s=0.2)
    server.set_fault_mode(FaultMode.FLAP)
    reader, writer = await open_link(server)
    writer.write(STATUS)
    assert await reader.readexactly(2) == IDLE_REPLY
    assert await read_for(reader, 1.0) == b"" and reader.at_eof()  # dropped when it goes down
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await open_link(server)
    reader, writer = await _connect_within(server, 1.0)  # ... and it comes back by itself
    writer.write(STATUS)
    assert await reader.readexactly(2) == IDLE_REPLY
    writer.close()
    server.set_fault_mode(FaultMode.NONE)


async def _connect_within(server, seconds: float):
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await open_link(server)
            except ConnectionRefusedError:
                await asyncio.sleep(0.01)


async def test_a_silent_session_is_dropped_after_idle_drop_s(simulator_factory):
    server = await simulator_factory(idle_drop_s=0.3)
    reader, writer = await open_link(server)
    loop = asyncio.get_running_loop()
    opened = loop.time()
    assert await asyncio.wait_for(reader.read(1024), 10) == b""  # closed by the PLC
    assert loop.time() - opened >= 0.29
    assert server.idle_drops == 1
    writer.close()


async def test_a_talking_session_is_kept_and_every_move_is_logged_with_its_session(
    simulator_factory,
):
    # Not single-session: the second session below need not wait for the listener.
    server = await simulator_factory(idle_drop_s=0.3, single_session=False)
    reader, writer = await open_link(server)
    loop = asyncio.get_running_loop()
    until = loop.time() + 0.9  # three idle limits, talking every 50 ms
    while loop.time() < until:
        writer.write(STATUS)
        assert len(await asyncio.wait_for(reader.readexactly(2), 5)) == 2
        await asyncio.sleep(0.05)  # the client's own pace, not a wait for a result
    writer.write(bytes([Command.MOVE, 4]))
    await asyncio.wait_for(reader.readexactly(2), 5)
    peer = f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
    writer.close()
    await writer.wait_closed()
    assert server.idle_drops == 0

    reader, writer = await open_link(server)  # a second session
    writer.write(bytes([Command.MOVE, 7]))
    await asyncio.wait_for(reader.readexactly(2), 5)
    writer.close()
    log = server.move_log
    assert [(m.session, m.argument) for m in log] == [(1, 4), (2, 7)]
    assert log[0].peer == peer and log[1].peer != peer
    assert log[0].at <= log[1].at
