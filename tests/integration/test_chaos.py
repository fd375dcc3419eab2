"""Chaos: a PLC link failing in each way the field has seen, against a whole gateway.

For every fault mode of the simulator, on ``machine_1`` while ``machine_2`` stays healthy:

* the machine's state says what is wrong (``disconnected``/``error`` with the reason);
* a move asked for meanwhile is refused with a code, and no MOVE is ever sent twice
  (the simulator counts every MOVE it reads);
* ``machine_2`` keeps being polled and moved, and a client's requests keep being answered;
* once the PLC behaves again, the machine reconnects by itself and moves.

The assertions are on behaviour (polls keep coming, replies come), not on timing numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import ConnectionChanged, MoveCompleted, MoveFailed
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.protocol import Command
from carousel_gateway.sim.server import FaultMode
from tests.integration.conftest import EventRecorder, gateway_config, wait_until
from tests.integration.wsclient import TestClient

pytestmark = pytest.mark.asyncio

DOWN = (ConnectionState.DISCONNECTED, ConnectionState.ERROR)
#: Each link fault, the reason the machine must give, and the codes a move then gets.
LINK_FAULTS = [
    (FaultMode.REFUSE, "connect failed", {"CONNECTION_ERROR"}),
    (FaultMode.SILENT, "no reply within", {"CONNECTION_ERROR", "PLC_TIMEOUT"}),
    (FaultMode.SHORT, "incomplete reply (1 of 2 bytes)", {"CONNECTION_ERROR", "PLC_TIMEOUT"}),
    (FaultMode.GARBAGE, "invalid reply: position index 255", {"CONNECTION_ERROR"}),
    (FaultMode.CLOSE_MID_REPLY, "connection lost", {"CONNECTION_ERROR"}),
    # 2 s replies against the tests' 0.5 s request timeout (1.5 s by default).
    (FaultMode.SLOW, "no reply within", {"CONNECTION_ERROR", "PLC_TIMEOUT"}),
]


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds, looking every 20 ms (for states that publish no
    event, such as a reading that changed nothing)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - nothing publishes these states
            await asyncio.sleep(0.02)


def fresh_and_connected(machine: Any, since: float) -> Callable[[], bool]:
    """The machine is connected and has read its PLC after ``since`` (wall clock)."""
    return lambda: (
        machine.snapshot.connection is ConnectionState.CONNECTED
        and (machine.snapshot.updated_at or 0) > since
        and not machine.busy
    )


def url(gateway: Any) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


def move(machine_id: str, position: int) -> dict[str, Any]:
    return {
        "type": "send_command",
        "machine_id": machine_id,
        "command": {"command": 1, "argument": position},
    }


async def healthy_machine_is_unaffected(gateway: Any, client: TestClient, target: int) -> None:
    """machine_2 keeps its polls, moves and answers while machine_1 is in trouble."""
    sim = gateway.simulators["machine_2"]
    polls = sim.requests_received[Command.STATUS]
    for _ in range(5):
        status = await client.request({"type": "get_status", "machine_id": "machine_2"})
        assert status["connection_status"] == "connected"
        assert (await client.request({"type": "ping"}))["type"] == "pong"
    reply = await client.request(move("machine_2", target))
    assert reply["type"] == "command_result", reply
    done = await client.wait_for(
        lambda m: m["type"] in ("move_completed", "move_failed") and m["machine_id"] == "machine_2"
    )
    assert done["type"] == "move_completed" and done["position"] == target
    # Its poll loop never stopped (0.05 s idle, 0.01 s moving: dozens by now).
    assert sim.requests_received[Command.STATUS] - polls >= 5


async def recovers_and_moves_once(gateway: Any, client: TestClient, target: int) -> None:
    machine = gateway.fleet.get("machine_1")
    sim = gateway.simulators["machine_1"]
    sim.set_fault_mode(FaultMode.NONE)
    resumed = time.time()
    await eventually(fresh_and_connected(machine, resumed))
    # A request sent during the fault may still be timing out: one more good reading.
    await eventually(fresh_and_connected(machine, time.time()))
    assert machine.snapshot.raw_status == sim.model.status_byte()
    before = sim.moves_received
    reply = await client.request(move("machine_1", target))
    assert reply["type"] == "command_result", reply
    done = await client.wait_for(
        lambda m: m["type"] in ("move_completed", "move_failed") and m["machine_id"] == "machine_1"
    )
    assert done["type"] == "move_completed" and done["position"] == target
    assert sim.moves_received == before + 1
    assert machine.snapshot.position == sim.model.position_index + 1


@pytest.fixture
async def chaos(gateway_factory):
    gateway = await gateway_factory(gateway_config(2))
    client = await TestClient.open(url(gateway))
    await client.next()
    yield gateway, client, EventRecorder(gateway.fleet.bus)
    await client.close()


@pytest.mark.parametrize(("mode", "reason", "codes"), LINK_FAULTS, ids=lambda v: str(v)[:20])
async def test_link_fault_is_reported_isolated_and_recovered(chaos, mode, reason, codes):
    gateway, client, recorder = chaos
    machine = gateway.fleet.get("machine_1")
    sim = gateway.simulators["machine_1"]
    sim.set_fault_mode(mode)

    # The state is accurate, with the reason.
    event = await recorder.wait_for(
        lambda e: (
            isinstance(e, ConnectionChanged)
            and e.machine_id == "machine_1"
            and e.state in DOWN
            and reason in (e.reason or "")
        ),
        timeout=10,
    )
    assert machine.connection.last_error is not None
    status = await client.request({"type": "get_status", "machine_id": "machine_1"})
    assert status["connection_status"] in ("disconnected", "error", "connected")
    assert event.reason

    # A move now is refused with a code, and reaches the PLC at most once.
    reply = await client.request(move("machine_1", 9))
    assert reply["type"] == "error" and reply["code"] in codes, reply
    assert sim.moves_received <= 1

    await healthy_machine_is_unaffected(gateway, client, target=7)
    # The machine stays reported as broken while the fault lasts.
    if mode is not FaultMode.SLOW:  # a slow reply can still land between two timeouts
        assert (
            any(
                isinstance(e, ConnectionChanged) and e.machine_id == "machine_1" and e.state in DOWN
                for e in recorder.events[-50:]
            )
            or machine.snapshot.connection in DOWN
        )

    await recovers_and_moves_once(gateway, client, target=12)
    assert sim.moves_received <= 2  # two move commands: never more MOVEs than that


async def test_garbage_reply_never_becomes_the_machine_state(chaos):
    gateway, client, recorder = chaos
    machine = gateway.fleet.get("machine_1")
    sim = gateway.simulators["machine_1"]
    sim.set_fault_mode(FaultMode.GARBAGE)
    await recorder.wait_for(
        lambda e: (
            isinstance(e, ConnectionChanged)
            and e.state in DOWN
            and "invalid reply" in (e.reason or "")
        ),
    )
    # 0xFF would read as moving, alarm, every fault: none of it may reach the snapshot.
    assert machine.snapshot.raw_status == 21
    assert machine.connection.bad_replies >= 1
    metrics = await asyncio.to_thread(lambda: gateway.http.api.metrics.render().decode())
    assert 'carousel_plc_bad_replies_total{machine="machine_1"}' in metrics
    await recovers_and_moves_once(gateway, client, target=4)


async def test_extra_bytes_drop_the_link_and_no_move_goes_out_on_them(chaos):
    """Bytes after a reply put the stream out of step: never discarded and read on."""
    gateway, client, recorder = chaos
    machine = gateway.fleet.get("machine_1")
    sim = gateway.simulators["machine_1"]
    sim.set_fault_mode(FaultMode.EXTRA)
    reply = await client.request(move("machine_1", 6))
    assert reply["type"] == "error" and reply["code"] == "CONNECTION_ERROR", reply
    assert "unrequested bytes from the PLC: link re-opened" in reply["error"]
    await recorder.wait_for(
        lambda e: (
            isinstance(e, ConnectionChanged)
            and e.machine_id == "machine_1"
            and e.state in DOWN
            and "unrequested bytes from the PLC" in (e.reason or "")
        )
    )
    assert sim.moves_received == 0
    assert machine.connection.out_of_step_faults >= 1
    metrics = await asyncio.to_thread(lambda: gateway.http.api.metrics.render().decode())
    assert 'carousel_plc_out_of_step_total{machine="machine_1"}' in metrics
    assert 'carousel_move_outcome_unknown{machine="machine_1"} 0.0' in metrics
    await healthy_machine_is_unaffected(gateway, client, target=5)
    await recovers_and_moves_once(gateway, client, target=6)


async def test_flapping_plc_is_followed_and_recovers(gateway_factory):
    gateway = await gateway_factory(gateway_config(2))
    machine = gateway.fleet.get("machine_1")
    sim = gateway.simulators["machine_1"]
    sim.settings.flap_period_s = 0.4
    recorder = EventRecorder(gateway.fleet.bus)
    client = await TestClient.open(url(gateway))
    await client.next()
    sim.set_fault_mode(FaultMode.FLAP)
    for _ in range(2):  # down, then up again by itself, twice, while still flapping
        start = len(recorder.events)
        down = await recorder.wait_for(
            lambda e: (
                isinstance(e, ConnectionChanged) and e.machine_id == "machine_1" and e.state in DOWN
            ),
            timeout=5,
            start=start,
        )
        assert down.reason
        await recorder.wait_for(
            lambda e: (
                isinstance(e, ConnectionChanged)
                and e.machine_id == "machine_1"
                and e.state is ConnectionState.CONNECTED
            ),
            timeout=5,
            start=start,
        )
    await healthy_machine_is_unaffected(gateway, client, target=5)
    await recovers_and_moves_once(gateway, client, target=8)
    assert sim.moves_received == 1
    assert machine.connection.reconnects >= 2
    await client.close()


async def test_slow_plc_within_the_timeout_stays_connected(gateway_factory):
    machines = [
        {
            "id": "machine_1",
            "name": "Slow",
            "kind": "simulator",
            "port": 0,
            "request_timeout_s": 3.0,
            "simulator": {"embedded": True, "seconds_per_position": 0.02},
        }
    ]
    gateway = await gateway_factory(gateway_config(machines))
    machine = gateway.fleet.get("machine_1")
    sim = gateway.simulators["machine_1"]
    sim.settings.slow_reply_s = 1.0
    sim.set_fault_mode(FaultMode.SLOW)
    served = sim.requests_served
    client = await TestClient.open(url(gateway))
    await client.next()
    for _ in range(3):  # answered from the snapshot at once, however slow the PLC
        status = await client.request({"type": "get_status", "machine_id": "machine_1"}, 0.5)
        assert status["connection_status"] == "connected"
    await eventually(lambda: sim.requests_served >= served + 2, timeout=5)
    assert machine.snapshot.connection is ConnectionState.CONNECTED
    assert machine.connection.latencies_s[-1] >= 1.0
    await client.close()


# -- a MOVE whose own reply breaks: sent once, never again ------------------------------------

#: Each way a MOVE's reply can break, and whether the simulated PLC acted on the MOVE.
MOVE_REPLY_FAULTS = [
    (FaultMode.SILENT, False),
    (FaultMode.SHORT, True),
    (FaultMode.GARBAGE, True),
    (FaultMode.CLOSE_MID_REPLY, True),
    (FaultMode.SLOW, True),
    (FaultMode.EXTRA, True),
]


@pytest.mark.parametrize(("mode", "acted"), MOVE_REPLY_FAULTS, ids=str)
async def test_move_whose_reply_breaks_is_sent_once_and_followed(
    simulator_factory, machine_factory, mode, acted
):
    """Sent, outcome unknown: reported as such, never retried, journalled as sent, every
    other MOVE refused until a reading settles it, and the carousel followed to its end."""
    server = await simulator_factory(fault_only_on=Command.MOVE, slow_reply_s=1.0)
    journal: list[Any] = []

    async def record(event: Any) -> None:
        journal.append(event)

    machine, recorder = await machine_factory(server)
    machine.command_journal = record
    await wait_until(machine.bus, lambda: machine.snapshot.raw_status is not None)
    server.set_fault_mode(mode)
    with pytest.raises(GatewayError) as unknown:
        await machine.execute(Command.MOVE, 20)
    assert unknown.value.code is ErrorCode.MOVE_OUTCOME_UNKNOWN
    assert server.moves_received == 1
    sent = journal[-1]
    assert sent.outcome_unknown and sent.command == Command.MOVE and sent.argument == 20
    # While it is unknown, a second MOVE is refused with the reason, and not sent.
    with pytest.raises(GatewayError) as locked:
        await machine.execute(Command.MOVE, 5)
    assert locked.value.code is ErrorCode.MACHINE_NOT_READY
    assert locked.value.reasons == ("previous_move_unconfirmed",)
    assert server.moves_received == 1
    server.set_fault_mode(FaultMode.NONE)
    outcome = await recorder.wait_for(
        lambda e: isinstance(e, MoveCompleted | MoveFailed) and e.command_id == sent.command_id,
        timeout=10,
    )
    if acted:
        # The PLC took it: the carousel is followed to the target and the arrival reported.
        assert isinstance(outcome, MoveCompleted) and outcome.position == 20
        assert server.model.position_index == 19 and not server.model.moving
    else:
        # It never moved: settled by a reading past the start timeout, and only then.
        assert isinstance(outcome, MoveFailed) and outcome.reasons == ("not_started",)
        assert outcome.duration_s >= machine.config.move_start_timeout_s
    assert server.model.moves_started == (1 if acted else 0)
    assert server.moves_received == 1
    assert not machine.busy
