"""A primary host application (Sparkplug 3.0 STATE, JSON, retained): births wait for it
online; its offline takes the node off the broker (NDEATH) until it is back, with the next
bdSeq; the machines go on meanwhile."""

from __future__ import annotations

import asyncio
import json

import pytest

from carousel_gateway.api.mqtt.status import MqttLinkState
from tests.integration.conftest import gateway_config, wait_until
from tests.mqtt.conftest import metrics_of, mqtt_settings

pytestmark = pytest.mark.asyncio

STATE = "spBv1.0/STATE/scada"


def kind(name: str):
    return lambda m: m.get("kind") == name


def state(online: bool, timestamp: int) -> str:
    return json.dumps({"online": online, "timestamp": timestamp})


async def test_births_wait_for_the_primary_host_and_its_offline_takes_the_node_off(
    broker, consumer, gateway_factory
):
    settings = mqtt_settings(broker, primary_host_id="scada", backoff_initial_s=0.05)
    gateway = await gateway_factory(gateway_config(1, mqtt=settings))
    link = gateway.mqtt
    async with asyncio.timeout(15):
        await link.wait_until(lambda s: s.state is MqttLinkState.WAITING_FOR_HOST)
    assert not [m for m in consumer.messages if m.get("kind") in ("NBIRTH", "DBIRTH")]

    await consumer.raw(STATE, state(True, 1000), retain=True, qos=1)
    nbirth = await consumer.wait_for(kind("NBIRTH"))
    bd_seq = metrics_of(nbirth)["bdSeq"]
    await consumer.wait_for(kind("DBIRTH"))
    assert link.status.state is MqttLinkState.ONLINE

    start = consumer.mark()
    await consumer.raw(STATE, state(False, 2000), retain=True, qos=1)
    ndeath = await consumer.wait_for(kind("NDEATH"), start=start)
    assert metrics_of(ndeath)["bdSeq"] == bd_seq
    # Back on the broker with a new connection, waiting for the host (its retained
    # offline says so); the machines never noticed.
    async with asyncio.timeout(15):
        await link.wait_until(
            lambda s: s.state is MqttLinkState.WAITING_FOR_HOST and s.bd_seq != bd_seq
        )
    machine = gateway.fleet.get("machine_1")
    target = 8 if machine.snapshot.position != 8 else 9
    executed = await machine.execute(1, target)
    await executed.outcome
    await wait_until(gateway.fleet.bus, lambda: machine.snapshot.position == target)
    assert not [m for m in consumer.messages[start:] if m.get("kind") in ("NBIRTH", "DDATA")]

    await consumer.raw(STATE, state(True, 3000), retain=True, qos=1)
    again = await consumer.wait_for(kind("NBIRTH"), start=start)
    assert metrics_of(again)["bdSeq"] == (bd_seq + 1) % 256
    dbirth = await consumer.wait_for(kind("DBIRTH"), start=start)
    assert metrics_of(dbirth)["Position"] == target
    assert consumer.problems() == []
