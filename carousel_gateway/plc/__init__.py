"""Speaking to a PLC: the status byte and port-3200 framing (pure), the links (port 3200
and Modbus TCP) and the one supervisor that keeps them up.

The names below load their module on first use, so importing one module of the package
does not load the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carousel_gateway.lazy_names import lazy_getattr

__all__ = [
    "Command",
    "ConnectionSettings",
    "ConnectionState",
    "LinkSupervisor",
    "ModbusSettings",
    "ModbusTelemetry",
    "PlcConnection",
    "PlcError",
    "PlcNotConnected",
    "PlcTimeout",
    "ProtocolError",
    "StatusKey",
    "StatusWord",
    "TelemetryReading",
]

_HOMES = {
    "StatusKey": "status",
    "StatusWord": "status",
    "Command": "protocol",
    "ProtocolError": "protocol",
    "PlcError": "errors",
    "PlcNotConnected": "errors",
    "PlcTimeout": "errors",
    "ConnectionState": "supervisor",
    "LinkSupervisor": "supervisor",
    "ConnectionSettings": "connection",
    "PlcConnection": "connection",
    "ModbusSettings": "modbus",
    "ModbusTelemetry": "modbus",
    "TelemetryReading": "modbus",
}


__getattr__ = lazy_getattr(__name__, _HOMES)

if TYPE_CHECKING:
    from carousel_gateway.plc.connection import ConnectionSettings as ConnectionSettings
    from carousel_gateway.plc.connection import PlcConnection as PlcConnection
    from carousel_gateway.plc.errors import PlcError as PlcError
    from carousel_gateway.plc.errors import PlcNotConnected as PlcNotConnected
    from carousel_gateway.plc.errors import PlcTimeout as PlcTimeout
    from carousel_gateway.plc.modbus import ModbusSettings as ModbusSettings
    from carousel_gateway.plc.modbus import ModbusTelemetry as ModbusTelemetry
    from carousel_gateway.plc.modbus import TelemetryReading as TelemetryReading
    from carousel_gateway.plc.protocol import Command as Command
    from carousel_gateway.plc.protocol import ProtocolError as ProtocolError
    from carousel_gateway.plc.status import StatusKey as StatusKey
    from carousel_gateway.plc.status import StatusWord as StatusWord
    from carousel_gateway.plc.supervisor import ConnectionState as ConnectionState
    from carousel_gateway.plc.supervisor import LinkSupervisor as LinkSupervisor
