"""Serve a :class:`CarouselModel` over Modbus TCP, as the field PLC does on port 502.

Register map (D number = holding-register address, unit id 1): ``D0`` position, ``D2``
latched target, ``D1000`` status byte, ``D1001`` position mirror. Values are taken from the
model at the moment each read is answered (after the configurable reply delay, like the
PLC's ~50 ms), so they are always in step with the port-3200 listener serving the same
model. ``D0..D1099`` are readable (zeros elsewhere), like any D register on the PLC.

Only function 03 (read holding registers) is served: it is all the gateway uses. Other
reads (input registers, coils, discrete inputs) are refused with exception 01 (Illegal
Function) rather than answered with the holding registers' values, so that a client
relying on them fails here, not against the field PLC. Writes are refused (01) and
counted: the gateway must never write, and a test can prove it. A request for a unit id
other than the simulator's is answered with exception 0x0B (Gateway Target Device Failed
to Respond: the spec's code for a device that is not present) and logged in one line.
The listener can be stopped and started again on the same port, to rehearse a lost link.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from carousel_gateway.sim.carousel import CarouselModel

__all__ = [
    "ADDRESS_SPACE",
    "CATCH_ALL_UNIT",
    "POSITION_MIRROR_REGISTER",
    "POSITION_REGISTER",
    "READ_HOLDING_REGISTERS",
    "REGISTER_COUNT",
    "STATUS_REGISTER",
    "TARGET_REGISTER",
    "ModbusSimulatorServer",
    "ModbusSimulatorSettings",
]

log = logging.getLogger(__name__)

POSITION_REGISTER = 0
TARGET_REGISTER = 2
STATUS_REGISTER = 1000
POSITION_MIRROR_REGISTER = 1001
REGISTER_COUNT = 1100  # D0..D1099
#: Every Modbus address: requests reach our checks (function first, then address, as the
#: Modbus spec orders them) instead of pymodbus's own address check.
ADDRESS_SPACE = 65536
READ_HOLDING_REGISTERS = 3
#: pymodbus hands a request for a unit id no device has to device 0; without one it fails
#: with ``KeyError: 0`` and a traceback. Device 0 answers those requests instead.
CATCH_ALL_UNIT = 0


@dataclass(slots=True)
class ModbusSimulatorSettings:
    """How the simulated PLC answers over Modbus (mutable: tests change it live)."""

    reply_delay_s: float = 0.0
    unit: int = 1


class ModbusSimulatorServer:
    """A Modbus TCP listener whose holding registers are read live from a carousel model."""

    def __init__(
        self,
        model: CarouselModel,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: ModbusSimulatorSettings | None = None,
    ) -> None:
        self.model = model
        self.host = host
        self.port = port
        self.settings = settings or ModbusSimulatorSettings()
        self.requests_served = 0
        self.writes_refused = 0
        self.reads_refused = 0  # functions other than 03
        self.unknown_unit_requests = 0
        self._server: ModbusTcpServer | None = None
        self._answering = asyncio.Event()
        self._answering.set()

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def stalled(self) -> bool:
        return not self._answering.is_set()

    async def start(self) -> int:
        """Start listening (again, on the same port after a stop); returns the bound port."""
        if self._server is not None:
            return self.port
        devices = [SimDevice(id=self.settings.unit, simdata=_registers(), action=self._action)]
        if self.settings.unit != CATCH_ALL_UNIT:  # (unit 0 answers every unit id itself)
            devices.append(
                SimDevice(id=CATCH_ALL_UNIT, simdata=_registers(), action=self._unknown_unit)
            )
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        await server.serve_forever(background=True)
        listener = server.transport
        if isinstance(listener, asyncio.Server) and listener.sockets:
            self.port = listener.sockets[0].getsockname()[1]
        self._server = server
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection (like pulling the Ethernet cable)."""
        server, self._server = self._server, None
        self._answering.set()  # let any stalled request finish (into a closed socket)
        if server is not None:
            await server.shutdown()

    def stall(self, stalled: bool = True) -> None:
        """Keep connections open but stop answering (True), or answer again (False)."""
        if stalled:
            self._answering.clear()
        else:
            self._answering.set()

    def registers(self) -> dict[int, int]:
        """The mapped registers as the PLC would hold them now."""
        position = self.model.position_index
        return {
            POSITION_REGISTER: position,
            TARGET_REGISTER: self.model.target_index,
            STATUS_REGISTER: self.model.status_byte(),
            POSITION_MIRROR_REGISTER: position,
        }

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before answering: refresh the registers from the model."""
        if set_values is not None:
            self.writes_refused += 1
            log.warning(
                "simulator refused Modbus write (function %d) at D%d", function_code, address
            )
            return ExcCodes.ILLEGAL_FUNCTION
        if function_code != READ_HOLDING_REGISTERS:
            self.reads_refused += 1
            log.warning(
                "simulator refused Modbus function %d (only 03, read holding registers)",
                function_code,
            )
            return ExcCodes.ILLEGAL_FUNCTION
        if address + count > REGISTER_COUNT:
            return ExcCodes.ILLEGAL_ADDRESS
        await self._reply_time()
        for register, value in self.registers().items():
            registers[register - start_address] = value
        self.requests_served += 1
        return None

    async def _unknown_unit(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes:
        """Device 0's action: a request for a unit id the simulator is not."""
        await self._reply_time()
        self.unknown_unit_requests += 1
        log.warning(
            "simulator answered a Modbus request (function %d) for a unit id other than %d "
            "with exception 0x0B",
            function_code,
            self.settings.unit,
        )
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def _reply_time(self) -> None:
        """The PLC's reply delay; held while the link is stalled."""
        if self.settings.reply_delay_s > 0:
            await asyncio.sleep(self.settings.reply_delay_s)
        await self._answering.wait()


def _registers() -> list[SimData]:
    return [SimData(0, count=ADDRESS_SPACE, values=0, datatype=DataType.REGISTERS)]
