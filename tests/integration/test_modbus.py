"""A Machine on Modbus TCP telemetry against the simulator over loopback: moves, faults,
fallback to port 3200 and back, position desync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from carousel_gateway.fleet.events import (
    ConnectionChanged,
    Event,
    EventBus,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    PositionDesync,
    PositionDesyncCleared,
    StatusChanged,
    TelemetrySource,
    TelemetrySourceChanged,
)
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.sim.carousel import Fault
from carousel_gateway.sim.modbus_server import ModbusSimulatorServer, ModbusSimulatorSettings
from carousel_gateway.sim.server import LinkAction, SimulatorServer

from .conftest import FAST_MACHINE, EventRecorder, gateway_config, machine_config, wait_until

pytestmark = pytest.mark.asyncio

#: Fast Modbus timings for tests (the defaults are 0.1 / 0.5 / 0.5 / 1.0 s).
FAST_MODBUS: dict[str, Any] = {
    "telemetry": "modbus",
    "modbus_poll_active_s": 0.01,
    "modbus_poll_idle_s": 0.05,
    "modbus_timeout_s": 0.3,
    "modbus_fallback_s": 0.4,
}


@pytest.fixture
async def modbus_factory() -> AsyncIterator[Callable[..., Any]]:
    """A Modbus listener serving the model of an existing port-3200 simulator."""
    servers: list[ModbusSimulatorServer] = []

    async def make(simulator: SimulatorServer, **settings: Any) -> ModbusSimulatorServer:
        server = ModbusSimulatorServer(
            simulator.model, settings=ModbusSimulatorSettings(**settings)
        )
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def modbus_machine_factory() -> AsyncIterator[Callable[..., Any]]:
    machines: list[Machine] = []

    async def make(
        simulator: SimulatorServer, modbus_port: int, **overrides: Any
    ) -> tuple[Machine, EventRecorder]:
        bus = EventBus()
        recorder = EventRecorder(bus)
        values = {**FAST_MODBUS, "modbus_port": modbus_port, **overrides}
        values.setdefault("positions", simulator.model.positions)
        machine = Machine(machine_config(simulator.port, **values), bus)
        machine.start()
        machines.append(machine)
        return machine, recorder

    yield make
    for machine in machines:
        await machine.stop()


def is_reading(event: Event) -> bool:
    return isinstance(event, StatusChanged) and event.snapshot.raw_status is not None


def source_changed(source: TelemetrySource) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, TelemetrySourceChanged) and e.source is source


async def modbus_ready(simulator_factory, modbus_factory, modbus_machine_factory, **kw: Any):
    """A simulator with both listeners and a Modbus machine that has read it once."""
    start_index = kw.pop("start_index", 0)
    simulator = await simulator_factory(start_index=start_index, single_session=False)
    modbus = await modbus_factory(simulator)
    machine, recorder = await modbus_machine_factory(simulator, modbus.port, **kw)
    await recorder.wait_for(is_reading)
    await wait_until(machine.bus, lambda: machine.snapshot.connection is ConnectionState.CONNECTED)
    assert machine.telemetry_source is TelemetrySource.MODBUS
    return simulator, modbus, machine, recorder


async def test_move_start_and_arrival_are_seen_over_modbus(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    simulator, modbus, machine, recorder = await modbus_ready(
        simulator_factory, modbus_factory, modbus_machine_factory
    )
    assert machine.snapshot.position == 1 and machine.snapshot.raw_status == 21

    executed = await machine.execute(1, 8)
    outcome = await asyncio.wait_for(executed.outcome, 5)

    assert isinstance(outcome, MoveCompleted) and outcome.position == 8
    assert simulator.model.position_index == 7
    seen = [e.snapshot for e in recorder.of_type(StatusChanged)]
    assert any(s.status is not None and s.status.running for s in seen)  # the start
    assert {s.position for s in seen} >= {1, 4, 8}  # the way there, read live
    # Port 3200 carried the MOVE and nothing else: the interlock read went over Modbus.
    assert simulator.requests_served == 1
    assert modbus.requests_served > 4
    assert modbus.writes_refused == 0  # the gateway never writes registers
    assert machine.telemetry_source is TelemetrySource.MODBUS
    assert not recorder.of_type(TelemetrySourceChanged)
    reading = machine.modbus.last_reading
    assert reading is not None and dict(reading.registers) == {0: 7, 2: 7, 1000: 21}


async def test_fault_injected_appears_through_modbus(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    simulator, _, machine, recorder = await modbus_ready(
        simulator_factory, modbus_factory, modbus_machine_factory
    )
    simulator.model.set_fault(Fault.VFD_FAULT, True)
    raised = await recorder.wait_for(lambda e: isinstance(e, FaultRaised))
    assert raised.keys == ("VFD",)
    assert machine.snapshot.status is not None and machine.snapshot.status.vfd_fault
    assert simulator.requests_served == 0  # seen without a single port-3200 request

    simulator.model.set_fault(Fault.VFD_FAULT, False)
    simulator.model.seconds_per_position = 0.1
    executed = await machine.execute(1, 14)  # ascending from 1: passes 4 on the way
    await recorder.wait_for(lambda e: isinstance(e, StatusChanged) and e.snapshot.position == 4)
    simulator.model.set_fault(Fault.EMERGENCY_STOP, True)
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveFailed) and "PARADA_EMERGENCIA" in outcome.reasons
    assert simulator.model.moves_started == 1


async def test_modbus_killed_falls_back_to_port3200_then_returns(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    simulator, modbus, machine, recorder = await modbus_ready(
        simulator_factory, modbus_factory, modbus_machine_factory
    )
    loop = asyncio.get_running_loop()
    mark = len(recorder.events)
    await modbus.stop()
    killed_at = loop.time()

    fallback = await recorder.wait_for(source_changed(TelemetrySource.PORT3200), start=mark)
    elapsed = loop.time() - killed_at
    assert elapsed < machine.config.modbus_fallback_s + 0.3  # configured time + loop slack
    assert "Modbus" in fallback.reason
    assert machine.telemetry_source is TelemetrySource.PORT3200
    assert machine.telemetry_fallbacks == 1
    assert machine.snapshot.connection is ConnectionState.CONNECTED  # commands unaffected

    # Port-3200 polling now keeps the snapshot live, and moves still work end to end.
    served = simulator.requests_served
    simulator.model.teleport(11)
    await recorder.wait_for(lambda e: isinstance(e, StatusChanged) and e.snapshot.position == 12)
    assert simulator.requests_served > served
    executed = await machine.execute(1, 15)
    assert isinstance(await asyncio.wait_for(executed.outcome, 5), MoveCompleted)

    mark = len(recorder.events)
    await modbus.start()  # same port
    back = await recorder.wait_for(source_changed(TelemetrySource.MODBUS), timeout=10, start=mark)
    assert "back" in back.reason
    served = simulator.requests_served
    simulator.model.set_fault(Fault.ALARM, True)
    await recorder.wait_for(lambda e: isinstance(e, FaultRaised), start=mark)
    assert simulator.requests_served == served  # port 3200 idle again
    assert [e.source for e in recorder.of_type(TelemetrySourceChanged)] == [
        TelemetrySource.PORT3200,
        TelemetrySource.MODBUS,
    ]


async def test_stalled_modbus_times_out_and_falls_back(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    _, modbus, machine, recorder = await modbus_ready(
        simulator_factory, modbus_factory, modbus_machine_factory
    )
    mark = len(recorder.events)
    modbus.stall()
    await recorder.wait_for(source_changed(TelemetrySource.PORT3200), start=mark)
    assert machine.modbus.failed_reads >= 1
    assert machine.snapshot.connection is ConnectionState.CONNECTED
    modbus.stall(False)
    await recorder.wait_for(source_changed(TelemetrySource.MODBUS), timeout=10, start=mark)


async def test_unreachable_modbus_at_start_falls_back(
    simulator_factory, modbus_machine_factory, unused_tcp_port
):
    simulator = await simulator_factory(start_index=5)
    machine, recorder = await modbus_machine_factory(simulator, unused_tcp_port)
    event = await recorder.wait_for(source_changed(TelemetrySource.PORT3200))
    assert "connect" in event.reason
    await wait_until(machine.bus, lambda: machine.snapshot.position == 6)
    assert machine.modbus.state is not ConnectionState.CONNECTED


async def test_misconfigured_register_map_falls_back(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    simulator = await simulator_factory()
    modbus = await modbus_factory(simulator)
    machine, recorder = await modbus_machine_factory(simulator, modbus.port, status_register=5000)
    event = await recorder.wait_for(source_changed(TelemetrySource.PORT3200))
    assert "exception 2" in event.reason  # illegal data address, named in the reason
    assert machine.modbus.state is ConnectionState.CONNECTED  # the link itself is fine
    await recorder.wait_for(is_reading)


async def test_command_link_drop_does_not_fail_a_move_modbus_still_sees(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    simulator, _, machine, recorder = await modbus_ready(
        simulator_factory, modbus_factory, modbus_machine_factory
    )
    simulator.model.seconds_per_position = 0.05
    executed = await machine.execute(1, 12)
    mark = len(recorder.events)
    simulator.link(LinkAction.DROP)
    await recorder.wait_for(
        lambda e: isinstance(e, ConnectionChanged) and e.state is not ConnectionState.CONNECTED,
        start=mark,
    )
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveCompleted) and outcome.position == 12


async def test_position_desync_is_reported_once_and_never_acted_on(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    simulator, modbus, machine, recorder = await modbus_ready(
        simulator_factory, modbus_factory, modbus_machine_factory
    )
    simulator.model.seconds_per_position = 0.1
    executed = await machine.execute(1, 14)  # ascending from 1: passes 4 on the way
    await recorder.wait_for(lambda e: isinstance(e, StatusChanged) and e.snapshot.position == 4)
    simulator.model.set_fault(Fault.EMERGENCY_STOP, True)  # stops short; D2 stays latched
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveFailed)

    desync = await recorder.wait_for(lambda e: isinstance(e, PositionDesync))
    assert desync.target == 14 and desync.position == outcome.position
    assert machine.position_desync == desync
    # More idle readings (an alarm raised and cleared, seen through them): still one
    # warning, and nothing was sent to the PLC because of it.
    mark = len(recorder.events)
    simulator.model.set_fault(Fault.ALARM, True)
    await recorder.wait_for(lambda e: isinstance(e, FaultRaised), start=mark)
    simulator.model.set_fault(Fault.ALARM, False)
    await recorder.wait_for(lambda e: isinstance(e, FaultCleared), start=mark)
    assert len(recorder.of_type(PositionDesync)) == 1
    assert simulator.model.moves_started == 1
    assert modbus.writes_refused == 0

    # The next move overwrites D2: the report clears and does not come back at arrival.
    simulator.model.set_fault(Fault.EMERGENCY_STOP, False)
    executed = await machine.execute(1, 9)
    cleared = await recorder.wait_for(lambda e: isinstance(e, PositionDesyncCleared))
    assert cleared.machine_id == machine.id
    assert isinstance(await asyncio.wait_for(executed.outcome, 5), MoveCompleted)
    assert machine.position_desync is None
    assert len(recorder.of_type(PositionDesync)) == 1


async def test_desync_from_a_hand_move_while_idle(
    simulator_factory, modbus_factory, modbus_machine_factory
):
    simulator, _, machine, recorder = await modbus_ready(
        simulator_factory, modbus_factory, modbus_machine_factory, start_index=4
    )
    simulator.model.teleport(9)  # moved by hand: D0 changes, the latched D2 does not
    desync = await recorder.wait_for(lambda e: isinstance(e, PositionDesync))
    assert (desync.position, desync.target) == (10, 5)
    assert machine.snapshot.position == 10


async def test_simulator_refuses_modbus_writes(simulator_factory, modbus_factory):
    simulator = await simulator_factory()
    modbus = await modbus_factory(simulator)
    client = AsyncModbusTcpClient("127.0.0.1", port=modbus.port, reconnect_delay=0, retries=0)
    try:
        assert await client.connect()
        response = await client.write_register(2, 5, device_id=1)
        assert response.isError()
        read = await client.read_holding_registers(1000, count=2, device_id=1)
        assert read.registers == [21, 0]  # status byte, position mirror
    finally:
        client.close()
    assert modbus.writes_refused == 1
    assert simulator.model.target_index == 0 and simulator.model.moves_started == 0


async def test_gateway_serves_modbus_for_machines_configured_with_it(gateway_factory):
    tables = [
        {**FAST_MACHINE, "id": "machine_1", "name": "Carrusel Principal"},
        {
            **FAST_MACHINE,
            **FAST_MODBUS,
            "id": "machine_2",
            "name": "Carrusel Secundario",
            "modbus_port": 0,
        },
    ]
    gateway = await gateway_factory(gateway_config(tables))
    assert set(gateway.modbus_simulators) == {"machine_2"}
    first, second = gateway.fleet.get("machine_1"), gateway.fleet.get("machine_2")
    assert first.telemetry_source is TelemetrySource.PORT3200 and first.modbus is None
    assert second.telemetry_source is TelemetrySource.MODBUS
    assert second.modbus is not None
    assert second.modbus.settings.port == gateway.modbus_simulators["machine_2"].port
    recorder = EventRecorder(gateway.fleet.bus)
    executed = await second.execute(1, 6)
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveCompleted) and outcome.position == 6
    assert gateway.simulators["machine_2"].requests_served == 1
    assert not recorder.of_type(TelemetrySourceChanged)
