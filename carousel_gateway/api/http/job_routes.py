"""Endpoints of pick jobs: submit, list, show, confirm a line, pause, resume, cancel.

Every one calls the gateway's :class:`~carousel_gateway.picking.service.JobService` (the
same one the WebSocket API uses), so a job reads and behaves the same over both; writes
need the operator role (the gatekeeper refuses viewers' POSTs) and answer once journalled.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Path, Query, Response, status

from carousel_gateway.api.http.deps import ApiDep, IdentityDep, protected_router
from carousel_gateway.api.http.errors import JOB_READ_ERRORS, JOB_WRITE_ERRORS, documented_errors
from carousel_gateway.api.http.models import (
    JobControlRequest,
    JobResponse,
    JobsResponse,
    PickConfirmRequest,
)
from carousel_gateway.wire import JOBS_PAGE, MAX_JOBS_PAGE, JobState, JobSubmission

__all__ = [
    "ControlBody",
    "JobId",
    "cancel_job",
    "confirm_line",
    "get_job",
    "list_jobs",
    "pause_job",
    "resume_job",
    "router",
    "submit_job",
]

router = protected_router()

JobId = Annotated[str, Path(max_length=128, description="The job's id, as its client chose it")]
#: Pause and cancel take an optional body (``{"reason": ...}``); without one, no reason.
_NO_REASON = JobControlRequest()
ControlBody = Annotated[JobControlRequest, Body()]

LineId = Annotated[str, Path(max_length=128, description="A line's id within the job")]


@router.post(
    "/v1/jobs",
    response_model=JobResponse,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": JobResponse,
            "description": "The same job_id with the same content: "
            "the existing job (an idempotent repeat)",
        },
        **documented_errors(*JOB_WRITE_ERRORS),
    },
    summary="Submit a pick job to a workstation (201; 200 for an idempotent repeat)",
    tags=["Pick jobs"],
)
async def submit_job(
    api: ApiDep, identity: IdentityDep, body: JobSubmission, response: Response
) -> JobResponse:
    """Queue a job: its lines are visited in the shortest route the workstation can plan,
    one stop (carousel, bucket) at a time, each confirmed by the operator. The same
    `job_id` with the same content again returns the existing job (200); with different
    content it is `JOB_CONFLICT` (409). Bad lines are `INVALID_JOB` (422), naming each."""
    job, created = await api.jobs.submit(body, identity.client)
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobResponse(data=job)


@router.get(
    "/v1/jobs",
    response_model=JobsResponse,
    responses=documented_errors(*JOB_READ_ERRORS),
    summary="Pick jobs, newest first (optionally of one workstation, in one state)",
    tags=["Pick jobs"],
)
async def list_jobs(
    api: ApiDep,
    workstation_id: Annotated[
        str | None, Query(max_length=128, description="Only this workstation's jobs")
    ] = None,
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_JOBS_PAGE, description="The newest this many jobs")
    ] = JOBS_PAGE,
) -> JobsResponse:
    """Jobs with their lines, planned route and stats, newest first."""
    jobs = api.jobs
    if workstation_id is not None:
        jobs.workstation(workstation_id)  # WORKSTATION_NOT_FOUND for an unknown one
    return JobsResponse(data=jobs.jobs(workstation_id, state)[:limit])


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobResponse,
    responses=documented_errors(*JOB_READ_ERRORS),
    summary="One pick job: its lines with their states, the planned route, stats",
    tags=["Pick jobs"],
)
async def get_job(api: ApiDep, job_id: JobId) -> JobResponse:
    """The job as the workstation sees it now: each line's state and, once confirmed, who
    confirmed it, when and how many; the stops still to visit; moves and operator wait."""
    return JobResponse(data=api.jobs.job(job_id))


@router.post(
    "/v1/jobs/{job_id}/lines/{line_id}/confirm",
    response_model=JobResponse,
    responses=documented_errors(*JOB_WRITE_ERRORS),
    summary="Confirm a presented line (a short pick: less than asked, with a reason)",
    tags=["Pick jobs"],
)
async def confirm_line(
    api: ApiDep, identity: IdentityDep, job_id: JobId, line_id: LineId, body: PickConfirmRequest
) -> JobResponse:
    """What the operator took from the presented bucket. Once every line of a stop is
    confirmed its carousel moves on to the next stop of the route. Answered once committed;
    a retry with the same `confirmation_id` gets the stored result (on either gateway of a
    cell), the same id with other content is `JOB_CONFLICT` (409)."""
    job = await api.jobs.confirm(
        job_id,
        line_id,
        body.quantity_picked,
        body.reason,
        identity.client,
        confirmation_id=body.confirmation_id,
    )
    return JobResponse(data=job)


@router.post(
    "/v1/jobs/{job_id}/pause",
    response_model=JobResponse,
    responses=documented_errors(*JOB_WRITE_ERRORS),
    summary="Pause a job: nothing moves for it; its carousels take manual moves again",
    tags=["Pick jobs"],
)
async def pause_job(
    api: ApiDep, identity: IdentityDep, job_id: JobId, body: ControlBody = _NO_REASON
) -> JobResponse:
    """Nothing moves for the job until it is resumed; while no job of the workstation is
    active and unpaused, its carousels take manual moves again. Pausing a paused job
    returns it unchanged."""
    return JobResponse(data=await api.jobs.pause(job_id, identity.client, body.reason))


@router.post(
    "/v1/jobs/{job_id}/resume",
    response_model=JobResponse,
    responses=documented_errors(*JOB_WRITE_ERRORS),
    summary="Resume a paused job: re-planned from a fresh reading of each carousel",
    tags=["Pick jobs"],
)
async def resume_job(api: ApiDep, identity: IdentityDep, job_id: JobId) -> JobResponse:
    """The route is planned again from a fresh reading of each carousel (someone may have
    moved them by hand while the job was paused)."""
    return JobResponse(data=await api.jobs.resume(job_id, identity.client))


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=JobResponse,
    responses=documented_errors(*JOB_WRITE_ERRORS),
    summary="Cancel a job: its open lines become cancelled; nothing moves for it",
    tags=["Pick jobs"],
)
async def cancel_job(
    api: ApiDep, identity: IdentityDep, job_id: JobId, body: ControlBody = _NO_REASON
) -> JobResponse:
    """Lines not yet confirmed become `cancelled`; a carousel at one of its stops moves on
    to the workstation's other jobs."""
    return JobResponse(data=await api.jobs.cancel(job_id, identity.client, body.reason))
