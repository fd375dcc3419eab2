"""Open endpoints for operations (no token needed): liveness, readiness, metrics."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from carousel_gateway import __version__
from carousel_gateway.api.http.deps import ApiDep
from carousel_gateway.api.http.errors import documented_errors, error_response
from carousel_gateway.api.http.models import (
    ErrorResponse,
    HaHealth,
    HaInstance,
    HaTakeover,
    HealthData,
    HealthResponse,
    JournalHealth,
    MqttHealth,
    ReadyData,
    ReadyResponse,
)
from carousel_gateway.api.http.state import TakeoverState
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.wire import utc_timestamp

__all__ = [
    "NO_TOKEN",
    "health",
    "metrics",
    "ready",
    "router",
]

router = APIRouter()


#: For the open endpoints: no token needed (the API's own security schemes do not apply).
NO_TOKEN: dict[str, Any] = {"security": []}


@router.get(
    "/v1/health",
    response_model=HealthResponse,
    responses=documented_errors(),
    summary="Liveness (always 200 while the process serves) and every PLC link's state",
    tags=["Operations"],
    openapi_extra=NO_TOKEN,
)
async def health(api: ApiDep) -> HealthResponse:
    """For liveness probes and monitoring: 200 while the process serves, with `healthy`,
    `degraded` or `critical` by how many PLC links are up, and the journal's state."""
    states = {m.id: m.snapshot.connection for m in api.fleet}
    connected = sum(state is ConnectionState.CONNECTED for state in states.values())
    status: Literal["healthy", "degraded", "critical"] = (
        "healthy" if connected == len(states) else "critical" if connected == 0 else "degraded"
    )
    if api.ha is not None and api.ha.role != "active":
        # A standby keeps its PLC links closed on purpose: it is healthy while another
        # instance holds the cell's lease, critical while none does (nobody drives).
        other = api.ha.active_instance
        status = "healthy" if other is not None and other != api.ha.instance else "critical"
    journal = api.journal
    journal_health = JournalHealth(
        state="disabled" if journal is None else "ok" if journal.healthy else "degraded",
        dropped=0 if journal is None else journal.dropped,
        pending=0 if journal is None else journal.pending,
        last_error=None if journal is None else journal.last_error,
    )
    mqtt = api.mqtt
    mqtt_health = (
        None
        if mqtt is None
        else MqttHealth(
            state=mqtt.state.value,
            since=utc_timestamp(mqtt.since),
            broker=mqtt.broker,
            format="json" if mqtt.format == "json" else "sparkplug",
            bd_seq=mqtt.bd_seq,
            last_error=mqtt.last_error,
        )
    )
    ha = api.ha
    ha_health = (
        None
        if ha is None
        else HaHealth(
            role=ha.role,  # type: ignore[arg-type]  # a Role (StrEnum), validated
            cell=ha.cell,
            instance=ha.instance,
            epoch=ha.epoch,
            lease_deadline_s=ha.deadline_in(),
            active_instance=ha.active_instance,
            active_url=ha.active_url,
            takeovers=ha.takeovers,
            fenced_writes=ha.fenced_writes,
            takeover=_takeover(ha.takeover),
            instances=[
                HaInstance(instance=i.instance, http_url=i.http_url, ws_url=i.ws_url)
                for i in ha.instances
            ],
        )
    )
    return HealthResponse(
        data=HealthData(
            status=status,
            version=__version__,
            machines=states,
            journal=journal_health,
            mqtt=mqtt_health,
            ha=ha_health,
        )
    )


def _takeover(takeover: TakeoverState | None) -> HaTakeover | None:
    if takeover is None:
        return None
    return HaTakeover(
        instance=takeover.instance,
        epoch=takeover.epoch,
        at=utc_timestamp(takeover.at),
        ready_at=None if takeover.ready_at is None else utc_timestamp(takeover.ready_at),
        previous_instance=takeover.previous_instance,
        seconds=takeover.seconds,
    )


@router.get(
    "/v1/ready",
    response_model=ReadyResponse,
    responses={
        **documented_errors(),
        503: {"model": ErrorResponse, "description": "Starting or shutting down"},
    },
    summary="Readiness: 200 only while the WebSocket and HTTP servers are up",
    tags=["Operations"],
    openapi_extra=NO_TOKEN,
)
async def ready(api: ApiDep) -> ReadyResponse | JSONResponse:
    """For load balancers: a PLC link down does not make the gateway unready, since it can
    still serve the last known states."""
    if not api.ready:
        return error_response(GatewayError(ErrorCode.CONNECTION_ERROR, "the gateway is not ready"))
    return ReadyResponse(data=ReadyData(ready=True))


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        **documented_errors(),
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
    },
    summary="Prometheus metrics (text exposition format)",
    tags=["Operations"],
    openapi_extra=NO_TOKEN,
)
async def metrics(api: ApiDep) -> Response:
    """For Prometheus: machines, PLC requests, commands, moves, sessions and refusals (the
    list is in docs/rest-api.md)."""
    return Response(content=api.metrics.render(), media_type=CONTENT_TYPE_LATEST)
