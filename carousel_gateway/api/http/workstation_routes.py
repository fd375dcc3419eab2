"""Endpoints of workstations: what each picking window presents now, its queue and route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from carousel_gateway.api.http.deps import ApiDep, protected_router
from carousel_gateway.api.http.errors import JOB_READ_ERRORS, documented_errors
from carousel_gateway.api.http.models import WorkstationResponse, WorkstationsResponse

__all__ = [
    "WorkstationId",
    "get_workstation",
    "list_workstations",
    "router",
]

router = protected_router()

WorkstationId = Annotated[
    str, Path(max_length=128, description="A workstation id, as in [[workstations]]")
]


@router.get(
    "/v1/workstations",
    response_model=WorkstationsResponse,
    responses=documented_errors(*JOB_READ_ERRORS),
    summary="Every workstation: presented stops, active jobs, queue and route",
    tags=["Pick jobs"],
)
async def list_workstations(api: ApiDep) -> WorkstationsResponse:
    """Each configured workstation as in `GET /v1/workstations/{workstation_id}`."""
    return WorkstationsResponse(data=api.jobs.workstations())


@router.get(
    "/v1/workstations/{workstation_id}",
    response_model=WorkstationResponse,
    responses=documented_errors(*JOB_READ_ERRORS),
    summary="One workstation: the stop to pick from now, presented stops, queue and route",
    tags=["Pick jobs"],
)
async def get_workstation(api: ApiDep, workstation_id: WorkstationId) -> WorkstationResponse:
    """`current` is the stop the operator should pick from now (in a pod, the first
    carousel that has arrived); `paused_reason` says why its jobs are paused."""
    return WorkstationResponse(data=api.jobs.workstation(workstation_id))
