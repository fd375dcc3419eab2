"""Pick jobs through a real gateway: embedded simulators over loopback, the real command
path (CommandRunner → Machine.execute), the job store on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import MoveCompleted, Origin, OriginChannel
from carousel_gateway.picking.planner import optimal_route
from carousel_gateway.picking.store import SqliteJobStore
from carousel_gateway.sim.carousel import Fault
from carousel_gateway.wire.jobs import (
    JobEventKind,
    JobEventMessage,
    JobLineState,
    JobState,
    JobSubmission,
)
from tests.integration.conftest import gateway_config


class JobEvents:
    """Records job events and lets a test wait for one (no sleeping)."""

    def __init__(self) -> None:
        self.events: list[JobEventMessage] = []
        self._changed = asyncio.Event()

    def __call__(self, message: JobEventMessage) -> None:
        self.events.append(message)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[JobEventMessage], bool], *, start: int = 0, timeout: float = 10
    ) -> JobEventMessage:
        async with asyncio.timeout(timeout):
            index = start
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    def kinds(self) -> list[JobEventKind]:
        return [event.event for event in self.events]


def picking_config(machines: tuple[str, ...] = ("machine_1",), **overrides: Any) -> Any:
    return gateway_config(
        2,
        workstations=[{"id": "station_1", "name": "Puesto 1", "machines": list(machines)}],
        # Moves at simulator speed come faster than a real operator's: lift the pace limit.
        limits={"commands_per_machine_per_second": 1000.0, "command_burst": 1000},
        **overrides,
    )


def job(job_id: str, lines: list[tuple[str, int]]) -> JobSubmission:
    return JobSubmission.model_validate(
        {
            "job_id": job_id,
            "workstation_id": "station_1",
            "lines": [
                {"line_id": f"L{i}", "machine_id": m, "position": p, "quantity": 3, "sku": f"S{i}"}
                for i, (m, p) in enumerate(lines, start=1)
            ],
        }
    )


async def started(gateway_factory: Any, config: Any) -> tuple[Any, JobEvents]:
    gateway = await gateway_factory(config)
    assert gateway.jobs is not None
    events = JobEvents()
    gateway.jobs.listen(events)
    return gateway, events


async def confirm_stop(gateway: Any, event: JobEventMessage) -> None:
    assert event.stop is not None
    for line in event.stop.lines:
        if line.state is JobLineState.PRESENTED:
            await gateway.jobs.confirm(line.job_id, line.line_id, line.quantity, None, "op")


def at_rest_at(gateway: Any, machine_id: str, position: int) -> bool:
    model = gateway.simulators[machine_id].model
    return not model.moving and model.position_index == position - 1


async def test_a_job_is_picked_to_completion_in_the_optimal_order(gateway_factory) -> None:
    gateway, events = await started(gateway_factory, picking_config())
    start = gateway.fleet.get("machine_1").snapshot.position
    positions = [17, 3, 28, 3, 9, 24]
    view, created = await gateway.jobs.submit(
        job("J1", [("machine_1", p) for p in positions]), "wms"
    )
    assert created and view.state is JobState.ACTIVE
    again, created = await gateway.jobs.submit(
        job("J1", [("machine_1", p) for p in positions]), "wms"
    )
    assert not created and again.job_id == "J1"
    with pytest.raises(GatewayError) as conflict:
        await gateway.jobs.submit(job("J1", [("machine_1", 4)]), "wms")
    assert conflict.value.code is ErrorCode.JOB_CONFLICT

    visited: list[int] = []
    index = 0
    while True:
        event = await events.wait_for(
            lambda e: e.event in (JobEventKind.STOP_PRESENTED, JobEventKind.JOB_COMPLETED),
            start=index,
        )
        index = events.events.index(event) + 1
        if event.event is JobEventKind.JOB_COMPLETED:
            break
        assert event.stop is not None
        # Presented means the carousel is at rest at that bucket, in front of the operator.
        assert at_rest_at(gateway, "machine_1", event.stop.position)
        assert gateway.jobs.workstation("station_1").current is not None
        visited.append(event.stop.position)
        await confirm_stop(gateway, event)

    assert visited == optimal_route(start, positions, 30)
    done = gateway.jobs.job("J1")
    assert done.state is JobState.COMPLETED and done.route == []
    assert {line.state for line in done.lines} == {JobLineState.PICKED}
    assert done.stats.moves == len(visited)
    assert done.stats.buckets_travelled > 0
    assert gateway.simulators["machine_1"].model.moves_started == len(visited)
    assert gateway.fleet.get("machine_1").reservation is None  # released when done
    assert events.kinds()[:2] == [JobEventKind.JOB_QUEUED, JobEventKind.JOB_STARTED]


async def test_a_pod_picks_ahead_and_never_moves_a_carousel_with_unconfirmed_lines(
    gateway_factory,
) -> None:
    gateway, events = await started(gateway_factory, picking_config(("machine_1", "machine_2")))
    lines = [("machine_1", 6), ("machine_1", 12), ("machine_2", 25), ("machine_2", 20)]
    await gateway.jobs.submit(job("P1", lines), "wms")

    def presented(machine_id: str) -> Callable[[JobEventMessage], bool]:
        return lambda e: (
            e.event is JobEventKind.STOP_PRESENTED
            and e.stop is not None
            and e.stop.machine_id == machine_id
        )

    first_1 = await events.wait_for(presented("machine_1"))
    first_2 = await events.wait_for(presented("machine_2"))
    assert (first_1.stop and first_1.stop.position, first_2.stop and first_2.stop.position) == (
        6,
        25,
    )
    station = gateway.jobs.workstation("station_1")
    assert len(station.presented) == 2
    moves_2 = gateway.simulators["machine_2"].model.moves_started
    # The operator picks at machine_1; machine_1 turns on while machine_2 still waits.
    mark = len(events.events)
    await confirm_stop(gateway, first_1)
    second_1 = await events.wait_for(presented("machine_1"), start=mark)
    assert second_1.stop is not None and second_1.stop.position == 12
    assert at_rest_at(gateway, "machine_2", 25)  # never moved with unconfirmed lines
    assert gateway.simulators["machine_2"].model.moves_started == moves_2
    # The operator is shown the carousel that was ready first.
    current = gateway.jobs.workstation("station_1").current
    assert current is not None and current.machine_id == "machine_2"

    await confirm_stop(gateway, first_2)
    await confirm_stop(gateway, second_1)
    last = await events.wait_for(presented("machine_2"), start=mark)
    assert last.stop is not None and last.stop.position == 20
    await confirm_stop(gateway, last)
    await events.wait_for(lambda e: e.event is JobEventKind.JOB_COMPLETED)
    assert gateway.jobs.job("P1").stats.moves == 4


async def test_an_emergency_stop_pauses_the_job_and_nothing_moves_until_resumed(
    gateway_factory,
) -> None:
    gateway, events = await started(gateway_factory, picking_config())
    model = gateway.simulators["machine_1"].model
    model.set_fault(Fault.EMERGENCY_STOP, True)
    await gateway.jobs.submit(job("E1", [("machine_1", 8)]), "wms")

    paused = await events.wait_for(lambda e: e.event is JobEventKind.JOB_PAUSED)
    assert paused.job.state is JobState.PAUSED
    assert paused.job.paused_reason is not None
    assert "PARADA_EMERGENCIA" in paused.job.paused_reason
    assert model.moves_started == 0  # refused on a fresh reading: no MOVE reached the PLC
    assert gateway.fleet.get("machine_1").reservation is None  # manual moves allowed
    assert gateway.jobs.workstation("station_1").paused_reason == paused.job.paused_reason

    model.set_fault(Fault.EMERGENCY_STOP, False)
    mark = len(events.events)
    resumed = await gateway.jobs.resume("E1", "op")
    assert resumed.state is JobState.ACTIVE
    stop = await events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED, start=mark)
    assert stop.stop is not None and stop.stop.position == 8
    await confirm_stop(gateway, stop)
    await events.wait_for(lambda e: e.event is JobEventKind.JOB_COMPLETED)
    assert model.moves_started == 1


async def test_carousels_are_reserved_while_a_job_runs_and_free_when_paused(
    gateway_factory,
) -> None:
    gateway, events = await started(gateway_factory, picking_config())
    machine = gateway.fleet.get("machine_1")
    await gateway.jobs.submit(job("R1", [("machine_1", 11), ("machine_1", 14)]), "wms")
    await events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED)

    manual = Origin("wms", OriginChannel.WS)
    with pytest.raises(GatewayError) as refused:
        await machine.execute(1, 2, manual)
    assert refused.value.code is ErrorCode.MACHINE_RESERVED
    assert "R1" in refused.value.message and "station_1" in refused.value.message

    paused = await gateway.jobs.pause("R1", "op", "lunch")
    assert paused.state is JobState.PAUSED and paused.paused_reason == "lunch"
    assert all(line.state is JobLineState.PENDING for line in paused.lines)
    executed = await machine.execute(1, 2, manual)  # paused: a manual move is allowed
    assert executed.outcome is not None
    assert isinstance(await asyncio.wait_for(executed.outcome, 5), MoveCompleted)

    # Resuming plans from where the carousel is now (bucket 2): back to 11 first.
    mark = len(events.events)
    await gateway.jobs.resume("R1", "op")
    stop = await events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED, start=mark)
    assert stop.stop is not None and stop.stop.position == 11
    assert at_rest_at(gateway, "machine_1", 11)
    cancelled = await gateway.jobs.cancel("R1", "op", "order withdrawn")
    assert cancelled.state is JobState.CANCELLED
    assert machine.reservation is None


def journal_table(target: str | Path) -> dict[str, str]:
    """``[journal]`` for a ``journal_target`` (a SQLite file, or a PostgreSQL schema)."""
    return {"url": target} if isinstance(target, str) else {"path": str(target)}


async def test_after_a_restart_active_jobs_come_back_paused_with_their_confirmations(
    gateway_factory, journal_target
) -> None:
    config = picking_config(journal=journal_table(journal_target))
    gateway, events = await started(gateway_factory, config)
    await gateway.jobs.submit(
        job("K1", [("machine_1", 5), ("machine_1", 5), ("machine_1", 9)]), "wms"
    )
    stop = await events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED)
    assert stop.stop is not None and len(stop.stop.lines) == 2
    await gateway.jobs.confirm("K1", "L1", 2, "only two left", "ana")
    await gateway.stop()

    again = await gateway_factory(config)
    view = again.jobs.job("K1")
    assert view.state is JobState.PAUSED and view.paused_reason == "gateway restarted"
    first = view.lines[0]
    assert (first.state, first.quantity_picked, first.reason, first.confirmed_by) == (
        JobLineState.SHORT,
        2,
        "only two left",
        "ana",
    )
    assert [line.state for line in view.lines[1:]] == [JobLineState.PENDING] * 2
    # Nothing moves by itself: no move planned, no reservation, no MOVE at the simulator.
    assert again.fleet.get("machine_1").reservation is None
    assert again.simulators["machine_1"].model.moves_started == 0
    events = JobEvents()
    again.jobs.listen(events)
    await again.jobs.resume("K1", "ana")
    stop = await events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED)
    assert stop.stop is not None and [line.line_id for line in stop.stop.lines] == ["L2"]


ROOT = Path(__file__).resolve().parents[2]

SIGKILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from carousel_gateway.app import Gateway
    from carousel_gateway.wire.jobs import JobSubmission
    from tests.integration.conftest import gateway_config

    async def main() -> None:
        config = gateway_config(
            1,
            journal={"path": sys.argv[1]},
            workstations=[{"id": "station_1", "name": "P", "machines": ["machine_1"]}],
            limits={"commands_per_machine_per_second": 1000.0, "command_burst": 1000},
        )
        gateway = Gateway(config)
        await gateway.start()
        presented = asyncio.Event()
        gateway.jobs.listen(lambda e: e.event == "stop_presented" and presented.set())
        lines = [
            {"line_id": f"L{i}", "machine_id": "machine_1", "position": 4, "quantity": 1}
            for i in range(20)
        ]
        await gateway.jobs.submit(
            JobSubmission.model_validate(
                {"job_id": "S1", "workstation_id": "station_1", "lines": lines}
            ),
            "wms",
        )
        await presented.wait()
        for line in lines:
            await gateway.jobs.confirm("S1", line["line_id"], 1, None, "op")
            print("ack", line["line_id"], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_a_sigkill_loses_no_acknowledged_confirmation(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    root = ROOT
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SIGKILL_SCRIPT,
        str(database),
        stdout=asyncio.subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert process.stdout is not None
    acknowledged: list[str] = []
    try:
        async with asyncio.timeout(60):
            while len(acknowledged) < 7:
                line = (await process.stdout.readline()).decode().split()
                assert line, "the gateway process ended early"
                acknowledged.append(line[1])
        process.send_signal(signal.SIGKILL)  # mid-stream: confirmations still coming
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # Acknowledgements printed before the kill that this reader had not taken yet count too.
    rest = (await process.stdout.read()).decode().split("\n")
    acknowledged += [line.split()[1] for line in rest if line.startswith("ack")]

    store = SqliteJobStore(database)
    await store.open()
    try:
        (stored,) = await store.load(finished_after=0.0)
    finally:
        await store.close()
    picked = {line.line_id for line in stored.lines if line.state is JobLineState.PICKED}
    assert set(acknowledged) <= picked
    assert all(line.confirmed_by == "op" for line in stored.lines if line.line_id in picked)


async def test_a_job_cancelled_before_its_move_goes_moves_nothing(gateway_factory) -> None:
    gateway, events = await started(gateway_factory, picking_config())
    with pytest.raises(GatewayError) as invalid:
        await gateway.jobs.submit(job("X1", [("machine_1", 31), ("machine_2", 3)]), "wms")
    assert invalid.value.code is ErrorCode.INVALID_JOB
    assert "position 31 is outside 1..30" in invalid.value.message
    assert "'machine_2' is not in workstation 'station_1'" in invalid.value.message
    with pytest.raises(GatewayError) as missing:
        gateway.jobs.job("X1")
    assert missing.value.code is ErrorCode.JOB_NOT_FOUND

    model = gateway.simulators["machine_1"].model
    machine = gateway.fleet.get("machine_1")
    start = machine.snapshot.position
    far = (start - 1 + 15) % 30 + 1  # the far side: the longest move there is
    await gateway.jobs.submit(job("X2", [("machine_1", far)]), "wms")
    # Cancelled before its move was handed to the machine: that move is never sent.
    cancelled = await gateway.jobs.cancel("X2", "op")
    assert cancelled.state is JobState.CANCELLED and cancelled.lines[0].reason == "cancelled by op"
    assert machine.reservation is None
    await gateway.jobs.submit(job("X3", [("machine_1", 5)]), "wms")  # the next job runs
    stop = await events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED)
    assert stop.job.job_id == "X3"
    assert [e.job.job_id for e in events.events if e.event is JobEventKind.STOP_PRESENTED] == ["X3"]
    assert [view.job_id for view in gateway.jobs.jobs()] == ["X3", "X2"]  # newest first
    assert [view.job_id for view in gateway.jobs.jobs(state=JobState.CANCELLED)] == ["X2"]
    assert model.moves_started == 1  # X3's only
    assert at_rest_at(gateway, "machine_1", 5)


async def test_jobs_ended_a_week_ago_leave_memory_and_their_ids_stay_used(
    gateway_factory,
) -> None:
    from carousel_gateway.picking.engine import FINISHED_JOBS_KEPT_S

    gateway, _ = await started(gateway_factory, picking_config())
    await gateway.jobs.submit(job("W1", [("machine_1", 7)]), "wms")
    await gateway.jobs.cancel("W1", "op")
    engine = gateway._engine
    later = time.time() + FINISHED_JOBS_KEPT_S + 3600
    engine.clock = lambda: later
    await gateway.jobs.submit(job("W2", [("machine_1", 7)]), "wms")  # forgets W1
    with pytest.raises(GatewayError) as gone:
        gateway.jobs.job("W1")
    assert gone.value.code is ErrorCode.JOB_NOT_FOUND
    with pytest.raises(GatewayError) as used:
        await gateway.jobs.submit(job("W1", [("machine_1", 7)]), "wms")
    assert used.value.code is ErrorCode.JOB_CONFLICT and "new job_id" in used.value.message
    assert [view.job_id for view in gateway.jobs.jobs()] == ["W2"]


async def test_a_write_the_store_cannot_make_is_not_acknowledged_and_is_written_later(
    gateway_factory, journal_target
) -> None:
    config = picking_config(journal=journal_table(journal_target))
    gateway, events = await started(gateway_factory, config)
    await gateway.jobs.submit(job("F1", [("machine_1", 6), ("machine_1", 8)]), "wms")
    await events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED)
    store = gateway._engine.store
    await store._run(store._close)  # the database goes away under the engine
    with pytest.raises(GatewayError) as failed:
        await gateway.jobs.confirm("F1", "L1", 3, None, "ana")
    assert failed.value.code is ErrorCode.INTERNAL_ERROR
    await store._run(store._open)
    await gateway.jobs.pause("F1", "ana", "checking")  # the next write carries both
    (stored,) = await store.load(finished_after=0.0)
    assert stored.state is JobState.PAUSED
    assert (stored.lines[0].state, stored.lines[0].confirmed_by) == (JobLineState.PICKED, "ana")
