"""What endpoints take as parameters: the API's state, the caller's identity, the machine
named in the path, and the token schemes every protected router declares."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.security import APIKeyQuery, HTTPBearer

from carousel_gateway.api.auth import Identity
from carousel_gateway.api.http.models import WAIT_TEXT, WaitMode
from carousel_gateway.api.http.state import RestApi
from carousel_gateway.fleet.machine import Machine

__all__ = [
    "ApiDep",
    "IdentityDep",
    "MachineDep",
    "MachineId",
    "WaitQuery",
    "protected_router",
]


async def _api(request: Request) -> RestApi:
    api = request.app.state.api
    assert isinstance(api, RestApi)
    return api


async def _identity(request: Request) -> Identity:
    identity = getattr(request.state, "identity", None)
    if isinstance(identity, Identity):
        return identity
    client = request.client
    return Identity(client=client.host if client else "unknown", role="viewer")


ApiDep = Annotated[RestApi, Depends(_api)]

IdentityDep = Annotated[Identity, Depends(_identity)]

MachineId = Annotated[str, Path(description="A machine id, as listed by GET /v1/machines")]

WaitQuery = Annotated[WaitMode | None, Query(description=WAIT_TEXT)]


async def _machine(api: ApiDep, machine_id: MachineId) -> Machine:
    return api.fleet.get(machine_id)


MachineDep = Annotated[Machine, Depends(_machine)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token, when the gateway has tokens configured "
    "(viewer: GET only; operator: GET and POST)",
)

_query_token = APIKeyQuery(
    name="token", auto_error=False, description="The same token as a query parameter"
)


def protected_router() -> APIRouter:
    """A router whose endpoints take the API token (bearer header or ``?token=``); the
    gatekeeper has already checked it, these declare it in the OpenAPI document."""
    return APIRouter(dependencies=[Security(_bearer), Security(_query_token)])
