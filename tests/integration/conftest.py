"""Fixtures for tests over loopback sockets: real simulators, real machines, recorded events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import Event, EventBus
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.sim.carousel import CarouselModel
from carousel_gateway.sim.server import SimulatorServer, SimulatorSettings

#: Fast timings for tests: a bucket passes every 20 ms.
FAST_SECONDS_PER_POSITION = 0.02


class EventRecorder:
    """Records bus events and lets a test wait for one matching a predicate."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        bus.subscribe(self._record)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of_type(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(
        self, predicate: Callable[[Event], bool], timeout: float = 5.0, *, start: int = 0
    ) -> Any:
        """The first event from index ``start`` on that matches; waits for it if needed."""
        async with asyncio.timeout(timeout):
            index = start
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()


def machine_config(port: int, **overrides: Any) -> MachineConfig:
    values: dict[str, Any] = {
        "id": "m1",
        "name": "Test carousel",
        "host": "127.0.0.1",
        "port": port,
        "kind": "simulator",
        "positions": 30,
        "poll_idle_s": 0.05,
        "poll_active_s": 0.01,
        "request_timeout_s": 0.5,
        "connect_timeout_s": 0.5,
        "move_timeout_s": 5.0,
        "move_start_timeout_s": 1.0,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.2,
        "breaker_cooldown_s": 0.3,
    }
    values.update(overrides)
    return MachineConfig.model_validate(values)


@pytest.fixture
async def simulator_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[SimulatorServer] = []

    async def make(
        *, positions: int = 30, start_index: int = 0, **settings: Any
    ) -> SimulatorServer:
        model = CarouselModel(positions, FAST_SECONDS_PER_POSITION, start_index=start_index)
        server = SimulatorServer(model, settings=SimulatorSettings(**settings))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def machine_factory() -> AsyncIterator[Callable[..., Any]]:
    machines: list[Machine] = []

    async def make(server: SimulatorServer, **overrides: Any) -> tuple[Machine, EventRecorder]:
        bus = EventBus()
        recorder = EventRecorder(bus)
        overrides.setdefault("positions", server.model.positions)
        machine = Machine(machine_config(server.port, **overrides), bus)
        machine.start()
        machines.append(machine)
        return machine, recorder

    yield make
    for machine in machines:
        await machine.stop()


# -- a whole gateway on loopback ------------------------------------------------------------

FAST_MACHINE: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "kind": "simulator",
    "positions": 30,
    "poll_idle_s": 0.05,
    "poll_active_s": 0.01,
    "request_timeout_s": 0.5,
    "connect_timeout_s": 0.5,
    "move_timeout_s": 5.0,
    "move_start_timeout_s": 1.0,
    "backoff_initial_s": 0.02,
    "backoff_max_s": 0.2,
    "breaker_cooldown_s": 0.3,
    "simulator": {"embedded": True, "seconds_per_position": FAST_SECONDS_PER_POSITION},
}


def gateway_config(machines: int | list[dict[str, Any]] = 2, **overrides: Any) -> Any:
    """A config on free loopback ports; ``machines`` is a count of fast embedded simulators
    or a list of machine tables (given fast link timings, no simulator)."""
    from carousel_gateway.config import parse_config

    names = ["Carrusel Principal", "Carrusel Secundario"]
    if isinstance(machines, int):
        tables = [
            {
                **FAST_MACHINE,
                "id": f"machine_{i + 1}",
                "name": names[i] if i < len(names) else f"Carrusel {i + 1}",
            }
            for i in range(machines)
        ]
    else:
        link = {k: v for k, v in FAST_MACHINE.items() if k not in ("kind", "simulator", "port")}
        tables = [{**link, **table} for table in machines]
    data: dict[str, Any] = {
        "websocket": {"host": "127.0.0.1", "port": 0},
        "http": {"host": "127.0.0.1", "port": 0},
        "journal": {"path": ":memory:"},
        "machines": tables,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start a real Gateway (embedded simulators, fleet, servers) on free loopback ports."""
    from carousel_gateway.app import Gateway

    gateways: list[Gateway] = []

    async def make(config: Any = None, *, wait_connected: bool = True) -> Gateway:
        gateway = Gateway(config or gateway_config())
        await gateway.start()
        gateways.append(gateway)
        if wait_connected:
            await wait_until(
                gateway.fleet.bus,
                lambda: all(m.snapshot.raw_status is not None for m in gateway.fleet),
            )
        return gateway

    yield make
    for gateway in gateways:
        await gateway.stop()


async def wait_until(bus: EventBus, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait, event by event, until ``condition()`` holds (no sleeping)."""
    changed = asyncio.Event()
    unsubscribe = bus.subscribe(lambda _event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                changed.clear()
                await changed.wait()
    finally:
        unsubscribe()


@pytest.fixture
async def gateway(gateway_factory) -> Any:
    return await gateway_factory()
