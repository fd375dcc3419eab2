"""The failover tests' own tools, tested on real sockets and a real ``simulate`` process:
the simulators' event log (another process can follow every session and MOVE) and the
partitioning proxy (silent both ways, nothing closed, held bytes delivered on heal)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .processes import free_port_run, wait_for_events
from .proxy import TcpProxy

#: The gateway's command line, from the same virtualenv as the tests.
CLI = str(Path(sys.executable).parent / "carousel-gateway")

# A window in which bytes held by a partition must NOT show up. Only a failure shortens
# the test (bytes arriving); a loaded machine can only make the check weaker, not flaky.
QUIET_WINDOW_S = 0.3


def simulate(port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLI, "simulate", "--machines", "2",
         "--port", str(port), "--host", "127.0.0.1", "--seconds-per-position", "0.01",
         "--move-log", str(log), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def of(events: list[dict[str, object]], kind: str, port: int) -> list[dict[str, object]]:
    return [e for e in events if e["event"] == kind and e["port"] == port]


async def test_the_move_log_shows_sessions_and_moves_to_another_process(tmp_path: Path) -> None:
    port = free_port_run(2)
    log = tmp_path / "moves.jsonl"
    process = simulate(port, log, "--release-time", "0.2", "--idle-drop", "0.5")
    try:
        await wait_for_events(
            log, lambda ev: len([e for e in ev if e["event"] == "listening"]) == 2
        )

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        local = writer.get_extra_info("sockname")
        writer.write(bytes((0x01, 5)))
        assert len(await asyncio.wait_for(reader.readexactly(2), 10)) == 2
        # Single session: a second client is refused while the first holds the PLC.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()

        # Machine 2: a client that says nothing is dropped after idle_drop_s.
        _r2, w2 = await asyncio.open_connection("127.0.0.1", port + 1)
        events = await wait_for_events(
            log,
            lambda ev: (
                bool(of(ev, "session_closed", port)) and bool(of(ev, "session_closed", port + 1))
            ),
        )
        w2.close()
        opened, move, closed = (
            of(events, k, port) for k in ("session_opened", "move", "session_closed")
        )
        assert [e["session"] for e in opened] == [1]
        assert move == [
            {**move[0], "machine": 1, "session": 1, "argument": 5, "peer": f"{local[0]}:{local[1]}"}
        ]
        assert closed[0]["session"] == 1 and closed[0]["idle_dropped"] is False
        assert opened[0]["at"] <= move[0]["at"] <= closed[0]["at"]
        assert of(events, "session_closed", port + 1)[0]["idle_dropped"] is True
        assert of(events, "session_opened", port + 1)[0]["machine"] == 2
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode(errors="replace")


async def test_simulate_refuses_a_move_log_it_cannot_open(tmp_path: Path) -> None:
    process = simulate(free_port_run(2), tmp_path / "missing" / "moves.jsonl")
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert b"cannot open the move log" in err


@pytest.fixture
async def echo() -> AsyncIterator[tuple[int, list[str], asyncio.Queue[bytes]]]:
    """An echo server that records each peer and everything it receives."""
    peers: list[str] = []
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        while data := await reader.read(1024):
            received.put_nowait(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], peers, received
    server.close()


@pytest.fixture
async def proxy(echo) -> AsyncIterator[TcpProxy]:
    port, _peers, _received = echo
    tcp_proxy = TcpProxy(port, source_host="127.0.0.2")
    await tcp_proxy.start()
    yield tcp_proxy
    await tcp_proxy.close()


async def test_the_proxy_forwards_from_its_own_source_address(echo, proxy: TcpProxy) -> None:
    _port, peers, _received = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
    assert peers == ["127.0.0.2"]
    writer.close()


async def test_a_partition_is_silent_both_ways_and_heal_delivers_held_bytes(
    echo, proxy: TcpProxy
) -> None:
    _port, _peers, received = echo
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), 10) == b"a"
    assert (await received.get()) == b"a"

    proxy.partition()
    writer.write(b"bc")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(received.get(), QUIET_WINDOW_S)  # nothing reaches the target
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), QUIET_WINDOW_S)  # nor comes back: no EOF either
    assert not writer.is_closing() and proxy.open_connections == 1

    proxy.heal()
    assert await asyncio.wait_for(reader.readexactly(2), 10) == b"bc"
    writer.close()


async def test_a_connection_made_during_a_partition_reaches_the_target_only_after_heal(
    echo, proxy: TcpProxy
) -> None:
    _port, peers, received = echo
    proxy.partition()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(received.get(), QUIET_WINDOW_S)
    assert peers == []  # the single-session target was never touched
    proxy.heal()
    assert await asyncio.wait_for(reader.readexactly(1), 10) == b"x"
    assert peers == ["127.0.0.2"]
    writer.close()


async def test_close_ends_every_connection(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 10) == b"x"
    await proxy.close()
    with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
        await asyncio.wait_for(reader.readexactly(1), 10)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.close()
