"""After a takeover the new active notes itself ready (``ready_at`` in its lease row) once
every machine of the cell has been read since its links opened, and no later than
``READY_LIMIT_S`` when a PLC never answers; health then gives the takeover's duration."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from carousel_gateway.app import Gateway
from carousel_gateway.plc.connection import ConnectionState

from .conftest import gateway_config
from .test_ha_gateways import CELL, LEASE, until_active


def closed_port() -> int:
    """A loopback port nobody listens on (a PLC that never answers)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def config(url: str, ports: list[int], instance: str) -> Any:
    machines = [
        {"id": f"m{n + 1}", "name": f"M{n + 1}", "host": "127.0.0.1", "port": port,
         "positions": 30, "connect_timeout_s": 0.5}
        for n, port in enumerate(ports)
    ]  # fmt: skip
    return gateway_config(
        machines,
        journal={"url": url},
        ha={"enabled": True, "cell": CELL, "instance": instance, **LEASE},
    )


async def ready(gateway: Gateway, instance: str, timeout: float = 30.0) -> Any:
    """Until the cell's takeover record says ``instance`` took over and is ready (polled:
    the lease thread reads it back from the database)."""
    assert gateway.ha is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        takeover = gateway.ha.takeover
        if takeover is not None and takeover.instance == instance and takeover.ready_at:
            return takeover
        if loop.time() > deadline:
            raise TimeoutError(f"{instance} not ready within {timeout} s: {takeover}")
        await asyncio.sleep(0.02)


async def test_a_graceful_handover_is_timed_from_the_release_to_every_machine_read(
    postgres_server: Any, simulator_factory: Any, gateway_factory: Any
) -> None:
    sims = [await simulator_factory(release_time_s=0.3) for _ in range(2)]
    url = postgres_server.url_for_new_schema()
    ports = [sim.port for sim in sims]
    a: Gateway = await gateway_factory(config(url, ports, "gw-a"), wait_connected=False)
    await until_active(a)
    first = await ready(a, "gw-a")
    assert first.instance == "gw-a" and first.previous_instance is None
    assert first.seconds is None  # nobody held the lease before
    b: Gateway = await gateway_factory(config(url, ports, "gw-b"), wait_connected=False)
    assert b.ha is not None
    await b.ha.wait_holder("gw-a")

    await a.stop()  # releases the lease: B takes it at once
    takeover = await ready(b, "gw-b")
    assert b.fleet is not None
    for machine in b.fleet:  # ready means each was read by B itself
        assert machine.snapshot.connection is ConnectionState.CONNECTED
    assert takeover.instance == "gw-b" and takeover.previous_instance == "gw-a"
    assert takeover.epoch == first.epoch + 1
    assert takeover.seconds is not None and takeover.seconds >= 0
    assert takeover.ready_at >= takeover.at


async def test_a_plc_that_never_answers_does_not_hold_readiness_up(
    postgres_server: Any,
    simulator_factory: Any,
    gateway_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("carousel_gateway.app.READY_LIMIT_S", 1.0)
    caplog.set_level(logging.WARNING, logger="carousel_gateway")
    sim = await simulator_factory()
    url = postgres_server.url_for_new_schema()
    a: Gateway = await gateway_factory(
        config(url, [sim.port, closed_port()], "gw-a"), wait_connected=False
    )
    takeover = await ready(a, "gw-a")
    assert takeover.instance == "gw-a"
    assert a.fleet is not None
    assert a.fleet.get("m2").snapshot.connection is not ConnectionState.CONNECTED
    assert any("ready without a first reading of m2" in r.getMessage() for r in caplog.records)
