"""Chaos on the port-3200 byte stream: bytes nobody asked for must never be misread.

The PLC protocol has no framing, so one stray byte shifts every later reply by one: a status
taken for a position, a stale reply for a fresh one. For each simulator mode that sends
such bytes (a trailing byte after each reply, each reply twice, junk at a steady pace):

* no MOVE reaches a PLC in emergency stop (the simulator counts every MOVE it reads);
* no ``move_completed`` is published while the PLC's own carousel stands elsewhere or is
  still turning (checked at the instant of publication, against the simulator's model);
* the link is dropped with the reason, and the machine recovers by itself once the PLC
  behaves.

The simulator answers after 30 ms and sends its stray bytes 10 ms after a reply, so they
arrive while the gateway waits for its next reply: the case that used to be misread.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import ConnectionChanged, Event, MoveCompleted, MoveFailed
from carousel_gateway.plc.connection import OUT_OF_STEP, ConnectionState
from carousel_gateway.plc.protocol import Command
from carousel_gateway.sim.carousel import Fault
from carousel_gateway.sim.server import FaultMode, SimulatorServer

pytestmark = pytest.mark.asyncio

STREAM_FAULTS = [FaultMode.TRAILING_BYTE, FaultMode.DOUBLE_REPLY, FaultMode.STREAM_JUNK]
#: Replies 30 ms after the request; stray bytes 10 ms after a reply (junk every 13 ms).
WIRE = {"reply_delay_s": 0.03, "stray_delay_s": 0.01, "junk_period_s": 0.013}
#: Position index 23 (bucket 24): the status byte of a carousel turning upwards (0x17) read
#: as a position after a shift, so a shifted reading "arrives" there while it still turns.
TARGET_INDEX = 23


async def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait until ``condition()`` holds (for states that publish no event)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - nothing publishes these states
            await asyncio.sleep(0.01)


def connected(machine: Any) -> Callable[[], bool]:
    return lambda: (
        machine.connection.state is ConnectionState.CONNECTED
        and machine.snapshot.raw_status is not None
        and not machine.busy
    )


async def move_once_clean(machine: Any, position: int) -> Any:
    """Execute a MOVE, trying again while it is refused as CONNECTION_ERROR (nothing was
    sent: a stray byte still in flight from the fault faulted the link first)."""
    for _ in range(20):
        await eventually(connected(machine))
        try:
            return await machine.execute(Command.MOVE, position)
        except GatewayError as exc:
            if exc.code is not ErrorCode.CONNECTION_ERROR:
                raise
    raise AssertionError("the link never stayed clean for a MOVE")


class ArrivalAudit:
    """Checks each MoveCompleted against the simulated PLC at the instant it is published."""

    def __init__(self, server: SimulatorServer, machine: Any) -> None:
        self.server = server
        self.machine = machine
        self.completed = 0
        self.false: list[str] = []
        machine.bus.subscribe(self._check)

    def _check(self, event: Event) -> None:
        if not isinstance(event, MoveCompleted):
            return
        self.completed += 1
        model = self.server.model
        index = self.machine.to_index(event.position)
        if model.moving or model.position_index != index:
            self.false.append(
                f"move_completed at {event.position} while the PLC stands at index "
                f"{model.position_index}{' and turns' if model.moving else ''}"
            )


@pytest.mark.parametrize("mode", STREAM_FAULTS, ids=str)
async def test_no_move_reaches_a_plc_in_emergency_stop(simulator_factory, machine_factory, mode):
    server = await simulator_factory(start_index=10, **WIRE)
    server.model.set_fault(Fault.EMERGENCY_STOP, True)
    machine, recorder = await machine_factory(server)
    await eventually(connected(machine))
    server.set_fault_mode(mode)
    outcomes: Counter[str] = Counter()
    for _ in range(8):
        await eventually(connected(machine))
        # A STATUS at once followed by a MOVE: the MOVE's interlock reading is the one the
        # STATUS reply's stray byte lands in.
        try:
            await machine.execute(Command.STATUS, None)
        except GatewayError as exc:
            outcomes[f"status {exc.code.value}"] += 1
        try:
            await machine.execute(Command.MOVE, TARGET_INDEX + 1)
        except GatewayError as exc:
            outcomes[exc.code.value] += 1
        else:
            outcomes["accepted"] += 1
    assert server.moves_received == 0, outcomes
    assert outcomes["accepted"] == 0, outcomes
    assert set(outcomes) <= {
        ErrorCode.MACHINE_NOT_READY.value,
        ErrorCode.CONNECTION_ERROR.value,
        "status CONNECTION_ERROR",
    }, outcomes
    if mode is not FaultMode.DOUBLE_REPLY:  # a duplicate fits a reply: seen one exchange later
        assert outcomes[ErrorCode.CONNECTION_ERROR.value] or outcomes["status CONNECTION_ERROR"]
    # Every fault was reported with its reason, and the machine recovers by itself.
    reasons = [e.reason or "" for e in recorder.of_type(ConnectionChanged)]
    assert any(OUT_OF_STEP in r for r in reasons), reasons
    assert machine.connection.out_of_step_faults >= 1
    server.set_fault_mode(FaultMode.NONE)
    await eventually(connected(machine))
    with pytest.raises(GatewayError) as refused:
        await machine.execute(Command.MOVE, TARGET_INDEX + 1)
    assert refused.value.code is ErrorCode.MACHINE_NOT_READY
    assert server.moves_received == 0


@pytest.mark.parametrize("mode", STREAM_FAULTS, ids=str)
async def test_no_false_arrival_while_stray_bytes_arrive(simulator_factory, machine_factory, mode):
    server = await simulator_factory(start_index=10, **WIRE)
    machine, _ = await machine_factory(server, poll_min_gap_s=0.001)
    audit = ArrivalAudit(server, machine)
    await eventually(connected(machine))
    outcomes: Counter[str] = Counter()
    for target_index in (TARGET_INDEX, 10, TARGET_INDEX, 10):
        await eventually(connected(machine))
        await eventually(lambda: not server.model.moving)
        # The MOVE goes out on a clean stream; the stray bytes start while it travels.
        executed = await move_once_clean(machine, target_index + 1)
        server.set_fault_mode(mode)
        if executed.outcome is not None:
            outcome = await asyncio.wait_for(executed.outcome, 15)
            outcomes[type(outcome).__name__] += 1
        server.set_fault_mode(FaultMode.NONE)
        await eventually(connected(machine))
    assert not audit.false, audit.false
    # Seen for what it was: out of step, or (two junk bytes making up a reply) impossible.
    connection = machine.connection
    assert connection.out_of_step_faults + connection.bad_replies >= 1, outcomes
    # Once the PLC behaves, a move arrives and is reported as it truly is.
    await eventually(lambda: not server.model.moving)
    before = audit.completed
    target = 3 if machine.snapshot.position != 4 else 5
    executed = await move_once_clean(machine, target)
    assert executed.outcome is not None
    done = await asyncio.wait_for(executed.outcome, 15)
    assert isinstance(done, MoveCompleted) and done.position == target
    assert audit.completed == before + 1 and not audit.false


# -- a MOVE whose outcome is unknown, seen by two WebSocket clients --------------------------


async def test_unknown_move_outcome_locks_the_machine_for_every_client(gateway_factory, tmp_path):
    """First client: MOVE_OUTCOME_UNKNOWN (not CONNECTION_ERROR, which means nothing was
    sent), journalled as sent. Second client: refused with the reason until a reading
    settles the first MOVE. The PLC reads one MOVE, never two."""
    from carousel_gateway.client import CarouselClient, ServerError
    from tests.integration.conftest import gateway_config

    config = gateway_config(journal={"path": str(tmp_path / "j.db")})
    gateway = await gateway_factory(config)
    sim = gateway.simulators["machine_1"]
    sim.settings.fault_only_on = Command.MOVE
    url = f"ws://127.0.0.1:{gateway.websocket.port}"
    async with CarouselClient(url) as first, CarouselClient(url) as second:
        sim.set_fault_mode(FaultMode.SILENT)  # the MOVE is read, never answered nor acted on
        with pytest.raises(ServerError) as unknown:
            await first.move("machine_1", 20)
        assert unknown.value.code == ErrorCode.MOVE_OUTCOME_UNKNOWN.value
        assert sim.moves_received == 1
        sim.set_fault_mode(FaultMode.NONE)
        with pytest.raises(ServerError) as locked:
            await second.move("machine_1", 7)
        assert locked.value.code == ErrorCode.MACHINE_NOT_READY.value
        assert locked.value.reasons == ("previous_move_unconfirmed",)
        assert sim.moves_received == 1
        # Settled by a reading past move_start_timeout_s: it never started. Then moves work.
        machine = gateway.fleet.get("machine_1")
        await eventually(lambda: not machine.busy)
        assert isinstance(machine.last_outcome, MoveFailed)
        assert machine.last_outcome.reasons == ("not_started",)
        done = await second.move("machine_1", 7, wait=True, arrival_timeout=5)
        assert done.type == "move_completed"
        assert sim.moves_received == 2
        await gateway.journal.flush()
        page = await first.history("machine_1", kinds=["command"])
        rows = [e.model_extra for e in page.entries]
        unknown_row = next(r for r in rows if r["argument"] == 20)
        assert unknown_row["code"] == "MOVE_OUTCOME_UNKNOWN"
        assert unknown_row["outcome"] == "failed" and unknown_row["reasons"] == ["not_started"]


async def test_rest_reports_an_unknown_move_outcome_and_why_moves_are_refused(gateway_factory):
    """REST: 504 MOVE_OUTCOME_UNKNOWN for the MOVE, diagnostics name the lock, and the
    metric says so while it lasts."""
    import httpx

    from tests.integration.conftest import gateway_config

    gateway = await gateway_factory(gateway_config(2))
    sim = gateway.simulators["machine_1"]
    sim.settings.fault_only_on = Command.MOVE
    sim.set_fault_mode(FaultMode.SILENT)
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        reply = await http.post("/v1/machines/machine_1/move", json={"position": 20})
        assert reply.status_code == 504, reply.text
        assert reply.json()["code"] == "MOVE_OUTCOME_UNKNOWN"
        diagnostics = (await http.get("/v1/machines/machine_1/diagnostics")).json()["data"]
        refusal = diagnostics["move_refusal"]
        assert refusal["code"] == "MACHINE_NOT_READY"
        assert refusal["reasons"] == ["previous_move_unconfirmed"]
        metrics = (await http.get("/metrics")).text
        assert 'carousel_move_outcome_unknown{machine="machine_1"} 1.0' in metrics
        second = await http.post("/v1/machines/machine_1/move", json={"position": 7})
        assert second.status_code == 409 and second.json()["code"] == "MACHINE_NOT_READY"
        assert sim.moves_received == 1
        sim.set_fault_mode(FaultMode.NONE)
        machine = gateway.fleet.get("machine_1")
        await eventually(lambda: not machine.busy)
        metrics = (await http.get("/metrics")).text
        assert 'carousel_move_outcome_unknown{machine="machine_1"} 0.0' in metrics
