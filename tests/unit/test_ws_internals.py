"""The ``websockets`` internals ``api/ws_internals.py`` relies on, checked on real connections.

These tests are meant to fail loudly on a ``websockets`` release that renames, retypes or
changes the behaviour of a private attribute we use: each failure says which one. When one
fails, fix ``ws_internals.py`` (nowhere else uses the internals), then widen
``VERIFIED_VERSIONS`` and the pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import Protocol, State

from carousel_gateway.api import ws_internals
from carousel_gateway.api.outbox import text_frame

Handler = Callable[[ServerConnection], Awaitable[None]]


class _Target:
    """A session as the outbox hands it over: a connection, and whether it still counts."""

    def __init__(self, connection: ServerConnection, *, alive: bool = True) -> None:
        self.connection = connection
        self.alive = alive


def _write(connection: ServerConnection, payload: bytes, *, limit: int = 1 << 30) -> int:
    """Write one frame to one connection through the outbox's hot loop; how many written."""
    written, slow = ws_internals.write_text_frames(
        [_Target(connection)], text_frame(payload), payload, skip=(), limit=limit
    )
    assert not slow
    return written


def _minor(version: str) -> tuple[int, int]:
    major, minor, *_ = version.split(".")
    return int(major), int(minor)


async def _loopback(
    handler: Handler, *, compression: str | None = None
) -> AsyncIterator[tuple[ServerConnection, ClientConnection]]:
    """A real server and client over TCP on 127.0.0.1; yields both ends once open."""
    opened: asyncio.Queue[ServerConnection] = asyncio.Queue()
    finished = asyncio.Event()

    async def serve_one(connection: ServerConnection) -> None:
        opened.put_nowait(connection)
        try:
            await handler(connection)
        finally:
            await finished.wait()

    async with serve(serve_one, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=compression) as client:
            async with asyncio.timeout(5):
                server_end = await opened.get()
            try:
                yield server_end, client
            finally:
                finished.set()


async def _idle(connection: ServerConnection) -> None:
    await connection.wait_closed()


@pytest.fixture
async def pair():
    async for ends in _loopback(_idle):
        yield ends


@pytest.fixture
async def compressed_pair():
    async for ends in _loopback(_idle, compression="deflate"):
        yield ends


def test_installed_websockets_is_a_verified_version():
    installed = websockets.version.version
    verified = {_minor(v) for v in ws_internals.VERIFIED_VERSIONS}
    assert _minor(installed) in verified, (
        f"websockets {installed} was not checked against api/ws_internals.py "
        f"(verified: {ws_internals.VERIFIED_VERSIONS}); run these tests with it, then add it"
    )


async def test_the_private_attributes_exist_with_their_types(pair):
    server_end, _ = pair
    missing = [
        name
        for name in ("protocol", "transport", "send_in_progress", "connection_lost_waiter")
        if not hasattr(server_end, name)
    ]
    assert not missing, f"websockets connection lost private attributes: {missing}"
    protocol = server_end.protocol
    assert isinstance(protocol, Protocol), f"connection.protocol is {type(protocol)}"
    assert protocol.state is State.OPEN, f"connection.protocol.state is {protocol.state!r}"
    assert isinstance(protocol.extensions, list), "protocol.extensions is no longer a list"
    assert protocol.extensions == []
    assert server_end.send_in_progress is None, "send_in_progress is not None when idle"
    transport = server_end.transport
    assert isinstance(transport, asyncio.Transport), f"connection.transport is {type(transport)}"
    for method in ("write", "abort", "get_write_buffer_size"):
        assert callable(getattr(transport, method, None)), f"transport.{method} is gone"
    waiter = server_end.connection_lost_waiter
    assert isinstance(waiter, asyncio.Future), f"connection_lost_waiter is {type(waiter)}"
    assert not waiter.done()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
async def test_a_frame_written_is_received_intact_by_a_real_client(pair, size):
    server_end, client = pair
    payload = ("é" * (size // 2)).encode() + b"x" * (size % 2)  # UTF-8, ``size`` bytes
    assert _write(server_end, payload) == 1
    async with asyncio.timeout(5):
        assert await client.recv(decode=False) == payload


async def test_the_protocol_is_undisturbed_after_a_direct_write(pair):
    """What websockets sends itself (a public send, a ping) still works after ours."""
    server_end, client = pair
    _write(server_end, b"ours")
    await server_end.send("theirs")
    async with asyncio.timeout(5):
        assert await client.recv() == "ours"
        assert await client.recv() == "theirs"
        await (await server_end.ping())
        await client.send("back")
        assert await server_end.recv() == "back"


async def test_a_compressed_connection_gets_the_payload_framed_for_it(compressed_pair):
    server_end, client = compressed_pair
    assert server_end.protocol.extensions, "permessage-deflate was not negotiated"
    payload = b'{"type":"status_broadcast"}' * 100
    _write(server_end, payload)
    async with asyncio.timeout(5):
        assert await client.recv(decode=False) == payload


async def test_a_closed_connection_is_skipped(pair):
    server_end, client = pair
    async with asyncio.timeout(5):
        await client.close()
        await server_end.wait_closed()
    assert server_end.protocol.state is State.CLOSED
    assert _write(server_end, b"late") == 0


async def test_skipped_and_gone_sessions_get_nothing_and_a_full_buffer_is_reported(pair):
    server_end, client = pair
    gone, skipped, reading = (
        _Target(server_end, alive=False),
        _Target(server_end),
        _Target(server_end),
    )
    written, slow = ws_internals.write_text_frames(
        [gone, skipped, reading], text_frame(b"one"), b"one", skip={skipped}, limit=-1
    )
    assert (written, slow) == (1, [reading])  # any buffered byte is over a limit of -1
    async with asyncio.timeout(5):
        assert await client.recv() == "one"


async def test_abort_drops_the_connection_and_connection_lost_fires(pair):
    server_end, client = pair
    lost = asyncio.Event()
    ws_internals.on_connection_lost(server_end, lost.set)
    ws_internals.abort(server_end)
    async with asyncio.timeout(5):
        await lost.wait()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is None, "an abort sends no close frame"
    assert server_end.state is State.CLOSED


async def test_connection_lost_fires_on_a_clean_close_too(pair):
    server_end, client = pair
    lost = asyncio.Event()
    ws_internals.on_connection_lost(server_end, lost.set)
    await client.close()
    async with asyncio.timeout(5):
        await lost.wait()
