"""The node's life on a real broker: kill -9 → the broker's NDEATH (the Will); restart →
NBIRTH with bdSeq + 1 (persisted in the journal); SIGTERM → NDEATH first; a rebirth
request; a PLC link down → DDEATH, back → DBIRTH."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from carousel_gateway.sim.server import FaultMode, LinkAction
from tests.integration.conftest import gateway_config
from tests.integration.test_serve_process import free_port, start_gateway, wait_for_line
from tests.mqtt.conftest import metrics_of, mqtt_settings

pytestmark = pytest.mark.asyncio

KEEPALIVE_S = 5


def kind(name: str, device: str | None = None):
    return lambda m: m.get("kind") == name and (device is None or m.get("device") == device)


def write_config(tmp_path: Path, broker_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[websocket]
host = "127.0.0.1"
port = {free_port()}

[http]
host = "127.0.0.1"
port = {free_port()}

[journal]
path = "{tmp_path / "journal.db"}"

[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker_port}
group_id = "site"
edge_node_id = "cell_a"
keepalive_s = {KEEPALIVE_S}

[[machines]]
id = "machine_1"
name = "Carrusel Principal"
kind = "simulator"
poll_idle_s = 0.05

[machines.simulator]
seconds_per_position = 0.02
""",
        encoding="utf-8",
    )
    return path


async def test_kill_9_leaves_the_will_restart_counts_bd_seq_sigterm_says_ndeath_first(
    tmp_path, broker, consumer
):
    config = write_config(tmp_path, broker.port)
    first = await start_gateway(config)
    try:
        await wait_for_line(first, "MQTT connected")
        nbirth = await consumer.wait_for(kind("NBIRTH"))
        bd_seq = metrics_of(nbirth)["bdSeq"]
        await consumer.wait_for(kind("DBIRTH", "machine_1"))
        start = consumer.mark()
        first.kill()  # SIGKILL: no goodbye; the broker sends the Will
        await first.wait()
        # The broker notices within 1.5 × keepalive (its measure; a margin for a loaded
        # machine here, the number itself is the broker's business).
        will = await consumer.wait_for(kind("NDEATH"), timeout=4 * KEEPALIVE_S, start=start)
        assert metrics_of(will)["bdSeq"] == bd_seq
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()

    second = await start_gateway(config)
    try:
        start = consumer.mark()
        await wait_for_line(second, "MQTT connected")
        nbirth = await consumer.wait_for(kind("NBIRTH"), start=start)
        assert metrics_of(nbirth)["bdSeq"] == (bd_seq + 1) % 256
        await consumer.wait_for(kind("DBIRTH", "machine_1"), start=start)
        start = consumer.mark()
        second.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await second.wait() == 0
        ndeath = await consumer.wait_for(kind("NDEATH"), start=start)
        assert metrics_of(ndeath)["bdSeq"] == (bd_seq + 1) % 256
        # The NDEATH is the node's last word: no DDATA of links closing after it.
        after = [m["kind"] for m in consumer.messages[start:] if "kind" in m]
        assert after == ["NDEATH"]
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
    assert consumer.problems() == []


async def test_a_rebirth_request_is_honoured(broker, consumer, gateway_factory):
    await gateway_factory(gateway_config(2, mqtt=mqtt_settings(broker)))
    nbirth = await consumer.wait_for(kind("NBIRTH"))
    for machine_id in ("machine_1", "machine_2"):
        await consumer.wait_for(kind("DBIRTH", machine_id))
    start = consumer.mark()
    await consumer.publish(
        "spBv1.0/site/NCMD/cell_a",
        [{"name": "Node Control/Rebirth", "type": "Boolean", "value": True}],
    )
    again = await consumer.wait_for(kind("NBIRTH"), start=start)
    assert again["payload"]["seq"] == 0
    assert metrics_of(again)["bdSeq"] == metrics_of(nbirth)["bdSeq"]  # same connection
    for machine_id in ("machine_1", "machine_2"):
        await consumer.wait_for(kind("DBIRTH", machine_id), start=start)
    assert consumer.problems() == []


async def test_a_link_down_is_a_ddeath_and_back_a_dbirth(broker, consumer, gateway_factory):
    gateway = await gateway_factory(gateway_config(2, mqtt=mqtt_settings(broker)))
    for machine_id in ("machine_1", "machine_2"):
        await consumer.wait_for(kind("DBIRTH", machine_id))
    simulator: Any = gateway.simulators["machine_1"]
    start = consumer.mark()
    simulator.set_fault_mode(FaultMode.REFUSE)  # nothing listens any more...
    simulator.link(LinkAction.DROP)  # ...and the link in use drops
    down = await consumer.wait_for(
        lambda m: (
            m.get("kind") == "DDATA"
            and m["device"] == "machine_1"
            and metrics_of(m).get("Link/State") in ("disconnected", "error")
        ),
        start=start,
    )
    assert "Link/Since" in metrics_of(down)
    await consumer.wait_for(kind("DDEATH", "machine_1"), start=start)  # after device_death_s
    assert not [m for m in consumer.messages[start:] if m.get("device") == "machine_2"]
    start = consumer.mark()
    simulator.set_fault_mode(FaultMode.NONE)
    rebirth = await consumer.wait_for(kind("DBIRTH", "machine_1"), start=start)
    values = metrics_of(rebirth)
    assert values["Link/State"] == "connected"
    assert values["Counters/Disconnections"] >= 1
    assert consumer.problems() == []
