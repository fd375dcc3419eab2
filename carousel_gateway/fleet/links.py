"""Opening a machine's PLC links: port 3200 always, Modbus TCP when it is the telemetry.

The machine's configuration becomes each driver's settings here, in one place, so the
machine itself only decides what to do with the links, not how they are built.
"""

from __future__ import annotations

from collections.abc import Callable

from carousel_gateway.config import MachineConfig
from carousel_gateway.plc.connection import ConnectionSettings, ConnectionState, PlcConnection
from carousel_gateway.plc.modbus import ModbusSettings, ModbusTelemetry, RegisterMap
from carousel_gateway.plc.resilience import Backoff

__all__ = [
    "StateCallback",
    "connection_settings",
    "modbus_settings",
    "open_links",
]

#: Told of every change of a link's state, with the reason (the drivers' callback shape).
StateCallback = Callable[[ConnectionState, str | None], None]


def connection_settings(config: MachineConfig, port: int | None = None) -> ConnectionSettings:
    return ConnectionSettings(
        host=config.host,
        port=config.port if port is None else port,
        layout=config.reply.to_layout(),
        connect_timeout_s=config.connect_timeout_s,
        request_timeout_s=config.request_timeout_s,
        backoff=Backoff(config.backoff_initial_s, config.backoff_max_s),
        breaker_threshold=config.breaker_threshold,
        breaker_cooldown_s=config.breaker_cooldown_s,
        positions=config.positions,
    )


def modbus_settings(config: MachineConfig, port: int | None = None) -> ModbusSettings:
    return ModbusSettings(
        host=config.host,
        port=config.modbus_port if port is None else port,
        unit=config.modbus_unit,
        registers=RegisterMap(
            position=config.position_register,
            target=config.target_register,
            status=config.status_register,
        ),
        connect_timeout_s=config.connect_timeout_s,
        request_timeout_s=config.modbus_timeout_s,
        backoff=Backoff(config.backoff_initial_s, config.backoff_max_s),
        breaker_threshold=config.breaker_threshold,
        breaker_cooldown_s=config.breaker_cooldown_s,
    )


def open_links(
    config: MachineConfig,
    *,
    port: int | None,
    modbus_port: int | None,
    on_state_change: StateCallback,
    on_modbus_state: StateCallback,
) -> tuple[PlcConnection, ModbusTelemetry | None]:
    """The port-3200 link and, on a ``telemetry = "modbus"`` machine, the Modbus reader
    (neither started: ``Machine.start`` does that)."""
    connection = PlcConnection(
        connection_settings(config, port), name=config.id, on_state_change=on_state_change
    )
    modbus = None
    if config.telemetry == "modbus":
        modbus = ModbusTelemetry(
            modbus_settings(config, modbus_port),
            name=f"{config.id}/modbus",
            on_state_change=on_modbus_state,
        )
    return connection, modbus
