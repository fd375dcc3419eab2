"""Pick jobs on the wire: what a WMS submits, what operators confirm, what everyone sees.

The same shapes serve the WebSocket messages, the REST bodies and the Python client, so a
job reads the same everywhere. Field names are English, as the issue that defined pick jobs
gave them (the spec has no jobs). Values a client can get wrong in content (an unknown
machine, a position out of range, a quantity below 1, too many lines) are judged by the
job service, which names each bad line (``INVALID_JOB``); only wrong types and unknown keys
are format errors here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from carousel_gateway.wire.common import Outgoing

__all__ = [
    "JOBS_PAGE",
    "MAX_JOBS_PAGE",
    "MAX_JOB_LINES",
    "CancelJob",
    "ConfirmPick",
    "GetJobs",
    "JobAccepted",
    "JobEventKind",
    "JobEventMessage",
    "JobLineIn",
    "JobLineState",
    "JobLineView",
    "JobState",
    "JobStats",
    "JobSubmission",
    "JobUpdate",
    "JobView",
    "Jobs",
    "PauseJob",
    "PickConfirmed",
    "ResumeJob",
    "RouteStop",
    "StopLine",
    "StopView",
    "SubmitJob",
    "WorkstationView",
]

#: Lines one job may carry (more is ``INVALID_JOB``).
MAX_JOB_LINES = 500

Identifier = Annotated[str, Field(min_length=1, max_length=128)]
Text = Annotated[str, Field(max_length=500)]


class JobState(StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class JobLineState(StrEnum):
    PENDING = "pending"
    PRESENTED = "presented"  # its carousel is at rest at its bucket, in front of the operator
    PICKED = "picked"
    SHORT = "short"  # confirmed with less than asked (the reason says why)
    CANCELLED = "cancelled"


class JobEventKind(StrEnum):
    JOB_QUEUED = "job_queued"
    JOB_STARTED = "job_started"
    STOP_PRESENTED = "stop_presented"
    LINE_CONFIRMED = "line_confirmed"
    JOB_PAUSED = "job_paused"
    JOB_RESUMED = "job_resumed"
    JOB_COMPLETED = "job_completed"
    JOB_CANCELLED = "job_cancelled"


# -- what a client sends ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobLineIn(_Strict):
    """One line of a submitted job: take ``quantity`` from bucket ``position`` of a carousel."""

    line_id: Identifier
    machine_id: Identifier
    position: int  # the API's bucket numbering (position_base applied)
    quantity: int  # >= 1, judged by the service (INVALID_JOB naming the line)
    sku: Text | None = None
    description: Text | None = None
    order_id: Identifier | None = None  # which order (tote) in a batch


class JobSubmission(_Strict):
    """A job as the WMS submits it (REST body of ``POST /v1/jobs``). ``job_id`` is the
    client's: the same id with the same content again is the same job (idempotent)."""

    job_id: Identifier
    workstation_id: Identifier
    priority: Annotated[int, Field(ge=0, le=9)] = 0  # higher first
    lines: Annotated[list[JobLineIn], Field(max_length=10_000)]


class _JobRequest(_Strict):
    """WebSocket job requests carry the envelope's keys as every client message does."""

    request_id: Annotated[str, Field(max_length=128)] | None = None
    timestamp: object = None


class SubmitJob(_JobRequest, JobSubmission):
    type: Literal["submit_job"]


#: Jobs one ``get_jobs`` (or ``GET /v1/jobs``) returns at most by default, and at most.
JOBS_PAGE = 100
MAX_JOBS_PAGE = 1000


class GetJobs(_JobRequest):
    type: Literal["get_jobs"]
    workstation_id: Identifier | None = None
    state: JobState | None = None
    #: The newest this many (finished jobs pile up: a reply stays a bounded size).
    limit: Annotated[int, Field(ge=1, le=MAX_JOBS_PAGE)] = JOBS_PAGE
    #: Just this job (``JOB_NOT_FOUND`` when there is none).
    job_id: Identifier | None = None


class ConfirmPick(_JobRequest):
    type: Literal["confirm_pick"]
    job_id: Identifier
    line_id: Identifier
    quantity_picked: int  # 0..quantity; less than asked needs a reason (a short pick)
    reason: Text | None = None
    confirmation_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=128,
            description="The client's id for this confirmation (a UUID, say), sent again "
            "unchanged with every retry: a retry of a confirmation already stored is answered "
            "with the stored result (also by the other gateway of a cell after a takeover); "
            "the same id with another line, quantity or reason is JOB_CONFLICT.",
        ),
    ] = None


class PauseJob(_JobRequest):
    type: Literal["pause_job"]
    job_id: Identifier
    reason: Text | None = None


class ResumeJob(_JobRequest):
    type: Literal["resume_job"]
    job_id: Identifier


class CancelJob(_JobRequest):
    type: Literal["cancel_job"]
    job_id: Identifier
    reason: Text | None = None


# -- what clients see -----------------------------------------------------------------------


class JobLineView(BaseModel):
    line_id: str
    machine_id: str
    position: int
    quantity: int
    sku: str | None = None
    description: str | None = None
    order_id: str | None = None
    state: JobLineState
    quantity_picked: int | None = None
    reason: str | None = None  # why a short pick (or a cancellation) happened
    confirmed_by: str | None = None  # token name or peer address of the operator
    confirmed_at: str | None = None  # ISO 8601 UTC
    confirmation_id: str | None = None  # the id its client gave the confirmation, if any


class RouteStop(BaseModel):
    """One bucket the planned route still visits, in visiting order per carousel."""

    machine_id: str
    position: int


class JobStats(BaseModel):
    moves: int = 0  # MOVE commands sent for this job
    buckets_travelled: int = 0  # circular distance covered by those moves
    operator_wait_s: float = 0.0  # time the operator waited for a carousel to arrive


class JobView(BaseModel):
    job_id: str
    workstation_id: str
    priority: int
    state: JobState
    paused_reason: str | None = None  # e.g. "PARADA_EMERGENCIA", "gateway restarted"
    lines: list[JobLineView]
    route: list[RouteStop]  # the remaining planned stops of this job
    stats: JobStats
    submitted_by: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None


class StopLine(BaseModel):
    """A line to pick at a stop (a batch stop holds lines of several jobs)."""

    job_id: str
    line_id: str
    order_id: str | None = None
    sku: str | None = None
    description: str | None = None
    quantity: int
    state: JobLineState


class StopView(BaseModel):
    """A (carousel, bucket) visit: every active line in that bucket is picked at once."""

    machine_id: str
    position: int
    lines: list[StopLine]
    presented_at: str | None = None  # when the carousel arrived there (ISO 8601 UTC)


class WorkstationView(BaseModel):
    id: str
    name: str
    machines: list[str]
    max_active_jobs: int
    #: The stop the operator should pick from now (the first ready carousel), if any.
    current: StopView | None = None
    #: Every presented stop (in a pod, at most one per carousel), in the order to pick them.
    presented: list[StopView] = []
    active_jobs: list[str] = []
    queue: list[str] = []  # queued job ids, in the order they will start
    #: Remaining planned buckets per carousel, in visiting order.
    route: dict[str, list[int]] = {}
    paused_reason: str | None = None  # why the workstation's jobs are paused, if they are


# -- replies and events ----------------------------------------------------------------------


class JobAccepted(Outgoing):
    type: Literal["job_accepted"] = "job_accepted"
    job: JobView
    created: bool  # False: an idempotent repeat of an existing job
    request_id: str | None = None
    timestamp: str


class Jobs(Outgoing):
    type: Literal["jobs"] = "jobs"
    jobs: list[JobView]
    request_id: str | None = None
    timestamp: str


class PickConfirmed(Outgoing):
    type: Literal["pick_confirmed"] = "pick_confirmed"
    job: JobView
    line_id: str
    request_id: str | None = None
    timestamp: str


class JobUpdate(Outgoing):
    """Reply to ``pause_job``, ``resume_job`` and ``cancel_job``: the job as it is now."""

    type: Literal["job_update"] = "job_update"
    job: JobView
    request_id: str | None = None
    timestamp: str


class JobEventMessage(Outgoing):
    """Pushed to ``job_events`` subscribers (filtered by ``workstation_ids``)."""

    type: Literal["job_event"] = "job_event"
    event: JobEventKind
    workstation_id: str
    job: JobView
    stop: StopView | None = None  # for stop_presented and line_confirmed
    timestamp: str
