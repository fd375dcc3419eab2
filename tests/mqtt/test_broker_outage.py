"""A broker that is down, or goes away, never holds up the gateway: it starts, serves REST
and moves carousels, and joins the broker when it is there (the next bdSeq each time)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from carousel_gateway.api.mqtt.status import MqttLinkState
from tests.integration.conftest import gateway_config
from tests.mqtt.conftest import Broker, free_port, metrics_of, mqtt_settings, start_consumer

pytestmark = pytest.mark.asyncio


async def test_no_broker_at_start_then_one_then_a_restart(tmp_path, gateway_factory):
    broker = Broker(tmp_path, free_port())  # not started yet: nothing listens there
    gateway = await gateway_factory(gateway_config(1, mqtt=mqtt_settings(broker)))
    link = gateway.mqtt
    async with asyncio.timeout(15):
        await link.wait_until(lambda s: s.last_error is not None)
    assert link.status.state is MqttLinkState.CONNECTING
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        health = (await http.get("/v1/health")).json()["data"]
        assert health["status"] == "healthy"  # the machines are what health judges
        assert health["mqtt"]["state"] == "connecting" and health["mqtt"]["last_error"]
        moved = await http.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 9})
        assert moved.status_code == 200, moved.text

    await broker.start()
    consumer = await start_consumer(broker.url)
    try:
        # The consumer may subscribe after the births went out: it asks for them again, as
        # a host that joins late does.
        async with asyncio.timeout(15):
            await link.wait_until(lambda s: s.state is MqttLinkState.ONLINE)
        await consumer.publish(
            "spBv1.0/site/NCMD/cell_a",
            [{"name": "Node Control/Rebirth", "type": "Boolean", "value": True}],
        )
        dbirth = await consumer.wait_for(lambda m: m.get("kind") == "DBIRTH")
        assert metrics_of(dbirth)["Position"] == 9
        first = link.status.bd_seq

        start = consumer.mark()
        await broker.stop()  # the broker goes away...
        async with asyncio.timeout(15):
            await link.wait_until(lambda s: s.state is MqttLinkState.CONNECTING)
        await broker.start()  # ...and comes back on the same port
        nbirth = await consumer.wait_for(lambda m: m.get("kind") == "NBIRTH", start=start)
        # Each CONNECT carries the next bdSeq (attempts while the broker was away too).
        assert metrics_of(nbirth)["bdSeq"] == link.status.bd_seq != first
        await consumer.wait_for(lambda m: m.get("kind") == "DBIRTH", start=start)
        assert link.status.connects == 2
    finally:
        await consumer.close()
        await broker.stop()
