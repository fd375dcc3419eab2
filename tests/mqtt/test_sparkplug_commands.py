"""DCMD ``Command/MoveTo`` from an independent host (Tahu's encoder in Node): through the
one command path, results in DDATA, a request id runs once, interlocks refuse with the
reason and no MOVE reaches the simulator, and nothing runs while commands are disabled."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from carousel_gateway.sim.carousel import Fault
from tests.integration.conftest import gateway_config, wait_until
from tests.mqtt.conftest import metrics_of, mqtt_settings

pytestmark = pytest.mark.asyncio

DCMD = "spBv1.0/site/DCMD/cell_a/machine_1"


async def born(consumer: Any, machine_id: str = "machine_1") -> dict[str, Any]:
    """The device's DBIRTH: metric name → alias (a host writes by alias, as Ignition does)."""
    birth = await consumer.wait_for(
        lambda m: m.get("kind") == "DBIRTH" and m.get("device") == machine_id
    )
    return {m["name"]: m["alias"] for m in birth["payload"]["metrics"]}


def move_to(aliases: dict[str, int], target: int, request_id: str | None) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = [
        {"alias": aliases["Command/MoveTo"], "type": "Int32", "value": target}
    ]
    if request_id is not None:
        metrics.append(
            {"alias": aliases["Command/RequestId"], "type": "String", "value": request_id}
        )
    return metrics


def result(request_id: str, *values: str):
    return lambda m: (
        m.get("kind") == "DDATA"
        and m.get("device") == "machine_1"
        and metrics_of(m).get("Command/Last/Result") in values
        and metrics_of(m).get("Command/Last/RequestId", request_id) == request_id
    )


async def history(gateway: Any) -> list[dict[str, Any]]:
    await gateway.journal.flush()
    page = await gateway.journal.history("machine_1", kinds=["command", "command_refused"])
    return page.rows


async def test_dcmd_moves_a_carousel_and_the_result_comes_back_in_ddata(
    broker, consumer, gateway_factory
):
    gateway = await gateway_factory(
        gateway_config(2, mqtt=mqtt_settings(broker, commands_enabled=True))
    )
    aliases = await born(consumer)
    machine = gateway.fleet.get("machine_1")
    simulator = gateway.simulators["machine_1"]
    target = 17 if machine.snapshot.position != 17 else 4
    start = consumer.mark()
    await consumer.publish(DCMD, move_to(aliases, target, "wms-1"))
    accepted = await consumer.wait_for(result("wms-1", "accepted"), start=start)
    assert metrics_of(accepted)["Command/Last/Target"] == target
    arrived = await consumer.wait_for(result("wms-1", "arrived"), start=start)
    assert metrics_of(arrived).get("Command/Last/Reason", "") == ""  # only what changed
    assert machine.snapshot.position == target
    assert simulator.moves_received == 1
    rows = await history(gateway)
    assert [(r["kind"], r["channel"], r["argument"]) for r in rows] == [("command", "mqtt", target)]
    assert rows[0]["client"] == "mqtt:site/cell_a"

    # The same request id again (a host retrying after a lost DDATA): nothing moves.
    mark = consumer.mark()
    other = 3 if target != 3 else 5
    await consumer.publish(DCMD, move_to(aliases, other, "wms-1"))
    # A later, different request shows the first was skipped, not merely slow.
    await consumer.publish(DCMD, move_to(aliases, target, "wms-2"))
    second = await consumer.wait_for(
        lambda m: (
            m.get("kind") == "DDATA" and metrics_of(m).get("Command/Last/RequestId") == "wms-2"
        ),
        start=mark,
    )
    # Already there: "arrived" as before (unchanged, so not repeated), with the reason.
    assert "Command/Last/Result" not in metrics_of(second)
    assert metrics_of(second)["Command/Last/Reason"] == "already at the target"
    assert simulator.moves_received == 1  # wms-2 is already there: skipped, nothing sent
    assert [r["argument"] for r in await history(gateway)] == [target, target]
    assert gateway.mqtt.status.ignored >= 1
    assert consumer.problems() == []


async def test_an_interlocked_dcmd_is_refused_with_its_reason_and_sends_no_move(
    broker, consumer, gateway_factory
):
    gateway = await gateway_factory(
        gateway_config(1, mqtt=mqtt_settings(broker, commands_enabled=True))
    )
    aliases = await born(consumer)
    machine = gateway.fleet.get("machine_1")
    simulator = gateway.simulators["machine_1"]
    simulator.model.set_fault(Fault.EMERGENCY_STOP, True)
    await wait_until(gateway.fleet.bus, lambda: machine.snapshot.status.emergency_stop)
    await consumer.wait_for(
        lambda m: m.get("kind") == "DDATA" and metrics_of(m).get("Status/EStopPressed") is True
    )
    start = consumer.mark()
    target = 9 if machine.snapshot.position != 9 else 10
    await consumer.publish(DCMD, move_to(aliases, target, "wms-estop"))
    refused = await consumer.wait_for(result("wms-estop", "refused"), start=start)
    reason = metrics_of(refused)["Command/Last/Reason"]
    assert reason.startswith("MACHINE_NOT_READY")
    assert "PARADA_EMERGENCIA" in reason
    assert simulator.moves_received == 0
    (row,) = await history(gateway)
    assert (row["kind"], row["code"], row["channel"]) == (
        "command_refused",
        "MACHINE_NOT_READY",
        "mqtt",
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        text = (await http.get("/metrics")).text
    assert 'carousel_mqtt_commands_total{result="refused"} 1.0' in text
    assert consumer.problems() == []


async def test_commands_disabled_moves_nothing(broker, consumer, gateway_factory):
    gateway = await gateway_factory(gateway_config(1, mqtt=mqtt_settings(broker)))
    aliases = await born(consumer)
    simulator = gateway.simulators["machine_1"]
    start = consumer.mark()
    await consumer.publish(DCMD, move_to(aliases, 12, "ignored-1"))
    # Then a rebirth request: its NBIRTH, after the DCMD on the same connection, proves the
    # DCMD was read (and ignored) by then.
    await consumer.publish(
        "spBv1.0/site/NCMD/cell_a",
        [{"name": "Node Control/Rebirth", "type": "Boolean", "value": True}],
    )
    rebirth = await consumer.wait_for(lambda m: m.get("kind") == "NBIRTH", start=start)
    assert metrics_of(rebirth)["Properties/CommandsEnabled"] is False
    dbirth = await consumer.wait_for(lambda m: m.get("kind") == "DBIRTH", start=start)
    assert metrics_of(dbirth)["Command/Last/Result"] == "none"
    assert simulator.moves_received == 0
    assert await history(gateway) == []
    assert gateway.mqtt.status.ignored == 1
    assert consumer.problems() == []
