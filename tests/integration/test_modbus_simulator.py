"""The Modbus simulator as any Modbus client sees it, over loopback: pymodbus's client and,
when Debian's ``mbpoll`` is installed (tests/integration/deps.mk), libmodbus's through it.

What it serves: function 03 (read holding registers) for its unit id. Other reads and every
write are exception 01 (Illegal Function); a register past D1099 is 02 (Illegal Data
Address); another unit id is 0x0B (Gateway Target Device Failed to Respond), one log line
and no traceback.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse

from carousel_gateway.sim.carousel import CarouselModel
from carousel_gateway.sim.modbus_server import ModbusSimulatorServer

pytestmark = pytest.mark.asyncio

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
GATEWAY_TARGET_FAILED_TO_RESPOND = 0x0B
MBPOLL = shutil.which("mbpoll")


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulatorServer]:
    server = ModbusSimulatorServer(CarouselModel(30, 0.02, start_index=4))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(simulator: ModbusSimulatorServer) -> AsyncIterator[AsyncModbusTcpClient]:
    connection = AsyncModbusTcpClient(
        "127.0.0.1", port=simulator.port, reconnect_delay=0, retries=0, timeout=5
    )
    assert await connection.connect()
    yield connection
    connection.close()


def exception_code(response: object) -> int | None:
    return response.exception_code if isinstance(response, ExceptionResponse) else None


@pytest.mark.parametrize("unit", [7, 0, 255])
async def test_unknown_unit_id_is_exception_0x0b_in_one_log_line(simulator, client, caplog, unit):
    caplog.set_level(logging.DEBUG)
    response = await client.read_holding_registers(1000, count=2, device_id=unit)
    assert exception_code(response) == GATEWAY_TARGET_FAILED_TO_RESPOND
    assert simulator.unknown_unit_requests == 1 and simulator.requests_served == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "Traceback" not in caplog.text and "KeyError" not in caplog.text
    ours = [r for r in caplog.records if r.name == "carousel_gateway.sim.modbus_server"]
    assert len(ours) == 1 and "0x0B" in ours[0].getMessage()
    # The link is fine: the simulator's own unit still answers on the same connection.
    read = await client.read_holding_registers(1000, count=2, device_id=1)
    assert read.registers == [21, 4]


async def test_only_holding_registers_are_served(simulator, client):
    read = await client.read_holding_registers(0, count=3, device_id=1)
    assert read.registers == [4, 0, 4]  # D0 position, D1, D2 latched target
    for refused in (
        client.read_input_registers(1000, count=2, device_id=1),  # FC04
        client.read_coils(0, count=8, device_id=1),  # FC01
        client.read_discrete_inputs(0, count=8, device_id=1),  # FC02
        client.read_input_registers(5000, count=1, device_id=1),  # function before address
    ):
        assert exception_code(await refused) == ILLEGAL_FUNCTION
    assert simulator.reads_refused == 4
    beyond = await client.read_holding_registers(1099, count=2, device_id=1)  # D1100
    assert exception_code(beyond) == ILLEGAL_DATA_ADDRESS
    assert simulator.requests_served == 1


async def mbpoll(port: int, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(MBPOLL),
        *("-m", "tcp", "-p", str(port), "-0", "-1", "-o", "5", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.skipif(MBPOLL is None, reason="mbpoll is not installed (tests/integration/deps.mk)")
async def test_mbpoll_reads_the_registers_and_gets_the_documented_exceptions(simulator):
    code, out, _ = await mbpoll(simulator.port, "-a", "1", "-r", "1000", "-c", "2", "127.0.0.1")
    assert code == 0
    assert "[1000]: \t21" in out and "[1001]: \t4" in out
    code, _, err = await mbpoll(simulator.port, "-a", "7", "-r", "1000", "127.0.0.1")
    assert code != 0 and "Target device failed to respond" in err
    code, _, err = await mbpoll(simulator.port, "-a", "1", "-t", "3", "-r", "1000", "127.0.0.1")
    assert code != 0 and "Illegal function" in err  # input registers
    code, _, err = await mbpoll(simulator.port, "-a", "1", "-r", "2", "127.0.0.1", "9")
    assert code != 0 and "Illegal function" in err  # a write
    assert simulator.writes_refused == 1 and simulator.model.target_index == 4
