"""A site with several gateways: three `carousel-gateway serve` processes (edge nodes
cell_a, cell_b, cell_c, ten simulated carousels each) on one mosquitto; one independent
consumer sees all thirty devices and their changes in one namespace."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.test_serve_process import free_port, start_gateway, wait_for_line
from tests.mqtt.conftest import metrics_of

pytestmark = pytest.mark.asyncio

CELLS = ("cell_a", "cell_b", "cell_c")
MACHINES = 10


def write_config(tmp_path: Path, cell: str, broker_port: int, http_port: int) -> Path:
    machines = "".join(
        f"""
[[machines]]
id = "machine_{i}"
name = "Carrusel {i}"
kind = "simulator"
poll_idle_s = 0.2

[machines.simulator]
seconds_per_position = 0.02
start_position = {i}
"""
        for i in range(1, MACHINES + 1)
    )
    path = tmp_path / f"{cell}.toml"
    path.write_text(
        f"""
[websocket]
host = "127.0.0.1"
port = {free_port()}

[http]
host = "127.0.0.1"
port = {http_port}

[journal]
path = "{tmp_path / f"{cell}.db"}"

[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker_port}
group_id = "site"
edge_node_id = "{cell}"
{machines}""",
        encoding="utf-8",
    )
    return path


async def drain(process: asyncio.subprocess.Process) -> None:
    """Read a gateway's log to the end (a full pipe would stall it)."""
    assert process.stdout is not None
    while await process.stdout.readline():
        pass


async def test_three_edge_nodes_thirty_devices_one_consumer(tmp_path, broker, consumer_factory):
    consumer = await consumer_factory("spBv1.0/site/#")
    ports = {cell: free_port() for cell in CELLS}
    processes = {}
    drains = []
    try:
        for cell in CELLS:
            config = write_config(tmp_path, cell, broker.port, ports[cell])
            processes[cell] = process = await start_gateway(config)
            await wait_for_line(process, "MQTT connected")
            drains.append(asyncio.ensure_future(drain(process)))
        seen: set[tuple[str, str]] = set()

        def birth(message):
            if message.get("kind") == "DBIRTH":
                seen.add((message["edge"], message["device"]))
            return len(seen) == len(CELLS) * MACHINES

        await consumer.wait_for(birth, timeout=60)
        assert {edge for edge, _device in seen} == set(CELLS)
        nbirths = [m for m in consumer.messages if m.get("kind") == "NBIRTH"]
        assert {m["edge"] for m in nbirths} == set(CELLS)

        # A move on each gateway (REST): the consumer sees each arrive in its own namespace.
        start = consumer.mark()
        async with httpx.AsyncClient() as http:
            for cell in CELLS:
                reply = await http.post(
                    f"http://127.0.0.1:{ports[cell]}/v1/machines/machine_5/move",
                    json={"position": 20},
                )
                assert reply.status_code == 200, reply.text
        arrived: set[str] = set()

        def arrival(message):
            if (
                message.get("kind") == "DDATA"
                and message["device"] == "machine_5"
                and metrics_of(message).get("Move/State") == "arrived"
            ):
                arrived.add(message["edge"])
            return arrived == set(CELLS)

        await consumer.wait_for(arrival, start=start, timeout=30)
        moved = {
            (m["edge"], m["device"]) for m in consumer.messages[start:] if m.get("kind") == "DDATA"
        }
        assert moved == {(cell, "machine_5") for cell in CELLS}
        assert consumer.problems() == []
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        for task in drains:
            task.cancel()
    gone: set[str] = set()

    def death(message):
        if message.get("kind") == "NDEATH":
            gone.add(message["edge"])
        return gone == set(CELLS)

    await consumer.wait_for(death)  # each node said goodbye
