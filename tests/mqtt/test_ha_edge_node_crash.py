"""A crashed active (kill -9 of a `carousel-gateway serve` process of a cell): the broker
sends its Will, an NDEATH with the dead instance's own bdSeq (at once here: the kernel
closes a killed process's socket; a dead host or a cut network takes ~1.5 × keepalive), and
the standby takes the lease and is born with the next bdSeq and ``Owner/Epoch`` + 1. A host
tells the two apart by bdSeq, whatever their order (Eclipse Tahu's decoder reads them)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from carousel_gateway.sim.carousel import CarouselModel
from carousel_gateway.sim.server import SimulatorServer, SimulatorSettings
from tests.integration.conftest import FAST_SECONDS_PER_POSITION
from tests.integration.test_serve_process import free_port, start_gateway, wait_for_line
from tests.mqtt.conftest import Broker, metrics_of

pytestmark = pytest.mark.asyncio

KEEPALIVE_S = 5  # the smallest allowed: bounds the wait for the Will either way


def write_config(tmp_path: Path, instance: str, url: str, broker: Broker, plc_port: int) -> Path:
    path = tmp_path / f"{instance}.toml"
    path.write_text(
        f"""
[websocket]
host = "127.0.0.1"
port = {free_port()}

[http]
host = "127.0.0.1"
port = {free_port()}

[journal]
url = "{url}"

[ha]
enabled = true
cell = "cell_crash"
instance = "{instance}"
ttl_s = 1.5
renew_s = 0.3
margin_s = 0.3

[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker.port}
group_id = "site"
edge_node_id = "cell_a"
keepalive_s = {KEEPALIVE_S}
backoff_initial_s = 0.05
backoff_max_s = 0.5

[[machines]]
id = "m1"
name = "M1"
host = "127.0.0.1"
port = {plc_port}
positions = 30
poll_idle_s = 0.05
connect_timeout_s = 0.5
backoff_initial_s = 0.02
backoff_max_s = 0.2
""",
        encoding="utf-8",
    )
    return path


async def drain(process: asyncio.subprocess.Process) -> None:
    """Read a gateway's log to the end (a full pipe would stall it)."""
    assert process.stdout is not None
    while await process.stdout.readline():
        pass


@pytest.fixture
async def plc() -> AsyncIterator[SimulatorServer]:
    """A single-session PLC that drops a silent session (so the new active gets in)."""
    sim = SimulatorServer(
        CarouselModel(30, FAST_SECONDS_PER_POSITION),
        settings=SimulatorSettings(release_time_s=0.3, idle_drop_s=1.0),
    )
    await sim.start()
    yield sim
    await sim.stop()


async def test_a_killed_active_s_will_carries_its_own_bdseq_the_new_active_the_next(
    tmp_path: Path, postgres_server: Any, broker: Broker, consumer: Any, plc: SimulatorServer
) -> None:
    url = postgres_server.url_for_new_schema()
    processes: list[asyncio.subprocess.Process] = []
    drains: list[asyncio.Future[None]] = []
    try:
        a = await start_gateway(write_config(tmp_path, "gw-a", url, broker, plc.port))
        processes.append(a)
        await wait_for_line(a, "MQTT connected")
        drains.append(asyncio.ensure_future(drain(a)))
        nbirth_a = await consumer.wait_for(lambda m: m.get("kind") == "NBIRTH")
        node_a = metrics_of(nbirth_a)
        assert node_a["Owner/Instance"] == "gw-a"
        b = await start_gateway(write_config(tmp_path, "gw-b", url, broker, plc.port))
        processes.append(b)
        await wait_for_line(b, "standby of cell_crash")
        drains.append(asyncio.ensure_future(drain(b)))

        start = consumer.mark()
        a.send_signal(signal.SIGKILL)
        await a.wait()
        nbirth_b = await consumer.wait_for(
            lambda m: m.get("kind") == "NBIRTH", start=start, timeout=20
        )
        node_b = metrics_of(nbirth_b)
        assert node_b["Owner/Instance"] == "gw-b"
        assert node_b["Owner/Epoch"] == node_a["Owner/Epoch"] + 1
        assert node_b["bdSeq"] == (node_a["bdSeq"] + 1) % 256
        await consumer.wait_for(
            lambda m: m.get("kind") == "DBIRTH" and m["device"] == "m1", start=start, timeout=20
        )
        will = await consumer.wait_for(
            lambda m: m.get("kind") == "NDEATH", start=start, timeout=3 * KEEPALIVE_S
        )
        # The dead instance's Will, never taken for a death of the node gw-b is now: a
        # host that matches bdSeq (Sparkplug 3.0) keeps gw-b's node online whatever the order.
        assert metrics_of(will)["bdSeq"] == node_a["bdSeq"] != node_b["bdSeq"]
        kinds = [
            m["kind"] for m in consumer.messages[start:] if m.get("kind") in ("NBIRTH", "NDEATH")
        ]
        assert kinds.count("NDEATH") == 1 and kinds.count("NBIRTH") == 1
        assert consumer.problems() == []
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        for task in drains:
            task.cancel()
