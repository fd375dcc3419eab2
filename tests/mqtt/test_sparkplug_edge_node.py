"""The gateway as a Sparkplug B edge node on a real mosquitto, read by an independent
consumer (Eclipse Tahu's decoder in Node): births, change-only DDATA, deaths, health."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import gateway_config
from tests.mqtt.conftest import metrics_of, mqtt_settings

pytestmark = pytest.mark.asyncio


def kind(name, device=None):
    return lambda m: m.get("kind") == name and (device is None or m.get("device") == device)


async def test_births_then_change_only_ddata_then_ndeath_first_on_a_graceful_stop(
    broker, consumer, gateway_factory
):
    gateway = await gateway_factory(gateway_config(2, mqtt=mqtt_settings(broker)))
    nbirth = await consumer.wait_for(kind("NBIRTH"))
    assert nbirth["topic"] == "spBv1.0/site/NBIRTH/cell_a"
    node = metrics_of(nbirth)
    assert node["Node Control/Rebirth"] is False
    assert node["Properties/Devices"] == 2
    bd_seq = node["bdSeq"]
    births = {}
    for machine_id in ("machine_1", "machine_2"):
        births[machine_id] = metrics_of(await consumer.wait_for(kind("DBIRTH", machine_id)))
    first = births["machine_1"]
    assert first["Link/State"] == "connected"
    assert first["Move/State"] == "idle"
    assert first["Position"] == gateway.fleet.get("machine_1").snapshot.position
    assert first["RawStatus"] == gateway.fleet.get("machine_1").snapshot.raw_status
    assert first["Status/EStopPressed"] is False

    # A move inside the gateway: DDATA with only what changed, by alias (the consumer
    # resolves each alias from the DBIRTH and checks seq).
    machine = gateway.fleet.get("machine_1")
    target = machine.last_position if machine.snapshot.position != machine.last_position else 1
    start = consumer.mark()
    executed = await machine.execute(1, target)
    assert executed.outcome is not None
    await executed.outcome
    arrived = await consumer.wait_for(
        lambda m: (
            m.get("kind") == "DDATA"
            and m["device"] == "machine_1"
            and metrics_of(m).get("Move/State") == "arrived"
        ),
        start=start,
    )
    assert metrics_of(arrived)["Counters/MovesCompleted"] == 1
    ddata = [
        m
        for m in consumer.messages[start:]
        if m.get("kind") == "DDATA" and m["device"] == "machine_1"
    ]
    assert any(metrics_of(m).get("Move/State") == "sent" for m in ddata)
    assert any(metrics_of(m).get("Status/Running") is True for m in ddata)
    assert all(len(m["payload"]["metrics"]) < len(first) for m in ddata)  # never everything
    positions = [metrics_of(m)["Position"] for m in ddata if "Position" in metrics_of(m)]
    assert positions and positions[-1] == target
    # The other carousel stood still: nothing about it.
    assert not [m for m in consumer.messages[start:] if m.get("device") == "machine_2"]

    # Health and metrics show the link.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        health = (await http.get("/v1/health")).json()["data"]["mqtt"]
        assert health["state"] == "online"
        assert health["bd_seq"] == bd_seq
        assert health["broker"] == f"127.0.0.1:{broker.port}"
        text = (await http.get("/metrics")).text
    assert "carousel_mqtt_connected 1.0" in text
    assert 'carousel_mqtt_messages_published_total{kind="DBIRTH"} 2.0' in text

    # Graceful stop: the NDEATH (with this connection's bdSeq) comes before any link of a
    # machine is seen closing.
    start = consumer.mark()
    await gateway.stop()
    ndeath = await consumer.wait_for(kind("NDEATH"), start=start)
    assert metrics_of(ndeath)["bdSeq"] == bd_seq
    assert [m["kind"] for m in consumer.messages[start:] if "kind" in m] == ["NDEATH"]
    assert consumer.problems() == []


async def test_mqtt_is_off_by_default_and_health_says_so(gateway_factory):
    gateway = await gateway_factory(gateway_config(1))
    assert gateway.mqtt is None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        assert (await http.get("/v1/health")).json()["data"]["mqtt"] is None
