"""format = "json": retained state and status, events, commands with request ids and their
results, on a real mosquitto, read and written by the Node `mqtt` client."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import gateway_config
from tests.mqtt.conftest import mqtt_settings

pytestmark = pytest.mark.asyncio

BASE = "carousel/site/cell_a"


def on(topic: str):
    return lambda m: m.get("topic") == topic


def body(message):
    return json.loads(message["text"])


async def test_json_state_events_commands_and_status(broker, consumer_factory, gateway_factory):
    settings = mqtt_settings(broker, format="json", commands_enabled=True)
    gateway = await gateway_factory(gateway_config(2, mqtt=settings))
    # A consumer that comes later still gets the retained status and every state.
    consumer = await consumer_factory("carousel/#")
    status = body(await consumer.wait_for(on(f"{BASE}/status")))
    assert status["online"] is True
    machine = gateway.fleet.get("machine_1")
    state = body(
        await consumer.wait_for(
            lambda m: (
                m.get("topic") == f"{BASE}/machine_1/state"
                and body(m)["position"] == machine.snapshot.position
            )
        )
    )
    assert state["type"] == "machine_status" and state["machine_id"] == "machine_1"
    assert state["connection_status"] == "connected"
    assert state["raw_status"] == machine.snapshot.raw_status
    assert set(state["status"]) >= {"READY", "PARADA_EMERGENCIA"}

    target = 12 if machine.snapshot.position != 12 else 6
    start = consumer.mark()
    await consumer.raw(
        f"{BASE}/machine_1/command", json.dumps({"target": target, "request_id": "j-1"}), qos=1
    )
    results = []

    def result(message):
        if message.get("topic") == f"{BASE}/machine_1/command/result":
            results.append(body(message))
        return bool(results) and results[-1]["result"] == "arrived"

    await consumer.wait_for(result, start=start)
    assert [r["result"] for r in results] == ["accepted", "arrived"]
    assert all(r["request_id"] == "j-1" and r["target"] == target for r in results)
    events = [body(m) for m in consumer.messages[start:] if m.get("topic", "").endswith("/events")]
    assert [e["type"] for e in events] == ["command_result", "move_completed"]
    assert events[1]["position"] == target
    last_state = [
        body(m) for m in consumer.messages[start:] if m.get("topic") == f"{BASE}/machine_1/state"
    ][-1]
    assert last_state["position"] == target

    # The same request id again moves nothing; a bad command is ignored.
    moves = gateway.simulators["machine_1"].moves_received
    await consumer.raw(
        f"{BASE}/machine_1/command", json.dumps({"target": 3, "request_id": "j-1"}), qos=1
    )
    await consumer.raw(f"{BASE}/machine_1/command", "move it", qos=1)
    mark = consumer.mark()
    await consumer.raw(
        f"{BASE}/machine_1/command", json.dumps({"target": target, "request_id": "j-2"}), qos=1
    )
    await consumer.wait_for(
        lambda m: (
            m.get("topic") == f"{BASE}/machine_1/command/result" and body(m)["request_id"] == "j-2"
        ),
        start=mark,
    )
    assert gateway.simulators["machine_1"].moves_received == moves
    assert gateway.mqtt.status.ignored == 2

    # A graceful stop leaves the retained status offline.
    mark = consumer.mark()
    await gateway.stop()
    offline = body(await consumer.wait_for(on(f"{BASE}/status"), start=mark))
    assert offline["online"] is False
