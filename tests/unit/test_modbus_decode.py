"""Pure Modbus telemetry logic: read planning and register decoding, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.config import ConfigError, default_config, parse_config
from carousel_gateway.plc.modbus import (
    MAX_REGISTERS_PER_READ,
    ModbusDecodeError,
    ReadBlock,
    RegisterMap,
    TelemetryReading,
    decode_registers,
    plan_reads,
    registers_from_blocks,
)
from carousel_gateway.plc.protocol import Reply
from carousel_gateway.plc.status import StatusWord

DEFAULT = RegisterMap()


def registers(position: int = 4, target: int = 4, status: int = 21) -> dict[int, int]:
    return {0: position, 1: 0, 2: target, 1000: status}


# -- read planning ---------------------------------------------------------------------------


def test_default_map_needs_two_reads_status_first() -> None:
    assert DEFAULT.read_plan() == (ReadBlock(1000, 1), ReadBlock(0, 3))


def test_registers_close_together_share_one_read() -> None:
    near = RegisterMap(position=1001, target=1002, status=1000)
    assert near.read_plan() == (ReadBlock(1000, 3),)


def test_status_block_goes_first_even_when_it_is_not_the_lowest() -> None:
    plan = RegisterMap(position=10, target=500, status=300).read_plan()
    assert plan[0] == ReadBlock(300, 1)
    assert set(plan[1:]) == {ReadBlock(10, 1), ReadBlock(500, 1)}


def test_a_block_never_exceeds_the_function_03_limit() -> None:
    assert plan_reads([0, 124]) == [ReadBlock(0, 125)]
    assert plan_reads([0, 125]) == [ReadBlock(0, 1), ReadBlock(125, 1)]
    assert plan_reads([5, 6, 7], max_count=2) == [ReadBlock(5, 2), ReadBlock(7, 1)]
    with pytest.raises(ValueError):
        plan_reads([1], max_count=0)


@given(
    st.lists(st.integers(0, 65535), min_size=3, max_size=3, unique=True),
    st.integers(1, MAX_REGISTERS_PER_READ),
)
def test_any_plan_covers_every_register_within_limits(addresses: list[int], limit: int) -> None:
    position, target, status = addresses
    register_map = RegisterMap(position=position, target=target, status=status)
    plan = register_map.read_plan(limit)
    for address in addresses:
        assert sum(b.address <= address < b.address + b.count for b in plan) == 1
    assert all(1 <= b.count <= limit for b in plan)
    assert plan[0].address <= status < plan[0].address + plan[0].count
    assert len(plan) <= 3


def test_register_map_refuses_shared_or_impossible_addresses() -> None:
    with pytest.raises(ValueError, match="differ"):
        RegisterMap(position=0, target=0, status=1000)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        RegisterMap(status=70000)


def test_block_names_use_d_numbers() -> None:
    assert str(ReadBlock(1000, 1)) == "D1000"
    assert str(ReadBlock(0, 3)) == "D0..D2"


# -- decoding --------------------------------------------------------------------------------


def test_decode_idle_reading() -> None:
    reading = decode_registers(registers(position=4, target=4, status=21))
    assert reading.status == StatusWord(21)
    assert reading.position_index == 4 and reading.target_index == 4
    assert reading.registers == ((0, 4), (2, 4), (1000, 21))
    assert reading.reply == Reply(status=StatusWord(21), position_index=4)
    assert reading.desync is False


@pytest.mark.parametrize(("raw", "running", "descending"), [(23, True, False), (151, True, True)])
def test_decode_moving_readings(raw: int, running: bool, descending: bool) -> None:
    reading = decode_registers(registers(position=3, target=9, status=raw))
    assert reading.status.running is running
    assert reading.status.descending is descending
    assert reading.desync is False  # moving towards D2 is not a desync


def test_idle_with_target_elsewhere_is_a_desync() -> None:
    assert decode_registers(registers(position=3, target=9, status=21)).desync is True
    # A stop by e-stop (READY and PARADA bits low) with the target latched: still a desync.
    assert decode_registers(registers(position=3, target=9, status=0b00000100)).desync is True


def test_decode_uses_the_configured_map() -> None:
    register_map = RegisterMap(position=1001, target=1002, status=1000)
    reading = decode_registers({1000: 17, 1001: 7, 1002: 7}, register_map)
    assert reading.status.remote is False and reading.position_index == 7


def test_registers_from_blocks_maps_addresses_and_checks_lengths() -> None:
    values = registers_from_blocks([(ReadBlock(1000, 1), [21]), (ReadBlock(0, 3), [5, 0, 5])])
    assert values == {1000: 21, 0: 5, 1: 0, 2: 5}
    with pytest.raises(ModbusDecodeError, match="expected 3"):
        registers_from_blocks([(ReadBlock(0, 3), [5, 0])])


def test_a_status_register_beyond_one_byte_is_refused_not_masked() -> None:
    with pytest.raises(ModbusDecodeError, match="not a status byte"):
        decode_registers(registers(status=0x0115))


def test_a_large_position_is_kept_whole_for_the_machine_to_range_check() -> None:
    # Masking 300 to one byte would alias it to bucket 44; the machine must see 300.
    assert decode_registers(registers(position=300)).position_index == 300


@pytest.mark.parametrize("bad", [-1, 0x10000, True, None])
def test_missing_or_impossible_values_are_refused(bad: object) -> None:
    values: dict[int, object] = {**registers()}
    if bad is None:
        del values[2]
    else:
        values[2] = bad
    with pytest.raises(ModbusDecodeError):
        decode_registers(values)  # type: ignore[arg-type]


def test_reading_is_immutable() -> None:
    reading = TelemetryReading(StatusWord(21), 1, 1)
    with pytest.raises(AttributeError):
        reading.position_index = 2  # type: ignore[misc]


# -- config ----------------------------------------------------------------------------------


def machine(**fields: object) -> dict[str, object]:
    return {"id": "m1", "name": "Carrusel", "host": "10.0.0.5", **fields}


def test_telemetry_defaults_to_port3200_with_modbus_defaults_from_the_domain() -> None:
    config = parse_config({"machines": [machine()]}).machines[0]
    assert config.telemetry == "port3200"
    assert (config.modbus_port, config.modbus_unit) == (502, 1)
    assert (config.position_register, config.target_register, config.status_register) == (
        0,
        2,
        1000,
    )
    assert (config.modbus_poll_active_s, config.modbus_poll_idle_s) == (0.1, 0.5)


def test_default_config_runs_machine_2_on_modbus() -> None:
    machines = {m.id: m for m in default_config().machines}
    assert machines["machine_1"].telemetry == "port3200"
    assert machines["machine_2"].telemetry == "modbus"
    assert machines["machine_2"].modbus_port == 0  # a free port for the embedded simulator


def test_modbus_port_0_only_for_an_embedded_simulator() -> None:
    with pytest.raises(ConfigError, match="modbus_port 0"):
        parse_config({"machines": [machine(telemetry="modbus", modbus_port=0)]})


def test_registers_must_differ_in_config() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        parse_config({"machines": [machine(position_register=2)]})
