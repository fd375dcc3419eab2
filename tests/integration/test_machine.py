"""A Machine driving a simulator over real loopback TCP: moves, faults, links, layouts."""

from __future__ import annotations

import asyncio

import pytest

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandRefused,
    ConnectionChanged,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    StatusChanged,
)
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.protocol import WORD_LAYOUT
from carousel_gateway.sim.carousel import Fault
from carousel_gateway.sim.server import LinkAction

pytestmark = pytest.mark.asyncio


def is_connected(event: object) -> bool:
    return isinstance(event, StatusChanged) and event.snapshot.raw_status is not None


async def ready(machine, recorder):
    """Wait until the machine has a first reading."""
    await recorder.wait_for(is_connected)
    assert machine.snapshot.connection is ConnectionState.CONNECTED


async def test_move_completes_at_target(simulator_factory, machine_factory):
    server = await simulator_factory(start_index=0)
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    assert machine.snapshot.position == 1  # index 0 in the API's 1-based numbering
    assert machine.snapshot.raw_status == 21

    executed = await machine.execute(1, 6)
    assert executed.accepted.skipped is False
    assert executed.accepted.result == "Comando ejecutado correctamente"
    outcome = await asyncio.wait_for(executed.outcome, 5)

    assert isinstance(outcome, MoveCompleted)
    assert outcome.position == 6
    assert server.model.position_index == 5
    assert machine.snapshot.position == 6
    assert machine.snapshot.status.running is False
    # The snapshot showed motion on the way (RUN bit) and positions in between.
    seen = [e.snapshot for e in recorder.of_type(StatusChanged)]
    assert any(s.status is not None and s.status.running for s in seen)
    assert {s.position for s in seen} >= {1, 6}
    assert server.model.moves_started == 1


async def test_descending_move_sets_direction_bit(simulator_factory, machine_factory):
    server = await simulator_factory(start_index=2)
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    executed = await machine.execute(1, 30)  # index 29: two steps back across 0
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveCompleted) and outcome.position == 30
    moving = [
        e.snapshot.status
        for e in recorder.of_type(StatusChanged)
        if e.snapshot.status and e.snapshot.status.running
    ]
    assert moving and all(status.descending for status in moving)


async def test_move_to_current_position_is_skipped_and_not_sent(simulator_factory, machine_factory):
    server = await simulator_factory(start_index=9)
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    executed = await machine.execute(1, 10)
    assert executed.accepted.skipped is True
    assert executed.outcome is None
    assert server.model.moves_started == 0  # nothing sent: the full-turn quirk avoided


async def test_estop_mid_travel_fails_the_move_naming_it(simulator_factory, machine_factory):
    server = await simulator_factory(start_index=0)
    server.model.seconds_per_position = 0.2
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    executed = await machine.execute(1, 15)
    await recorder.wait_for(lambda e: isinstance(e, StatusChanged) and e.snapshot.position == 2)
    server.model.set_fault(Fault.EMERGENCY_STOP, True)

    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveFailed)
    assert "PARADA_EMERGENCIA" in outcome.reasons
    assert outcome.target == 15
    assert outcome.position is not None and outcome.position < 15
    raised = await recorder.wait_for(lambda e: isinstance(e, FaultRaised))
    assert "PARADA_EMERGENCIA" in raised.keys

    # While the e-stop is pressed, a move is refused with the interlock reason.
    with pytest.raises(GatewayError) as refused:
        await machine.execute(1, 20)
    assert refused.value.code is ErrorCode.MACHINE_NOT_READY
    assert "PARADA_EMERGENCIA" in refused.value.reasons
    assert server.model.moves_started == 1
    assert recorder.of_type(CommandRefused)[-1].code == "MACHINE_NOT_READY"

    server.model.set_fault(Fault.EMERGENCY_STOP, False)
    cleared = await recorder.wait_for(lambda e: isinstance(e, FaultCleared))
    assert "PARADA_EMERGENCIA" in cleared.keys


@pytest.mark.parametrize(
    ("fault", "key"),
    [
        (Fault.MANUAL_MODE, "MODO_OPERACION"),
        (Fault.ALARM, "ALARMA"),
        (Fault.VFD_FAULT, "VFD"),
        (Fault.POSITIONING_ERROR, "ERROR_POSICIONAMIENTO"),
    ],
)
async def test_each_interlock_refuses_a_move_with_its_key(
    simulator_factory, machine_factory, fault, key
):
    server = await simulator_factory()
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    server.model.set_fault(fault, True)
    with pytest.raises(GatewayError) as refused:
        await machine.execute(1, 5)
    assert refused.value.code is ErrorCode.MACHINE_NOT_READY
    assert refused.value.reasons == (key,)
    assert server.model.moves_started == 0


async def test_second_command_while_moving_is_busy(simulator_factory, machine_factory):
    server = await simulator_factory()
    server.model.seconds_per_position = 0.1
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    executed = await machine.execute(1, 10)
    with pytest.raises(GatewayError) as busy:
        await machine.execute(1, 20)
    assert busy.value.code is ErrorCode.BUSY
    # A concurrent pair: exactly one is taken.
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveCompleted)
    results = await asyncio.gather(
        machine.execute(1, 12), machine.execute(1, 14), return_exceptions=True
    )
    taken = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, GatewayError)]
    assert len(taken) == 1 and len(refused) == 1
    assert refused[0].code is ErrorCode.BUSY
    assert server.model.moves_started == 2


@pytest.mark.parametrize(
    ("command", "argument"),
    [(1, 0), (1, 31), (1, None), (7, 3), (1, True), (1, "5")],
)
async def test_invalid_commands_are_refused_before_anything_is_sent(
    simulator_factory, machine_factory, command, argument
):
    server = await simulator_factory()
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    served = server.requests_served
    with pytest.raises(GatewayError) as refused:
        await machine.execute(command, argument)
    assert refused.value.code is ErrorCode.INVALID_COMMAND
    assert server.model.moves_started == 0
    # Only background polls (STATUS) reached the PLC.
    assert server.requests_served >= served


async def test_status_command_reads_fresh_state(simulator_factory, machine_factory):
    server = await simulator_factory(start_index=4)
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    executed = await machine.execute(0, None)
    assert executed.accepted.command == 0
    assert isinstance(recorder.of_type(CommandAccepted)[-1], CommandAccepted)
    assert machine.snapshot.position == 5


async def test_simulator_killed_and_restarted_reconnects_by_itself(
    simulator_factory, machine_factory
):
    server = await simulator_factory()
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    mark = len(recorder.events)
    await server.stop()
    await recorder.wait_for(
        lambda e: isinstance(e, ConnectionChanged) and e.state is not ConnectionState.CONNECTED,
        start=mark,
    )
    assert machine.snapshot.connection is not ConnectionState.CONNECTED
    assert machine.snapshot.position == 1  # last known values are kept
    with pytest.raises(GatewayError) as refused:
        await machine.execute(1, 3)
    assert refused.value.code is ErrorCode.CONNECTION_ERROR

    mark = len(recorder.events)
    await server.start()
    await recorder.wait_for(
        lambda e: isinstance(e, ConnectionChanged) and e.state is ConnectionState.CONNECTED,
        timeout=10,
        start=mark,
    )
    executed = await machine.execute(1, 3)
    assert isinstance(await asyncio.wait_for(executed.outcome, 5), MoveCompleted)


async def test_single_session_simulator_with_release_time_is_reconnected(
    simulator_factory, machine_factory
):
    server = await simulator_factory(single_session=True, release_time_s=3.0)
    machine, recorder = await machine_factory(
        server, backoff_initial_s=0.2, backoff_max_s=1.0, breaker_cooldown_s=1.0
    )
    await ready(machine, recorder)
    assert server.listening is False  # refuses others while we are connected
    mark = len(recorder.events)
    server.link(LinkAction.DROP)
    await recorder.wait_for(
        lambda e: isinstance(e, ConnectionChanged) and e.state is not ConnectionState.CONNECTED,
        start=mark,
    )
    loop = asyncio.get_running_loop()
    dropped_at = loop.time()
    await recorder.wait_for(
        lambda e: isinstance(e, ConnectionChanged) and e.state is ConnectionState.CONNECTED,
        timeout=15,
        start=mark,
    )
    assert loop.time() - dropped_at >= 2.9  # it really was refused during the release time
    assert server.connections_accepted == 2
    assert machine.connection.reconnects == 1


async def test_word_layout_of_200_bytes_is_read(simulator_factory, machine_factory):
    server = await simulator_factory(start_index=17, layout=WORD_LAYOUT)
    machine, recorder = await machine_factory(
        server, reply={"reply_length": 200, "status_offset": 0, "position_offset": 2}
    )
    await ready(machine, recorder)
    assert machine.snapshot.position == 18
    assert machine.snapshot.raw_status == 21
    executed = await machine.execute(1, 20)
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveCompleted) and outcome.position == 20


async def test_stalled_plc_times_out_without_blocking_other_machines(
    simulator_factory, machine_factory
):
    stalled_server = await simulator_factory()
    healthy_server = await simulator_factory()
    stalled, stalled_events = await machine_factory(stalled_server, request_timeout_s=0.3)
    healthy, healthy_events = await machine_factory(healthy_server)
    await ready(stalled, stalled_events)
    await ready(healthy, healthy_events)

    stalled_server.link(LinkAction.STALL)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(GatewayError) as failed:
        await stalled.execute(1, 5)
    elapsed = loop.time() - started
    assert failed.value.code in (ErrorCode.PLC_TIMEOUT, ErrorCode.CONNECTION_ERROR)
    assert elapsed < 0.3 + 0.5  # the configured timeout, with loop slack
    assert stalled_server.model.moves_started == 0

    # The other machine keeps polling and moving meanwhile.
    served = healthy_server.requests_served
    executed = await healthy.execute(1, 8)
    assert isinstance(await asyncio.wait_for(executed.outcome, 5), MoveCompleted)
    assert healthy_server.requests_served > served + 2

    await stalled_events.wait_for(
        lambda e: isinstance(e, ConnectionChanged) and e.state is not ConnectionState.CONNECTED
    )
    stalled_server.link(LinkAction.RESUME)
    await stalled_events.wait_for(
        lambda e: isinstance(e, ConnectionChanged) and e.state is ConnectionState.CONNECTED,
        timeout=10,
        start=len(stalled_events.events) - 1,
    )


async def test_move_timeout_is_reported(simulator_factory, machine_factory):
    server = await simulator_factory()
    server.model.seconds_per_position = 1.0
    machine, recorder = await machine_factory(server, move_timeout_s=0.3)
    await ready(machine, recorder)
    executed = await machine.execute(1, 10)
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveFailed) and outcome.reasons == ("timeout",)


async def test_link_dropped_mid_move_reports_connection_lost(simulator_factory, machine_factory):
    server = await simulator_factory(single_session=False)
    server.model.seconds_per_position = 0.2
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    executed = await machine.execute(1, 10)
    server.link(LinkAction.DROP)
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveFailed) and outcome.reasons == ("connection_lost",)
    assert server.model.moves_started == 1  # never retried


async def test_reserved_machine_refuses_other_moves_and_admits_its_jobs(
    simulator_factory, machine_factory
):
    from carousel_gateway.fleet.events import Origin, OriginChannel, Reservation

    server = await simulator_factory(start_index=0)
    machine, recorder = await machine_factory(server)
    await ready(machine, recorder)
    machine.reserve(Reservation("workstation station_1", ("J-7",)))

    for origin in (
        Origin("wms", OriginChannel.WS),
        Origin("job:J-8", OriginChannel.JOB),  # another job
        Origin("job:J-7", OriginChannel.REST),  # the job's name on another channel
    ):
        with pytest.raises(GatewayError) as refused:
            await machine.execute(1, 6, origin)
        assert refused.value.code is ErrorCode.MACHINE_RESERVED
        assert "station_1" in refused.value.message and "J-7" in refused.value.message
    assert server.model.moves_started == 0
    assert [e.code for e in recorder.of_type(CommandRefused)] == ["MACHINE_RESERVED"] * 3
    # A STATUS read is not a move: it passes.
    await machine.execute(0, None, Origin("wms", OriginChannel.WS))

    executed = await machine.execute(1, 6, Origin("job:J-7", OriginChannel.JOB))
    assert isinstance(await asyncio.wait_for(executed.outcome, 5), MoveCompleted)
    machine.reserve(None)  # paused: manual moves are allowed again
    executed = await machine.execute(1, 2, Origin("wms", OriginChannel.WS))
    assert isinstance(await asyncio.wait_for(executed.outcome, 5), MoveCompleted)
    assert server.model.moves_started == 2
