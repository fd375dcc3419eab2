"""The pure workstation and job board: validation, stops, pick-ahead, priority, pauses."""

from __future__ import annotations

from typing import Any

import pytest

from carousel_gateway.config import MachineConfig, WorkstationConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.picking.board import JobBoard
from carousel_gateway.picking.planner import optimal_route
from carousel_gateway.picking.workstation import Workstation
from carousel_gateway.wire.jobs import JobEventKind, JobLineState, JobState, JobSubmission


def machines(*ids: str, positions: int = 30) -> dict[str, MachineConfig]:
    return {
        m: MachineConfig(id=m, name=m, port=3200, positions=positions, position_base=1) for m in ids
    }


def board(max_active_jobs: int = 1, pod: tuple[str, ...] = ("m1", "m2")) -> JobBoard:
    station = WorkstationConfig(
        id="s1", name="Puesto 1", machines=pod, max_active_jobs=max_active_jobs
    )
    other = WorkstationConfig(id="s2", name="Puesto 2", machines=("m3",))
    return JobBoard([station, other], machines("m1", "m2", "m3"))


def submission(job_id: str, lines: list[tuple[str, int]], **extra: Any) -> JobSubmission:
    return JobSubmission.model_validate(
        {
            "job_id": job_id,
            "workstation_id": extra.pop("workstation_id", "s1"),
            "lines": [
                {"line_id": f"L{i}", "machine_id": m, "position": p, "quantity": 2, "sku": f"S{i}"}
                for i, (m, p) in enumerate(lines, start=1)
            ],
            **extra,
        }
    )


def submit(b: JobBoard, sub: JobSubmission, at: float = 0.0) -> Workstation:
    return b.add(b.make(sub, "wms", at), at)


def pick_stop(station: Workstation, machine_id: str, at: float) -> None:
    stop = station.presented[machine_id]
    for job, line in list(stop.lines):
        if line.state is JobLineState.PRESENTED:
            station.confirm(job.job_id, line.line_id, line.quantity, None, "op", at)


def test_invalid_job_names_every_bad_line() -> None:
    b = board()
    bad = JobSubmission.model_validate(
        {
            "job_id": "J",
            "workstation_id": "s1",
            "lines": [
                {"line_id": "a", "machine_id": "nope", "position": 1, "quantity": 1},
                {"line_id": "b", "machine_id": "m3", "position": 1, "quantity": 1},
                {"line_id": "c", "machine_id": "m1", "position": 31, "quantity": 0},
                {"line_id": "c", "machine_id": "m1", "position": 0, "quantity": 1},
                {"line_id": "d", "machine_id": "m1", "position": 30, "quantity": 1},
            ],
        }
    )
    with pytest.raises(GatewayError) as refused:
        b.make(bad, "wms", 0.0)
    message = refused.value.message
    assert refused.value.code is ErrorCode.INVALID_JOB
    assert "line 1 ('a'): unknown machine 'nope'" in message
    assert "line 2 ('b'): machine 'm3' is not in workstation 's1'" in message
    assert "position 31 is outside 1..30 on m1" in message and "quantity 0 is below 1" in message
    assert "line 4 ('c'): duplicate line_id, position 0 is outside 1..30" in message
    assert "'d'" not in message
    with pytest.raises(GatewayError) as unknown:
        b.make(submission("J", [("m1", 1)], workstation_id="nowhere"), "wms", 0.0)
    assert unknown.value.code is ErrorCode.INVALID_JOB and "unknown workstation" in str(
        unknown.value
    )
    with pytest.raises(GatewayError) as too_many:
        b.make(submission("J", [("m1", 1)] * 501), "wms", 0.0)
    assert "501 lines: at most 500" in too_many.value.message


def test_same_content_is_the_same_job_other_content_conflicts() -> None:
    b = board()
    submit(b, submission("J1", [("m1", 3)]))
    assert b.existing(submission("J1", [("m1", 3)])) is not None
    with pytest.raises(GatewayError) as conflict:
        b.existing(submission("J1", [("m1", 4)]))
    assert conflict.value.code is ErrorCode.JOB_CONFLICT
    assert b.existing(submission("J2", [("m1", 4)])) is None


def test_one_carousel_follows_the_optimal_route_and_waits_for_each_stop() -> None:
    b = board(pod=("m1",))
    station = b.stations["s1"]
    station.positions["m1"] = 1
    lines = [("m1", 20), ("m1", 3), ("m1", 28), ("m1", 3), ("m1", 10)]
    submit(b, submission("J", lines))
    job = station.jobs["J"]
    assert job.state is JobState.ACTIVE
    expected = optimal_route(1, [p for _, p in lines], 30)
    visited: list[int] = []
    t = 0.0
    while not job.final:
        (order,) = station.next_moves()
        assert station.next_moves() == []  # moving: nothing more for it
        t += order.distance
        station.arrived("m1", order.target, t)
        visited.append(order.target)
        assert station.next_moves() == []  # a presented stop holds the carousel
        stop = station.presented["m1"]
        assert {line.position for _, line in stop.lines} == {order.target}
        pick_stop(station, "m1", t + 5)
        t += 5
    assert visited == expected and job.state is JobState.COMPLETED
    assert job.moves == len(expected)
    assert job.buckets_travelled == sum(
        min((b_ - a) % 30, (a - b_) % 30) for a, b_ in zip([1, *expected], expected, strict=False)
    )
    assert job.operator_wait_s == pytest.approx(job.buckets_travelled)  # waited every leg
    kinds = [h.kind for h in station.take()[0]]
    assert kinds[:3] == [
        JobEventKind.JOB_QUEUED,
        JobEventKind.JOB_STARTED,
        JobEventKind.STOP_PRESENTED,
    ]
    assert kinds[-1] is JobEventKind.JOB_COMPLETED
    assert kinds.count(JobEventKind.LINE_CONFIRMED) == len(lines)


def test_pod_picks_ahead_and_never_moves_a_carousel_with_unconfirmed_lines() -> None:
    b = board()
    station = b.stations["s1"]
    station.positions.update(m1=1, m2=1)
    submit(b, submission("J", [("m1", 5), ("m1", 9), ("m2", 4), ("m2", 12)]))
    first = {o.machine_id: o.target for o in station.next_moves()}
    assert first == {"m1": 5, "m2": 4}  # both turn at once
    station.arrived("m2", 4, 3.0)
    station.arrived("m1", 5, 4.0)
    assert [s.machine_id for s in station.ordered_stops()] == ["m2", "m1"]  # first arrived
    assert station.next_moves() == []
    pick_stop(station, "m2", 8.0)
    # m2 turns on while the operator works at m1; m1 stays put (unconfirmed lines).
    assert [(o.machine_id, o.target) for o in station.next_moves()] == [("m2", 12)]
    assert station.next_moves() == []
    assert station.view().current is not None and station.view().current.machine_id == "m1"
    pick_stop(station, "m1", 12.0)
    assert [(o.machine_id, o.target) for o in station.next_moves()] == [("m1", 9)]
    assert station.jobs["J"].operator_wait_s == pytest.approx(3.0)  # only before m2 came


def test_batch_visits_a_shared_bucket_once_and_priority_orders_the_queue() -> None:
    b = board(max_active_jobs=2, pod=("m1",))
    station = b.stations["s1"]
    station.positions["m1"] = 1
    submit(b, submission("A", [("m1", 7)]), at=1)
    submit(b, submission("B", [("m1", 7), ("m1", 8)]), at=2)
    submit(b, submission("C", [("m1", 2)], priority=1), at=3)
    submit(b, submission("D", [("m1", 2)], priority=5), at=4)
    assert [j.job_id for j in station.active()] == ["A", "B"]
    assert [j.job_id for j in station.queue()] == ["D", "C"]  # higher priority first
    (order,) = station.next_moves()
    assert order.target == 7
    station.arrived("m1", 7, 10)
    stop = station.presented["m1"]
    assert [(j.job_id, line.line_id) for j, line in stop.lines] == [("A", "L1"), ("B", "L1")]
    station.confirm("A", "L1", 1, "damaged", "op", 11)
    assert station.jobs["A"].lines[0].state is JobLineState.SHORT
    assert station.jobs["A"].state is JobState.COMPLETED
    # D starts (priority) while B's line still waits at bucket 7: the presented stop holds.
    assert [j.job_id for j in station.active()] == ["B", "D"]
    assert station.next_moves() == []
    station.confirm("B", "L1", 2, None, "op", 12)
    (order,) = station.next_moves()
    assert order.target == 8  # 8 is next to 7; 2 comes after


def test_confirmation_rules() -> None:
    b = board(pod=("m1",))
    station = b.stations["s1"]
    station.positions["m1"] = 1
    submit(b, submission("J", [("m1", 4), ("m1", 6)]))

    def refused(line_id: str, qty: int, reason: str | None = None) -> str:
        with pytest.raises(GatewayError) as error:
            station.confirm("J", line_id, qty, reason, "op", 1.0)
        assert error.value.code is ErrorCode.INVALID_COMMAND
        return error.value.message

    assert "only a presented line" in refused("L1", 2)
    station.next_moves()
    station.arrived("m1", 4, 1.0)
    assert "outside 0..2" in refused("L1", 3)
    assert "outside 0..2" in refused("L1", -1)
    assert "needs a reason" in refused("L1", 1)
    assert "no line 'L9'" in refused("L9", 1)
    assert "only a presented line" in refused("L2", 2)
    with pytest.raises(GatewayError) as missing:
        b.find("nope")
    assert missing.value.code is ErrorCode.JOB_NOT_FOUND
    station.confirm("J", "L1", 0, "empty bucket", "op", 2.0)
    line = station.jobs["J"].lines[0]
    assert (line.state, line.quantity_picked, line.reason, line.confirmed_by) == (
        JobLineState.SHORT,
        0,
        "empty bucket",
        "op",
    )


def test_a_failed_move_pauses_with_the_reason_and_resume_plans_again() -> None:
    b = board()
    station = b.stations["s1"]
    station.positions.update(m1=1, m2=1)
    submit(b, submission("J", [("m1", 5), ("m2", 4)]))
    station.next_moves()
    station.arrived("m1", 5, 1.0)
    paused = station.move_failed("m2", "PARADA_EMERGENCIA", 2.0)
    job = station.jobs["J"]
    assert paused == [job] and job.state is JobState.PAUSED
    assert job.paused_reason == "PARADA_EMERGENCIA" == station.paused_reason()
    assert job.lines[0].state is JobLineState.PENDING  # left its stop
    assert station.presented == {} and station.reserving() == ()
    assert station.next_moves() == []
    with pytest.raises(GatewayError):
        station.confirm("J", "L1", 2, None, "op", 3.0)
    station.resume("J", "op", 4.0)
    assert {(o.machine_id, o.target) for o in station.next_moves()} == {("m1", 5), ("m2", 4)}
    station.cancel("J", "customer left", "op", 5.0)
    assert job.state is JobState.CANCELLED
    assert {line.state for line in job.lines} == {JobLineState.CANCELLED}
    with pytest.raises(GatewayError):
        station.cancel("J", None, "op", 6.0)


def test_restore_brings_active_jobs_back_paused() -> None:
    b = board(pod=("m1",))
    station = b.stations["s1"]
    station.positions["m1"] = 1
    submit(b, submission("J", [("m1", 4)]))
    station.next_moves()
    station.arrived("m1", 4, 1.0)
    job = station.jobs["J"]
    again = board(pod=("m1",))
    again.restore(job, "gateway restarted", 9.0)
    restored = again.stations["s1"].jobs["J"]
    assert restored.state is JobState.PAUSED and restored.paused_reason == "gateway restarted"
    assert restored.lines[0].state is JobLineState.PENDING
    assert again.stations["s1"].next_moves() == []  # nothing moves by itself


def test_a_takeover_restores_active_jobs_active_and_plans_from_where_the_carousel_is() -> None:
    b = board(pod=("m1",))
    station = b.stations["s1"]
    station.positions["m1"] = 1
    submit(b, submission("J", [("m1", 4), ("m1", 8)]))
    station.next_moves()
    station.arrived("m1", 4, 1.0)
    job = station.jobs["J"]
    again = board(pod=("m1",))
    again.restore(job, None, 9.0)  # the cell's other gateway took over
    taken = again.stations["s1"]
    restored = taken.jobs["J"]
    assert restored.state is JobState.ACTIVE and restored.paused_reason is None
    assert restored.lines[0].state is JobLineState.PENDING  # presented again on arrival
    assert taken.reserving() == ("J",)
    taken.positions["m1"] = 4  # at rest where the old active left it
    assert [(o.machine_id, o.target) for o in taken.next_moves()] == [("m1", 4)]


def test_an_idle_carousel_turns_ahead_for_the_next_job_which_starts_presented() -> None:
    b = board()
    station = b.stations["s1"]
    station.positions.update(m1=1, m2=1)
    submit(b, submission("A", [("m1", 5), ("m1", 9)]))
    submit(b, submission("B", [("m2", 14), ("m1", 3)]))
    assert station.reserving() == ("A", "B")  # B's moves are admitted while A runs
    orders = {o.machine_id: (o.target, o.job_id) for o in station.next_moves()}
    assert orders == {"m1": (5, "A"), "m2": (14, "B")}  # m2 has nothing for A
    station.arrived("m2", 14, 2.0)
    assert "m2" not in station.presented  # B has not started: nothing to pick yet
    assert station.next_moves() == []  # already where B needs it: it waits
    station.arrived("m1", 5, 3.0)
    pick_stop(station, "m1", 4.0)
    station.next_moves()
    station.arrived("m1", 9, 6.0)
    pick_stop(station, "m1", 7.0)  # A completes, B starts: presented at m2 at once
    assert station.jobs["A"].state is JobState.COMPLETED
    assert [(s.machine_id, s.position) for s in station.ordered_stops()] == [("m2", 14)]
    assert station.jobs["B"].lines[0].state is JobLineState.PRESENTED
    assert station.jobs["B"].moves == 1


def test_a_paused_workstation_forgets_where_it_left_its_carousels() -> None:
    """After a pause anyone may have moved a carousel: a job starting then is not
    presented from memory; the carousel is read and moved (or the move skipped) first."""
    b = board(pod=("m1",))
    station = b.stations["s1"]
    station.positions["m1"] = 1
    submit(b, submission("A", [("m1", 5)]))
    submit(b, submission("B", [("m1", 5), ("m1", 6)]))
    station.next_moves()
    station.arrived("m1", 5, 1.0)
    station.pause("A", "lunch", "op", 2.0)
    station.cancel("A", None, "op", 3.0)  # B starts, the carousel may have been moved
    assert station.presented == {}
    assert [(o.machine_id, o.target) for o in station.next_moves()] == [("m1", 5)]


def test_a_failed_move_ahead_is_not_tried_again_until_a_job_starts() -> None:
    b = board()
    station = b.stations["s1"]
    station.positions.update(m1=1, m2=1)
    submit(b, submission("A", [("m1", 5)]))
    submit(b, submission("B", [("m2", 14)]))
    assert {o.machine_id for o in station.next_moves()} == {"m1", "m2"}
    assert station.move_failed("m2", "PARADA_EMERGENCIA", 1.0) == []  # B is not started
    assert station.jobs["A"].state is JobState.ACTIVE
    assert station.next_moves() == []  # m2 is not tried again by itself
    station.arrived("m1", 5, 2.0)
    pick_stop(station, "m1", 3.0)  # A completes, B starts: its move goes, as B's own
    assert [(o.machine_id, o.target, o.job_id) for o in station.next_moves()] == [("m2", 14, "B")]


def test_a_repeated_confirmation_is_answered_with_the_stored_result() -> None:
    b = board(pod=("m1",))
    station = b.stations["s1"]
    station.positions["m1"] = 1
    submit(b, submission("J", [("m1", 4), ("m1", 4), ("m1", 6)]))
    station.next_moves()
    station.arrived("m1", 4, 1.0)
    station.take()
    station.confirm("J", "L1", 2, None, "op", 2.0, confirmation_id="c-1")
    station.confirm("J", "L2", 1, "damaged", "op", 2.5, confirmation_id="c-2")
    _, changes, _ = station.take()
    job = station.jobs["J"]
    assert [(c.line_id, c.confirmation_id) for c in changes if c.what == "line_confirmed"] == [
        ("L1", "c-1"),
        ("L2", "c-2"),
    ]
    assert job.lines[0].view().confirmation_id == "c-1"
    station.next_moves()
    station.arrived("m1", 6, 3.0)
    station.take()

    # The same id and content (a retry): the job as stored, nothing changes, nothing recorded.
    assert station.confirm("J", "L1", 2, None, "other", 4.0, confirmation_id="c-1") is job
    assert station.confirm("J", "L2", 1, "damaged", "op", 4.0, confirmation_id="c-2") is job
    # Without an id: the same line, quantity and reason is a repeat too.
    assert station.confirm("J", "L1", 2, None, "op", 4.0) is job
    assert station.confirm("J", "L2", 1, "damaged", "op", 4.0) is job
    happenings, changes, dirty = station.take()
    assert (happenings, changes, dirty) == ([], [], [])
    line = job.lines[0]
    assert (line.state, line.confirmed_by, line.confirmed_at) == (JobLineState.PICKED, "op", 2.0)

    def refused(line_id: str, qty: int, reason: str | None, cid: str | None) -> GatewayError:
        with pytest.raises(GatewayError) as error:
            station.confirm("J", line_id, qty, reason, "op", 5.0, confirmation_id=cid)
        return error.value

    # The same id with other content: refused, saying what the id was used for.
    for line_id, qty, reason in (("L1", 1, "short"), ("L3", 2, None), ("L2", 1, "lost")):
        conflict = refused(line_id, qty, reason, "c-1" if line_id != "L2" else "c-2")
        assert conflict.code is ErrorCode.JOB_CONFLICT
        assert "was used for line" in conflict.message and "new id" in conflict.message
    # Another id (or none) for a line already confirmed otherwise: the usual refusal.
    assert "is picked" in refused("L1", 2, None, "c-9").message
    assert "is picked" in refused("L1", 1, "short", None).message
    assert station.take() == ([], [], [])
    # A new id on the presented line is a new confirmation; the job completes.
    station.confirm("J", "L3", 2, None, "op", 6.0, confirmation_id="c-3")
    assert job.state is JobState.COMPLETED
    # Its retry after the job completed still gets the stored result.
    assert station.confirm("J", "L3", 2, None, "op", 7.0, confirmation_id="c-3") is job
