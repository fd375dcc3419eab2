"""Jobs and their lines as plain records, and the rules a submission must meet (pure).

A :class:`Job` is what the workstation works on and what the job store writes; its wire
view is built from it in one place (:func:`job_view`). Validation names every bad line and
why in one ``INVALID_JOB``, so a WMS fixes a job in one round trip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from carousel_gateway.config import MachineConfig, WorkstationConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.wire.clock import utc_timestamp
from carousel_gateway.wire.jobs import (
    MAX_JOB_LINES,
    JobLineIn,
    JobLineState,
    JobLineView,
    JobState,
    JobStats,
    JobSubmission,
    JobView,
    RouteStop,
)

__all__ = [
    "FINAL_JOB_STATES",
    "OPEN_LINE_STATES",
    "Job",
    "Line",
    "check_confirmation",
    "confirmation_repeat",
    "job_view",
    "same_content",
    "submission_content",
    "validate_submission",
]

#: A job in one of these states never changes again.
FINAL_JOB_STATES = frozenset({JobState.COMPLETED, JobState.CANCELLED})
#: Lines still to be picked.
OPEN_LINE_STATES = frozenset({JobLineState.PENDING, JobLineState.PRESENTED})


@dataclass(slots=True)
class Line:
    """One line of a job: ``quantity`` from bucket ``position`` of ``machine_id``."""

    line_id: str
    machine_id: str
    position: int
    quantity: int
    sku: str | None = None
    description: str | None = None
    order_id: str | None = None
    state: JobLineState = JobLineState.PENDING
    quantity_picked: int | None = None
    reason: str | None = None
    confirmed_by: str | None = None
    confirmed_at: float | None = None
    #: The id its client gave the confirmation (a retry with it is answered, not redone).
    confirmation_id: str | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN_LINE_STATES

    def view(self) -> JobLineView:
        return JobLineView(
            line_id=self.line_id,
            machine_id=self.machine_id,
            position=self.position,
            quantity=self.quantity,
            sku=self.sku,
            description=self.description,
            order_id=self.order_id,
            state=self.state,
            quantity_picked=self.quantity_picked,
            reason=self.reason,
            confirmed_by=self.confirmed_by,
            confirmed_at=None if self.confirmed_at is None else utc_timestamp(self.confirmed_at),
            confirmation_id=self.confirmation_id,
        )


@dataclass(slots=True)
class Job:
    """A job as a workstation works on it. ``seq`` is the submission order (ties of
    priority start in it); ``content`` is the submission as given (idempotency)."""

    job_id: str
    workstation_id: str
    priority: int
    lines: list[Line]
    content: str
    seq: int
    created_at: float
    submitted_by: str | None = None
    state: JobState = JobState.QUEUED
    paused_reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    moves: int = 0
    buckets_travelled: int = 0
    operator_wait_s: float = 0.0
    by_id: dict[str, Line] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {line.line_id: line for line in self.lines}

    @classmethod
    def from_submission(
        cls, submission: JobSubmission, *, seq: int, at: float, by: str | None
    ) -> Job:
        return cls(
            job_id=submission.job_id,
            workstation_id=submission.workstation_id,
            priority=submission.priority,
            lines=[_line(line) for line in submission.lines],
            content=submission_content(submission),
            seq=seq,
            created_at=at,
            submitted_by=by,
        )

    @property
    def final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    def open_lines(self) -> list[Line]:
        return [line for line in self.lines if line.open]

    def stats(self) -> JobStats:
        return JobStats(
            moves=self.moves,
            buckets_travelled=self.buckets_travelled,
            operator_wait_s=round(self.operator_wait_s, 3),
        )


def _line(line: JobLineIn) -> Line:
    return Line(
        line_id=line.line_id,
        machine_id=line.machine_id,
        position=line.position,
        quantity=line.quantity,
        sku=line.sku,
        description=line.description,
        order_id=line.order_id,
    )


def submission_content(submission: JobSubmission) -> str:
    """The submission in one canonical text: equal texts are the same job."""
    return json.dumps(submission.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def same_content(job: Job, submission: JobSubmission) -> bool:
    return job.content == submission_content(submission)


def job_view(job: Job, route: list[RouteStop]) -> JobView:
    """The job as every API shows it (``route``: its remaining planned stops)."""
    return JobView(
        job_id=job.job_id,
        workstation_id=job.workstation_id,
        priority=job.priority,
        state=job.state,
        paused_reason=job.paused_reason,
        lines=[line.view() for line in job.lines],
        route=route,
        stats=job.stats(),
        submitted_by=job.submitted_by,
        created_at=utc_timestamp(job.created_at),
        started_at=None if job.started_at is None else utc_timestamp(job.started_at),
        finished_at=None if job.finished_at is None else utc_timestamp(job.finished_at),
    )


def validate_submission(
    submission: JobSubmission,
    workstations: Mapping[str, WorkstationConfig],
    machines: Mapping[str, MachineConfig],
) -> None:
    """Raise ``INVALID_JOB`` naming every problem of ``submission`` (each bad line, why)."""
    problems: list[str] = []
    station = workstations.get(submission.workstation_id)
    if station is None:
        known = ", ".join(sorted(workstations)) or "none"
        problems.append(f"unknown workstation {submission.workstation_id!r} (known: {known})")
    if not submission.lines:
        problems.append("a job needs at least one line")
    if len(submission.lines) > MAX_JOB_LINES:
        problems.append(f"{len(submission.lines)} lines: at most {MAX_JOB_LINES} per job")
    seen: set[str] = set()
    for number, line in enumerate(submission.lines[: MAX_JOB_LINES * 2], start=1):
        name = f"line {number} ({line.line_id!r})"
        why: list[str] = []
        if line.line_id in seen:
            why.append("duplicate line_id")
        seen.add(line.line_id)
        machine = machines.get(line.machine_id)
        if machine is None:
            why.append(f"unknown machine {line.machine_id!r}")
        elif station is not None and line.machine_id not in station.machines:
            why.append(f"machine {line.machine_id!r} is not in workstation {station.id!r}")
        if machine is not None:
            first = machine.position_base
            last = machine.positions - 1 + machine.position_base
            if not first <= line.position <= last:
                why.append(f"position {line.position} is outside {first}..{last} on {machine.id}")
        if line.quantity < 1:
            why.append(f"quantity {line.quantity} is below 1")
        if why:
            problems.append(f"{name}: {', '.join(why)}")
    if problems:
        raise GatewayError(
            ErrorCode.INVALID_JOB, f"job {submission.job_id!r}: " + "; ".join(problems)
        )


def check_confirmation(job: Job, line_id: str, quantity_picked: int, reason: str | None) -> Line:
    """The line a confirmation may apply to, or ``INVALID_COMMAND`` saying why not."""
    line = job.by_id.get(line_id)
    if line is None:
        raise GatewayError(ErrorCode.INVALID_COMMAND, f"job {job.job_id!r} has no line {line_id!r}")
    if job.state is not JobState.ACTIVE:
        raise GatewayError(
            ErrorCode.INVALID_COMMAND,
            f"job {job.job_id!r} is {job.state.value}: only an active job's lines are confirmed",
        )
    if line.state is not JobLineState.PRESENTED:
        raise GatewayError(
            ErrorCode.INVALID_COMMAND,
            f"line {line_id!r} of job {job.job_id!r} is {line.state.value}: only a presented "
            "line (its carousel at rest at its bucket) is confirmed",
        )
    if not 0 <= quantity_picked <= line.quantity:
        raise GatewayError(
            ErrorCode.INVALID_COMMAND,
            f"quantity_picked {quantity_picked} is outside 0..{line.quantity} for line {line_id!r}",
        )
    if quantity_picked < line.quantity and not (reason and reason.strip()):
        raise GatewayError(
            ErrorCode.INVALID_COMMAND,
            f"a short pick ({quantity_picked} of {line.quantity}) needs a reason",
        )
    return line


def confirmation_repeat(
    job: Job,
    line_id: str,
    quantity_picked: int,
    reason: str | None,
    confirmation_id: str | None,
) -> Line | None:
    """The stored line when this confirmation was already applied (a client's retry: the
    answer is the stored result), else None (judge it with :func:`check_confirmation`).

    With ``confirmation_id`` the id decides: the line that carries it is a repeat when the
    content matches, and ``JOB_CONFLICT`` when the same id came with another line, quantity
    or reason. Without one, a confirmed line with the same quantity and reason is a repeat.
    """
    if confirmation_id is not None:
        line = next((ln for ln in job.lines if ln.confirmation_id == confirmation_id), None)
        if line is None:
            return None
        if line.line_id == line_id and _same_pick(line, quantity_picked, reason):
            return line
        raise GatewayError(
            ErrorCode.JOB_CONFLICT,
            f"confirmation_id {confirmation_id!r} of job {job.job_id!r} was used for line "
            f"{line.line_id!r} with quantity_picked {line.quantity_picked}"
            + (f" ({line.reason})" if line.reason else "")
            + f"; this one is line {line_id!r} with {quantity_picked}: "
            "a new confirmation needs a new id",
        )
    line = job.by_id.get(line_id)
    if line is None or line.quantity_picked is None or line.open:
        return None
    return line if _same_pick(line, quantity_picked, reason) else None


def _same_pick(line: Line, quantity_picked: int, reason: str | None) -> bool:
    """The stored confirmation of ``line`` is this one (a full pick stores no reason)."""
    if line.state not in (JobLineState.PICKED, JobLineState.SHORT):
        return False
    if line.quantity_picked != quantity_picked:
        return False
    return line.state is JobLineState.PICKED or (line.reason or None) == (reason or None)
