"""Carousels to talk to over TCP: the model on an injected clock (pure) and the servers that
speak the PLC's bytes and Modbus TCP, so the gateway reaches them as it reaches a real PLC.

The names below load their module on first use, so importing one module of the package
does not load the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carousel_gateway.lazy_names import lazy_getattr

__all__ = [
    "CarouselModel",
    "Fault",
    "FaultMode",
    "ModbusSimulatorServer",
    "MoveResponse",
    "SimulatorServer",
]

_HOMES = {
    "CarouselModel": "carousel",
    "Fault": "carousel",
    "MoveResponse": "carousel",
    "FaultMode": "server",
    "SimulatorServer": "server",
    "ModbusSimulatorServer": "modbus_server",
}


__getattr__ = lazy_getattr(__name__, _HOMES)

if TYPE_CHECKING:
    from carousel_gateway.sim.carousel import CarouselModel as CarouselModel
    from carousel_gateway.sim.carousel import Fault as Fault
    from carousel_gateway.sim.carousel import MoveResponse as MoveResponse
    from carousel_gateway.sim.modbus_server import ModbusSimulatorServer as ModbusSimulatorServer
    from carousel_gateway.sim.server import FaultMode as FaultMode
    from carousel_gateway.sim.server import SimulatorServer as SimulatorServer
