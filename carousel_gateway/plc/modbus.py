"""Modbus TCP telemetry for one PLC: position (D0), latched target (D2), status word (D1000).

The field PLC answers a Modbus read in about 50 ms against 0.2–0.8 s for a port-3200 STATUS,
so this is the better source of live state. It only ever *reads* holding registers
(function 03); commands stay on port 3200.

Pure part: :class:`RegisterMap` plans the fewest reads for the configured registers and
:func:`decode_registers` turns register values into a :class:`TelemetryReading`; both are
tested without sockets. I/O part: :class:`ModbusTelemetry` keeps one persistent pymodbus
connection under the same :class:`~carousel_gateway.plc.supervisor.LinkSupervisor` as port
3200 (backoff, circuit breaker, the same states); reads fail fast while the link is down and
are never retried here.
pymodbus's own auto-reconnect and retries are switched off: a second reconnect loop would
fight ours over the socket and hide the link state from the machine.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from carousel_gateway.plc.errors import ConnectFailed, PlcConnectionLost, PlcError, PlcTimeout
from carousel_gateway.plc.protocol import ProtocolError, Reply
from carousel_gateway.plc.resilience import Backoff, CircuitBreaker
from carousel_gateway.plc.status import StatusWord
from carousel_gateway.plc.supervisor import (
    LinkSupervisor,
    StateListener,
    SupervisedConnection,
    SupervisedLink,
)

__all__ = [
    "MAX_REGISTERS_PER_READ",
    "ModbusDecodeError",
    "ModbusReadError",
    "ModbusSettings",
    "ModbusTelemetry",
    "ReadBlock",
    "RegisterMap",
    "TelemetryReading",
    "decode_registers",
    "plan_reads",
    "registers_from_blocks",
]

#: Function 03 returns at most 125 registers per request.
MAX_REGISTERS_PER_READ = 125

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
    11: "gateway target failed to respond",
}


class ModbusDecodeError(ProtocolError):
    """Register values that cannot be a reading (missing, or not a status byte)."""


class ModbusReadError(PlcError):
    """The PLC answered, but not with usable registers (exception response, bad values)."""


# -- pure: which registers to read, and what they mean --------------------------------------


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One function-03 request: ``count`` holding registers from ``address``."""

    address: int
    count: int

    def __str__(self) -> str:
        last = self.address + self.count - 1
        return f"D{self.address}" if self.count == 1 else f"D{self.address}..D{last}"


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where the PLC program keeps position, target and status (D numbers = addresses)."""

    position: int = 0
    target: int = 2
    status: int = 1000

    def __post_init__(self) -> None:
        for name in ("position", "target", "status"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"{name} register must be in 0..65535, got {value!r}")
        if len({self.position, self.target, self.status}) != 3:
            raise ValueError("position, target and status registers must differ")

    def read_plan(self, max_count: int = MAX_REGISTERS_PER_READ) -> tuple[ReadBlock, ...]:
        """The fewest reads covering the three registers, the status block first.

        Registers close enough to share one request are read together (reading a few unused
        registers costs bytes, another request costs a round trip). The default map gives
        ``D1000`` then ``D0..D2``. Status goes first: the PLC updates the position no later
        than RUN falls, so a "stopped" status is always paired with a position at least as
        fresh, and an arrival is never mistaken for a stop short of the target.
        """
        blocks = plan_reads((self.position, self.target, self.status), max_count)
        return tuple(sorted(blocks, key=lambda b: not b.address <= self.status < _end(b)))


def _end(block: ReadBlock) -> int:
    return block.address + block.count


def plan_reads(
    addresses: Iterable[int], max_count: int = MAX_REGISTERS_PER_READ
) -> list[ReadBlock]:
    """Group addresses into contiguous blocks of at most ``max_count`` registers each."""
    if max_count < 1:
        raise ValueError("max_count must be >= 1")
    blocks: list[ReadBlock] = []
    for address in sorted(set(addresses)):
        if blocks and address - blocks[-1].address < max_count:
            blocks[-1] = ReadBlock(blocks[-1].address, address - blocks[-1].address + 1)
        else:
            blocks.append(ReadBlock(address, 1))
    return blocks


@dataclass(frozen=True, slots=True)
class TelemetryReading:
    """One Modbus reading: what the machine needs, plus the raw registers for diagnostics."""

    status: StatusWord
    position_index: int  # D0, 0-based
    target_index: int  # D2, 0-based, latched after a stop
    registers: tuple[tuple[int, int], ...] = ()  # (address, value) as read

    @property
    def reply(self) -> Reply:
        """The same reading in the port-3200 shape the machine already understands."""
        return Reply(status=self.status, position_index=self.position_index)

    @property
    def desync(self) -> bool:
        """Stopped with the latched target elsewhere (D2 != D0): a target left over."""
        return not self.status.running and self.target_index != self.position_index


def registers_from_blocks(results: Iterable[tuple[ReadBlock, Sequence[int]]]) -> dict[int, int]:
    """Address → value for every register read, checking each block's length."""
    registers: dict[int, int] = {}
    for block, values in results:
        if len(values) != block.count:
            raise ModbusDecodeError(f"{block}: got {len(values)} registers, expected {block.count}")
        for offset, value in enumerate(values):
            registers[block.address + offset] = value
    return registers


def decode_registers(
    registers: Mapping[int, int], register_map: RegisterMap | None = None
) -> TelemetryReading:
    """Decode register values into a reading; raises :class:`ModbusDecodeError`.

    The status byte lives in a 16-bit register: a value above 255 means the map points at
    something else, so it is refused rather than masked into plausible but wrong bits. The
    position is kept whole (not masked): the machine range-checks it against its bucket count.
    """
    register_map = register_map or RegisterMap()
    values: dict[str, int] = {}
    for name in ("status", "position", "target"):
        address = getattr(register_map, name)
        value = registers.get(address)
        if value is None:
            raise ModbusDecodeError(f"{name} register D{address} was not read")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ModbusDecodeError(f"D{address} = {value!r} is not a 16-bit register value")
        values[name] = value
    if values["status"] > 0xFF:
        raise ModbusDecodeError(
            f"status register D{register_map.status} = {values['status']:#06x}: "
            "not a status byte (is the register map right?)"
        )
    wanted = (register_map.status, register_map.position, register_map.target)
    return TelemetryReading(
        status=StatusWord(values["status"]),
        position_index=values["position"],
        target_index=values["target"],
        registers=tuple(sorted((a, registers[a]) for a in wanted)),
    )


# -- I/O: one persistent pymodbus connection ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    host: str
    port: int = 502
    unit: int = 1
    registers: RegisterMap = field(default_factory=RegisterMap)
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 0.5  # for one whole reading (every block)
    backoff: Backoff = field(default_factory=Backoff)
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 5.0


class _Link(SupervisedLink):
    """One pymodbus client (one TCP connection); ``closed`` completes when it closes."""

    def __init__(self, settings: ModbusSettings, name: str) -> None:
        super().__init__()
        self.client = AsyncModbusTcpClient(
            settings.host,
            port=settings.port,
            name=name,
            reconnect_delay=0,  # no pymodbus auto-reconnect: our supervisor owns the link
            retries=0,  # never resend: a late reply must not be mistaken for a fresh one
            # Only a backstop: our own timeouts (connect, reading) always fire first.
            timeout=max(settings.connect_timeout_s, settings.request_timeout_s) + 1.0,
            trace_connect=self._on_connect,
        )

    def _on_connect(self, connected: bool) -> None:
        if not connected:
            self.lost("closed by peer")

    def abort(self, reason: str) -> None:
        # pymodbus does not report a close it was asked for, so complete `closed` here.
        self.client.close()
        self.lost(reason)


class ModbusTelemetry(SupervisedConnection[_Link]):
    """The gateway's Modbus TCP link to one PLC, read-only."""

    def __init__(
        self,
        settings: ModbusSettings,
        *,
        name: str = "",
        on_state_change: StateListener | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or f"{settings.host}:{settings.port}"
        self.plan = settings.registers.read_plan()
        self.reads = 0
        self.failed_reads = 0
        self.last_reading: TelemetryReading | None = None
        self.latencies_s: deque[float] = deque(maxlen=1024)
        self.supervisor = LinkSupervisor(
            self._open,
            title="Modbus",
            name=self.name,
            backoff=settings.backoff,
            breaker=CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s),
            task_name=f"modbus-link-{self.name}",
            on_state_change=on_state_change,
        )
        self._lock = asyncio.Lock()

    async def _open(self) -> _Link:
        """One pymodbus connection, or :class:`ConnectFailed`."""
        link = _Link(self.settings, self.name)
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                connected = await link.client.connect()
            reason = "refused or unreachable"
        except TimeoutError:
            connected, reason = False, "timed out"
        except BaseException:
            link.abort("connect abandoned")
            raise
        if not connected or link.closed.done():
            link.abort("connect failed")
            address = f"{self.settings.host}:{self.settings.port}"
            raise ConnectFailed(f"Modbus connect to {address} failed: {reason}")
        return link

    # -- reading --------------------------------------------------------------------------

    async def read(self) -> TelemetryReading:
        """Read position, target and status now; fails fast when the link is down."""
        async with self._lock:
            link = self.supervisor.usable_link()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    results = [(block, await self._read_block(link, block)) for block in self.plan]
                reading = decode_registers(registers_from_blocks(results), self.settings.registers)
            except TimeoutError:
                message = f"no Modbus reply within {self.settings.request_timeout_s:g} s"
                self._fail(link, message)
                raise PlcTimeout(message) from None
            except (PlcConnectionLost, PlcTimeout) as exc:
                self._fail(link, str(exc))
                raise
            except ModbusDecodeError as exc:
                self._refused(str(exc))
                raise ModbusReadError(str(exc)) from None
            except ModbusReadError as exc:
                self._refused(str(exc))
                raise
            self.latencies_s.append(time.perf_counter() - started)
            self.reads += 1
            self.supervisor.succeeded()
            self.last_reading = reading
            return reading

    async def _read_block(self, link: _Link, block: ReadBlock) -> list[int]:
        """One function-03 request, abandoned at once if the link closes meanwhile."""
        request = asyncio.ensure_future(
            link.client.read_holding_registers(
                block.address, count=block.count, device_id=self.settings.unit
            )
        )
        try:
            done, _ = await asyncio.wait(
                (request, link.closed), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not request.done():
                request.cancel()
        if request not in done:
            raise PlcConnectionLost(f"connection lost: {link.closed.result()}")
        try:
            response = request.result()
        except ConnectionException as exc:
            raise PlcConnectionLost(f"connection lost: {exc}") from None
        except ModbusIOException as exc:
            raise PlcTimeout(f"Modbus read of {block} failed: {exc}") from None
        except ModbusException as exc:
            raise PlcConnectionLost(f"Modbus error reading {block}: {exc}") from None
        if response.isError():
            code = getattr(response, "exception_code", 0)
            name = _EXCEPTION_NAMES.get(code, "unknown")
            raise ModbusReadError(f"PLC refused reading {block}: exception {code} ({name})")
        return list(response.registers)

    def _refused(self, reason: str) -> None:
        """An answer that is no reading: the link itself is fine, so it is kept."""
        self.failed_reads += 1
        self.supervisor.last_error = reason

    def _fail(self, link: _Link, reason: str) -> None:
        """A read failed on the link: count it and re-establish the link cleanly."""
        self.failed_reads += 1
        self.supervisor.fail(link, reason)
