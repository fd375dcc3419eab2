"""Clients that misbehave: never read, never finish the handshake, open and close hundreds
of connections at once, flood commands. The server never crashes, frees what they held,
and other sessions keep being served. Then: shutdown under load loses no command.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import sqlite3
import tracemalloc
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from carousel_gateway.api.ws import Session
from carousel_gateway.app import Gateway
from carousel_gateway.plc.protocol import Command
from tests.integration.conftest import gateway_config
from tests.integration.wsclient import TestClient

BURST = 500


def url(gateway: Any) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


def live(kind: type) -> int:
    """Instances of ``kind`` still alive after a full collection."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)  # not weak proxies


async def settle(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - connections close on their own schedule
            await asyncio.sleep(0.02)


async def served(gateway: Any, client: TestClient) -> None:
    """A well-behaved session still gets answers and its move's broadcasts."""
    status = await client.request({"type": "get_status", "machine_id": "machine_2"})
    assert status["raw_status"] == 21
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def raw_handshake(port: int) -> socket.socket:
    """A client that completes the WebSocket handshake, then never reads nor answers pings."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await reader.readline()).startswith(b"HTTP/1.1 101")
    return writer  # type: ignore[return-value]


async def test_clients_that_never_read_or_never_handshake_are_cut_off(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(
            websocket={
                "host": "127.0.0.1",
                "port": 0,
                "ping_interval_s": 0.2,
                "ping_timeout_s": 0.2,
                "close_timeout_s": 0.2,
            },
            limits={"handshake_timeout_s": 0.3, "max_sessions_per_address": 30},
        )
    )
    port = gateway.websocket.port
    deaf = [await raw_handshake(port) for _ in range(20)]
    mute = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    good = await TestClient.open(url(gateway))
    await good.next()
    assert gateway.websocket.guard.sessions.count == 21
    await served(gateway, good)
    # No pong: closed by the ping timeout. No handshake: closed by the handshake timeout.
    await settle(lambda: gateway.websocket.guard.sessions.count == 1)
    for reader, writer in mute:
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the server hung up
        writer.close()
    for writer in deaf:
        writer.close()
    await served(gateway, good)  # the good session answers its pings: still there
    assert len(gateway.websocket.sessions) == 1
    await good.close()


async def open_and_close(address: str, port: int, index: int) -> str:
    """One connection of the burst: its outcome (welcome, or the refusal's code)."""
    try:
        async with asyncio.timeout(20):
            connection = await connect(f"ws://{address}:{port}", open_timeout=20)
    except InvalidStatus as exc:
        return json.loads(exc.response.body)["code"]
    welcome = json.loads(await connection.recv())
    if index % 2:
        await connection.close()
    else:
        connection.transport.abort()  # gone without a close frame
    return welcome["type"]


async def burst(gateway: Any) -> list[str]:
    port = gateway.websocket.port
    return await asyncio.gather(*(open_and_close("127.0.0.1", port, i) for i in range(BURST)))


async def test_500_connections_in_a_burst_leave_nothing_behind(gateway_factory):
    gateway = await gateway_factory(gateway_config(limits={"max_sessions_per_address": BURST}))
    good = await TestClient.open(url(gateway))
    await good.next()
    websocket = gateway.websocket
    assert set(await burst(gateway)) == {"welcome"}  # the warm-up (caches, buffers)
    await settle(lambda: websocket.guard.sessions.count == 1)
    tracemalloc.start()
    try:
        await settle(lambda: len(websocket.sessions) == 1)
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(2):
            outcomes = await burst(gateway)
            assert set(outcomes) == {"welcome"}
            await served(gateway, good)
        await settle(lambda: websocket.guard.sessions.count == 1 and len(websocket.sessions) == 1)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Back to the baseline: what 1,000 sessions held (several MiB at the peak) is freed.
    assert peak - baseline > 2 * 2**20
    assert current - baseline < 1 * 2**20, (baseline, current, peak)
    # Nothing of theirs is left but the good session (closing ones finish on their own).
    await settle(lambda: live(Session) == 1 and live(ServerConnection) == 1)
    assert not websocket.guard.sessions.by_address.keys() - {"127.0.0.1"}
    await served(gateway, good)
    await good.close()


async def test_a_burst_over_the_address_limit_is_refused_with_503(gateway_factory):
    gateway = await gateway_factory()  # default limits: 100 sessions per address
    outcomes = await burst(gateway)
    assert set(outcomes) <= {"welcome", "ADDRESS_SESSION_LIMIT"}
    assert 100 <= outcomes.count("welcome") < BURST
    await settle(lambda: gateway.websocket.guard.sessions.count == 0)
    client = await TestClient.open(url(gateway))
    await client.next()
    await served(gateway, client)
    await client.close()


async def test_a_command_flood_reaches_neither_the_plc_nor_the_journal(gateway_factory):
    gateway = await gateway_factory()  # default limits
    flood = await TestClient.open(url(gateway))
    await flood.next()
    bystander = await TestClient.open(url(gateway))
    await bystander.next()
    codes: dict[str, int] = {}
    frame = {"type": "send_command", "machine_id": "machine_1", "command": {"command": 0}}
    with pytest.raises(ConnectionClosed):
        for _ in range(5000):
            await flood.send(frame)
            await asyncio.sleep(0)
        while True:
            reply = await flood.next()
            key = reply.get("code", reply["type"])
            codes[key] = codes.get(key, 0) + 1
    assert flood.connection.close_code == 1008
    assert set(codes) <= {"command_result", "BUSY", "RATE_LIMITED", "MACHINE_RATE_LIMITED"}
    sim = gateway.simulators["machine_1"]
    # At most the machine's burst of commands got through to the PLC and the journal.
    limits = gateway.config.limits
    await gateway.journal.flush()
    rows = await gateway.journal.history("machine_1", kinds=["command", "command_refused"])
    assert len(rows.rows) <= limits.command_burst + 2
    assert sim.requests_received[Command.MOVE] == 0
    await served(gateway, bystander)
    move = await bystander.request(
        {
            "type": "send_command",
            "machine_id": "machine_2",
            "command": {"command": 1, "argument": 5},
        }
    )
    assert move["type"] == "command_result"
    await bystander.close()


# -- shutdown under load -----------------------------------------------------------------------


async def test_shutdown_under_load_loses_no_command_and_closes_with_1001(tmp_path):
    database = tmp_path / "journal.db"
    config = gateway_config(
        journal={"path": str(database)},
        limits={
            "messages_per_second": 1_000_000,
            "message_burst": 1_000_000,
            "commands_per_machine_per_second": 1_000_000,
            "command_burst": 1_000_000,
            "http_writes_per_second": 1_000_000,
            "http_write_burst": 1_000_000,
        },
    )
    gateway = Gateway(config)
    await gateway.start()
    received: set[int] = set()
    close_codes: list[int | None] = []
    running = asyncio.Event()

    async def ws_stream(machine_id: str, offset: int) -> None:
        client = await TestClient.open(url(gateway))
        await client.next()
        sent = 0
        try:
            while True:
                sent += 1
                command = (
                    {"command": 1, "argument": 1 + (offset + sent) % 30}
                    if sent % 4 == 0
                    else {"command": 0}
                )
                await client.send(
                    {"type": "send_command", "machine_id": machine_id, "command": command}
                )
                while True:
                    reply = await client.next(timeout=10)
                    if reply["type"] == "command_result":
                        received.add(reply["data"]["command_id"])
                        break
                    if reply["type"] == "error":
                        break
                if len(received) > 30:
                    running.set()
        except ConnectionClosed:
            close_codes.append(client.connection.close_code)

    async def rest_stream(machine_id: str) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
            try:
                while True:
                    response = await http.post(
                        f"/v1/machines/{machine_id}/command", json={"command": 0}
                    )
                    if response.status_code == 200:
                        received.add(response.json()["data"]["command_id"])
            except httpx.HTTPError:
                pass

    streams = [
        asyncio.create_task(ws_stream(machine_id, offset))
        for offset in range(3)
        for machine_id in ("machine_1", "machine_2")
    ] + [asyncio.create_task(rest_stream("machine_2"))]
    async with asyncio.timeout(20):
        await running.wait()
    moves_sent = {i: s.moves_received for i, s in gateway.simulators.items()}
    await gateway.stop()
    async with asyncio.timeout(20):
        await asyncio.gather(*streams)
    assert close_codes == [1001] * 6
    assert gateway.journal.dropped == 0
    with sqlite3.connect(database) as db:
        journalled = {
            row[0] for row in db.execute("SELECT command_id FROM journal WHERE kind = 'command'")
        }
        moves_journalled = dict(
            db.execute(
                "SELECT machine_id, COUNT(*) FROM journal"
                " WHERE kind = 'command' AND command = 1 AND skipped = 0 GROUP BY machine_id"
            ).fetchall()
        )
        unknown_outcomes = db.execute(
            "SELECT COUNT(*) FROM journal WHERE kind = 'command_refused'"
            " AND code IN ('PLC_TIMEOUT', 'CONNECTION_ERROR')"
        ).fetchone()[0]
    assert received, "no command went through before the shutdown"
    assert not received - journalled, "results received but not journalled"
    # Every MOVE that reached a PLC, up to the very end, has its journal row.
    for machine_id, server in gateway.simulators.items():
        assert server.moves_received >= moves_sent[machine_id]
        assert server.moves_received == moves_journalled.get(machine_id, 0)
    assert unknown_outcomes == 0
